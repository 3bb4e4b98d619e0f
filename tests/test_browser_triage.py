"""The coordinator's screens in real headless Chromium, against the app on a loopback port.

Sign in, filter, bulk-assign; then open a ticket whose HTML mail is full of script
payloads and prove none of them runs: every payload would call alert() (a dialog), set
a flag on its window (read inside the mail's frame, where a payload would run), or fetch
from a "beacon" server on loopback, and none of that happens — not even with the
sanitiser switched off, because the mail is shown in a sandboxed frame. A control frame
without sandbox or policy, given the same payloads, shows the flag is set where it is
read. The same beacon proves remote images wait for "show images".

Set HELPDESK_SCREENSHOTS=docs/screenshots to refresh the README's pictures of the list.
"""
from __future__ import annotations

import os
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.store.models import OutboxMail, Technician, Ticket
from tests.conftest import NOW
from tests.mailfactory import deliver, make_mail
from tests.test_web_triage import (COORDINATOR, PASSWORD, PIOTR, add_tickets, give_passwords,
                                   password_hash)  # noqa: F401 - a fixture

SCREENSHOTS = os.environ.get("HELPDESK_SCREENSHOTS")


class Beacon:
    """A loopback HTTP server that remembers every path asked of it."""

    def __init__(self):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def beacon():
    server = Beacon()
    yield server
    server.stop()


@pytest.fixture
def site(web_app, live_server, store, password_hash):
    app = web_app()
    give_passwords(store, password_hash)
    return live_server(app)


@pytest.fixture
def dialogs(page):
    """alert(), confirm() and prompt() from the page or any of its frames."""
    seen: list[str] = []

    def record(dialog):
        seen.append(dialog.message)
        dialog.dismiss()
    page.on("dialog", record)
    return seen


def sign_in(page, site, path="/tickets"):
    page.goto(f"{site.url}{path}")
    assert "/login" in page.url   # every staff page asks who you are first
    page.fill("input[name=email]", COORDINATOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{site.url}{path}")


def screenshot(page, tmp_path: Path, name: str) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def seed_a_morning(site, store) -> None:
    """A realistic list: mail from two networks, a held reply, SLA clocks in every state."""
    config = site.app.extensions["helpdesk"].config
    mails = [
        ("Jan Nowak <jan.nowak@bursztyn.pl>", "Drukarka fiskalna nie drukuje paragonów"),
        ("Ola Wiśniewska <ola@kaszub.com.pl>", "Kasa nr 2 zawiesza się przy płatności kartą"),
        ("kierownik@bursztyn.pl", "Brak połączenia z serwerem w sklepie 14"),
        ("ola@kaszub.com.pl", "Terminal płatniczy: błąd 0x3F"),
        ("Marek Lis <marek@gmail.com>", "Prośba o wycenę nowej kasy"),
    ]
    for sender, subject in mails:
        deliver(store, config, make_mail(sender=sender, subject=subject), now=NOW)
    deliver(store, config, make_mail(sender="obcy@example.org", subject="Re: [#JAN-1] Drukarka",
                                     body="U nas to samo.\n"), now=NOW)
    due = {"JAN-1": NOW - timedelta(minutes=40), "JAN-2": NOW + timedelta(hours=2),
           "JAN-3": NOW + timedelta(hours=7), "JAN-4": NOW + timedelta(days=1, hours=3)}
    with store.transaction() as session:
        for ticket in session.scalars(select(Ticket)):
            ticket.first_response_due = due.get(ticket.number)
            ticket.created_at = NOW - timedelta(hours=int(ticket.number.split("-")[1]) * 3)
        session.scalar(select(Ticket).where(Ticket.number == "JAN-2")).priority = "urgent"
        session.scalar(select(Ticket).where(Ticket.number == "JAN-3")).tier = "L2"
    add_tickets(store, 3, status="waiting", subject=lambda i: f"Aktualizacja oprogramowania {i + 1}",
                requester_email=lambda i: f"sklep{i + 20}@bursztyn.pl")


def test_sign_in_filter_and_bulk_assign(site, page, store, tmp_path, dialogs):
    seed_a_morning(site, store)
    page.set_viewport_size({"width": 1280, "height": 900})   # a laptop
    sign_in(page, site)
    assert page.locator("tr[id^=row-]").count() == 8
    assert page.locator("#row-JAN-1 .overdue").inner_text().startswith("−")
    assert page.locator("#row-JAN-1 .held-actions button").count() == 2
    screenshot(page, tmp_path, "triage.png")
    page.set_viewport_size({"width": 390, "height": 844})   # a phone
    screenshot(page, tmp_path, "triage-phone.png")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.select_option("form.filters select[name=client]", "Market Kaszub")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**client=Market+Kaszub**")
    rows = page.locator("tr[id^=row-]")
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.id)")) == ["row-JAN-2", "row-JAN-4"]

    page.check("#row-JAN-2 input[name=ticket]")
    page.check("#row-JAN-4 input[name=ticket]")
    page.select_option("form#bulk select[name=assignee]", PIOTR)
    page.click("form#bulk button[name=apply]")
    page.wait_for_selector("text=Zmieniono zgłoszenia: 2")
    assert "client=Market+Kaszub" in page.url   # still the filtered list
    assert page.locator("#row-JAN-2").inner_text().count("Piotr Nowak") == 1
    with store.transaction() as session:
        assigned = {t.number: t.assignee.email for t in session.scalars(select(Ticket))
                    if t.assignee}
        notices = session.scalars(select(OutboxMail).where(OutboxMail.kind == "assigned")).all()
    assert assigned == {"JAN-2": PIOTR, "JAN-4": PIOTR}
    assert [n.recipients for n in notices] == [[PIOTR], [PIOTR]]
    assert dialogs == []


