"""The form and sign-in in real headless Chromium, against the app on a loopback port.

Set HELPDESK_SCREENSHOTS=docs/screenshots to refresh the README's pictures of the form
and its confirmation; otherwise they go to the test's temporary folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.store.models import Ticket
from tests.fixtures_web import COORDINATOR, PASSWORD, add_account

SCREENSHOTS = os.environ.get("HELPDESK_SCREENSHOTS")


@pytest.fixture
def site(web_app, live_server):
    return live_server(web_app())


@pytest.fixture
def console_errors(page):
    """Errors the page logs (a Content-Security-Policy violation shows up here)."""
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def screenshot(page, tmp_path: Path, name: str) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_submit_the_form_and_see_the_ticket_number(site, page, store, tmp_path, console_errors):
    page.goto(f"{site.url}/?email=jan.kowalski%40gmail.com&subject=Drukarka%20nie%20drukuje")
    assert page.input_value("#email") == "jan.kowalski@gmail.com"  # prefilled from the link
    page.fill("#name", "Jan Kowalski")
    page.fill("#phone", "+48 600 100 200")
    page.select_option("#client", "Sieć Bursztyn")
    page.fill("#location", "Sklep 12, Gdańsk, ul. Długa 5")
    page.select_option("#category", "fiscal_printer")
    page.fill("#subject", "Drukarka fiskalna nie drukuje paragonów")
    page.fill("#description", "Od rana drukarka pokazuje błąd E07 i nie drukuje paragonów.\n"
                              "Restart kasy nie pomógł.")
    page.set_input_files("#attachments", files=[
        {"name": "blad-e07.txt", "mimeType": "text/plain", "buffer": "Błąd E07\n".encode()}])
    page.locator("#description").blur()
    screenshot(page, tmp_path, "form.png")
    page.click("button[type=submit]:has-text('Wyślij zgłoszenie')")
    page.wait_for_selector("#ticket-number")
    assert page.inner_text("h1") == "Zgłoszenie JAN-1 przyjęte"
    assert page.inner_text("#ticket-number") == "JAN-1"
    screenshot(page, tmp_path, "form-submitted.png")
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket))
        assert (ticket.number, ticket.channel, ticket.category) == ("JAN-1", "web", "fiscal_printer")
    assert console_errors == []


def test_browser_shows_a_server_side_error_next_to_its_field(site, page):
    page.goto(f"{site.url}/")
    for selector, value in (("#name", "Jan"), ("#email", "jan@example.com"), ("#location", "Sklep 1"),
                            ("#subject", "Kasa"), ("#description", "Nie działa")):
        page.fill(selector, value)
    page.select_option("#client", "other")
    page.select_option("#category", "other")
    page.fill("#phone", "zadzwoń wieczorem")  # passes the browser, not the server
    page.click("button[type=submit]")
    error = page.locator("#field-phone .error")
    error.wait_for()
    assert "Podaj numer telefonu" in error.inner_text()
    assert page.input_value("#name") == "Jan"  # what was typed is still there


def test_form_fits_a_phone_screen(site, chromium):
    context = chromium.new_context(viewport={"width": 360, "height": 740}, locale="pl-PL")
    try:
        page = context.new_page()
        page.goto(f"{site.url}/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360  # no sideways scrolling
        card = page.locator("form.card").bounding_box()
        for field in ("#name", "#email", "#client", "#category", "#description"):
            box = page.locator(field).bounding_box()
            assert box["x"] + box["width"] <= card["x"] + card["width"], field
            assert box["width"] > 250, field  # one column: each field takes the screen's width
    finally:
        context.close()


def test_sign_in_and_out(site, page, console_errors):
    add_account(site.app)
    page.goto(f"{site.url}/tickets")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("input[name=email]", COORDINATOR)
    page.fill("input[name=password]", "wrong password!")
    page.click("button[type=submit]:has-text('Zaloguj')")
    assert "Nieprawidłowy e-mail lub hasło." in page.inner_text("#login-error")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]:has-text('Zaloguj')")
    page.wait_for_url(f"{site.url}/tickets")
    assert page.locator("header button:has-text('Wyloguj')").is_visible()
    page.click("header button:has-text('Wyloguj')")
    page.wait_for_url(f"{site.url}/login")
    assert "Wylogowano." in page.inner_text("main")
    assert console_errors == []


def test_language_switch_in_the_browser(site, page):
    page.goto(f"{site.url}/?subject=Kasa")
    page.click("header a:has-text('English')")
    assert page.inner_text("h1") == "Report a problem"
    assert page.input_value("#subject") == "Kasa"  # the prefill survives the switch