def hostile_html(beacon_url: str) -> str:
    """Every way we know of to make mail HTML run code; each one would leave a trace."""
    ping = f"fetch('{beacon_url}/ran/%s')"
    return f"""<p>Dzień dobry, <b>drukarka</b> nie działa.</p>
<script>window.__pwned = 'script'; document.title = 'pwned'; alert('script'); {ping % 'script'}</script>
<img src="x" onerror="window.__pwned = 'onerror'; alert('onerror'); {ping % 'onerror'}">
<img src=x onerror=alert('bare-onerror')>
<svg onload="alert('svg'); {ping % 'svg'}"><circle r="5"></circle></svg>
<a id="js-link" href="javascript:alert('link');{ping % 'link'}">kliknij tutaj</a>
<p style="width: expression(alert('css')); background: url('javascript:alert(1)')">stary IE</p>
<iframe src="javascript:alert('iframe')"></iframe>
<object data="javascript:alert('object')"></object>
<form action="{beacon_url}/ran/form"><button id="form-button">wyślij</button></form>
<img src="{beacon_url}/pixel.gif" alt="logo">
"""


def test_hostile_mail_html_runs_nothing(site, page, store, beacon, dialogs, tmp_path):
    config = site.app.extensions["helpdesk"].config
    deliver(store, config, make_mail(subject="Faktura", html=hostile_html(beacon.url)), now=NOW)
    sign_in(page, site, "/tickets/JAN-1")
    assert_nothing_ran(page, beacon, dialogs, sanitised=True)
    assert "Zablokowano obrazki z zewnętrznych serwerów: 1" in page.locator("main").inner_text()
    screenshot(page, tmp_path, "ticket.png")


def test_even_unsanitised_html_runs_nothing_in_its_sandbox(site, page, store, beacon, dialogs,
                                                            monkeypatch):
    """Were the sanitiser ever to miss something, the sandboxed frame still stops it."""
    from webform import mailview
    monkeypatch.setattr(mailview, "safe_html", lambda markup, attribute_filter=None: markup)
    config = site.app.extensions["helpdesk"].config
    deliver(store, config, make_mail(subject="Faktura"), now=NOW)
    with store.transaction() as session:
        message = session.scalar(select(Ticket).where(Ticket.number == "JAN-1")).messages[0]
        message.html = hostile_html(beacon.url)   # as if stored by a broken parser
    sign_in(page, site, "/tickets/JAN-1")
    frame = mail_frame(page)
    assert frame.locator("#js-link").get_attribute("href").startswith("javascript:")
    assert_nothing_ran(page, beacon, dialogs, sanitised=False)


MAIL_FRAME = "iframe[srcdoc]"   # found whatever its sandbox says; that is asserted apart


def mail_frame(page):
    page.wait_for_selector(MAIL_FRAME)
    frame = page.frame_locator(MAIL_FRAME).first
    frame.locator("body p").first.wait_for()
    return frame


def pwned(frame) -> object:
    """The flag a payload that ran would have set on its own window (None: not set)."""
    return frame.evaluate("() => window.__pwned ?? null")


def assert_nothing_ran(page, beacon, dialogs, *, sanitised: bool) -> None:
    frame = mail_frame(page)
    assert frame.locator("b").inner_text() == "drukarka"   # the mail itself is shown
    window = page.locator(MAIL_FRAME).first.element_handle().content_frame()
    window.wait_for_load_state("load")   # after its scripts, and its images' errors
    assert pwned(window) is None         # where the payloads would have run
    if not sanitised:   # the sanitiser leaves neither the link's href nor the form
        frame.locator("#js-link").click()
        frame.locator("#form-button").click()
    frame.locator("p").first.click()
    page.wait_for_timeout(800)   # time for anything scheduled to fire
    assert pwned(window) is None and pwned(page.main_frame) is None
    assert dialogs == []
    assert "pwned" not in page.title()
    assert [hit for hit in beacon.hits if hit.startswith("/ran/")] == []
    assert beacon.hits == []   # the remote picture waits too (the frame's own CSP says so)
    assert page.locator(MAIL_FRAME).first.get_attribute("sandbox") == ""


def test_the_probe_sees_a_payload_that_runs_in_a_frame(chromium, beacon):
    """The control: the same payloads in a frame with no sandbox and no policy run, and
    set the flag inside that frame, not on the page around it (where a probe would miss it)."""
    from html import escape
    context = chromium.new_context()
    page = context.new_page()
    seen: list[str] = []
    page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
    try:
        page.set_content(f'<iframe id="control" srcdoc="{escape(hostile_html(beacon.url))}">'
                         "</iframe>")
        window = page.locator("#control").element_handle().content_frame()
        window.wait_for_load_state("load")
        assert pwned(window) in ("script", "onerror")
        assert pwned(page.main_frame) is None
        assert "script" in seen
    finally:
        context.close()


def test_remote_images_load_only_after_show_images(site, page, store, beacon):
    config = site.app.extensions["helpdesk"].config
    deliver(store, config, make_mail(html=f'<p>Logo: <img src="{beacon.url}/logo.gif"></p>'),
            now=NOW)
    sign_in(page, site, "/tickets/JAN-1")
    mail_frame(page).locator("img").wait_for(state="attached")
    page.wait_for_timeout(300)
    assert beacon.hits == []
    page.click("text=Pokaż obrazki")
    page.wait_for_url("**images=1")
    page.wait_for_function("() => true")
    frame = mail_frame(page)
    frame.locator("img").wait_for()
    for _ in range(50):
        if beacon.hits:
            break
        page.wait_for_timeout(100)
    assert beacon.hits == ["/logo.gif"]


def test_ticket_page_on_a_phone(site, page, store, tmp_path):
    seed_a_morning(site, store)
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, site, "/tickets/JAN-1")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    too_wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => !e.closest('.table-wrap') && e.getBoundingClientRect().right > 391)
        .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
    assert too_wide == []   # nothing makes the page scroll sideways
    with store.transaction() as session:
        assert session.scalar(select(Technician).where(Technician.email == PIOTR)) is not None
    screenshot(page, tmp_path, "ticket-phone.png")
