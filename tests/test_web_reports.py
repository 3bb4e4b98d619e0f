"""The dashboard's figures and SVG charts, and customer ratings from the resolved mail's links.

Flask's test client on both backends; the week of tests.test_reports for the figures; a
ticket that came in through the real pipeline and was resolved for the ratings.
"""
from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from html import unescape

import pytest
from sqlalchemy import select

from daemon.conversation import change_status
from daemon.ratings import sign
from daemon.reports import report
from daemon.store.models import OutboxMail, Ticket
from daemon.views import ticket_detail
from tests.conftest import NOW
from tests.fixtures_web import CSRF_RE, add_account, sign_in
from tests.mailfactory import deliver, make_mail
from tests.test_reports import make_week

LINK = re.compile(r"http://helpdesk\.test(/rate/[A-Za-z0-9_\-.]+)")


# -- dashboard ------------------------------------------------------------------------------------
def series(page: str, key: str) -> str:
    return re.search(rf'data-series="{key}" data-values="([^"]*)"', page).group(1)


def test_dashboard_figures_and_weekly_charts(app, store):
    make_week(store, app.extensions["helpdesk"].config)
    add_account(app)
    client = app.test_client()
    assert sign_in(client).status_code == 302
    page = unescape(client.get("/dashboard?from=2026-11-09&to=2026-11-22").text)
    assert page.count("<svg") == 4 and 'data-chart="backlog"' in page
    # week of 9 Nov: T7 opened and resolved in time at L1, T6 answered in time, still open;
    # week of 16 Nov: the figures of tests.test_reports.
    assert series(page, "first_response") == "1.0000,0.6000"
    assert series(page, "resolution") == "1.0000,0.6000"
    assert series(page, "l1_rate") == "1.0000,0.5000"
    assert series(page, "backlog") == "1,3"
    assert 'class="reference" data-value="0.6"' in page
    assert "Rozwiązane na L1 (cel 60%)" in page and "09.11" in page and "16.11" in page
    assert re.search(r'id="opened">8<', page) and re.search(r'id="l1-rate">60%<', page)
    assert "Sieć Bursztyn" in page and "anna.kowalska@jantar.pl" in page
    english = client.get("/dashboard?lang=en").text
    assert "SLA met per week" in english and "Resolved at L1 (target 60%)" in english
    assert client.get("/dashboard?from=2026-11-22&to=2026-11-01").status_code == 400
    assert client.get("/dashboard?from=yesterday").status_code == 400


def test_dashboard_needs_a_sign_in(app):
    response = app.test_client().get("/dashboard")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_dashboard_screenshot(app, store, live_server, page):
    """The page as a browser draws it, saved for a person to look at."""
    from pathlib import Path
    make_week(store, app.extensions["helpdesk"].config)
    add_account(app)
    server = live_server(app)
    page.goto(f"{server.url}/login")
    page.fill("input[name=email]", "koordynator@jantar.pl")
    page.fill("input[name=password]", "kasa-fiskalna-2026")
    page.click("form.login button[type=submit], main form button[type=submit]")
    page.goto(f"{server.url}/dashboard")
    assert page.locator("svg.chart").count() == 4   # three weekly charts, the missed calls
    if store.backend == "sqlite":
        target = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(target / "dashboard.png"), full_page=True)


# -- ratings --------------------------------------------------------------------------------------
@pytest.fixture
def resolved(app, store):
    """A ticket from the pipeline, resolved; returns (config, the resolved mail's links)."""
    config = app.extensions["helpdesk"].config
    deliver(store, config, make_mail(), now=NOW)
    with store.transaction() as session:
        ticket = session.scalars(select(Ticket)).unique().one()
        change_status(session, config, ticket, "resolved", actor="anna.kowalska@jantar.pl",
                      now=NOW + timedelta(hours=1))
        raw = session.scalars(select(OutboxMail.raw).where(OutboxMail.kind == "resolved")).one()
    return config, raw


def parts(raw: bytes) -> tuple[str, str]:
    mail = message_from_bytes(raw, policy=policy.default)
    return (mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content())


def ticket_of(store) -> Ticket:
    with store.transaction() as session:
        ticket = session.scalars(select(Ticket)).unique().one()
        ticket.events  # loaded before the session ends
        return ticket


def test_resolved_mail_carries_five_working_rating_links(app, store, resolved):
    config, raw = resolved
    text, html = parts(raw)
    links = LINK.findall(text)
    assert len(links) == 5 and "Jak oceniasz naszą pomoc?" in text
    assert LINK.findall(unescape(html)) == links
    client = app.test_client()  # nobody signed in
    page = client.get(links[3])
    assert page.status_code == 200 and "Dziękujemy za ocenę" in page.text and "4 na 5" in page.text
    assert ticket_of(store).rating == 4
    assert NOW <= ticket_of(store).rated_at < NOW + timedelta(minutes=5)  # the app's clock runs on
    assert client.get(links[3]).status_code == 200          # the same click again: no change
    assert client.get(links[1]).status_code == 200          # a later click changes it
    ticket = ticket_of(store)
    assert ticket.rating == 2
    assert [e.detail for e in ticket.events if e.action == "rated"] == [
        {"score": 4, "previous": None}, {"score": 2, "previous": 4}]


def test_rating_comment_is_saved_with_csrf(app, store, resolved):
    _, raw = resolved
    link = LINK.findall(parts(raw)[0])[4]
    client = app.test_client()
    token = CSRF_RE.search(client.get(link).text).group(1)
    assert client.post(link, data={"comment": "Szybko i sprawnie."}).status_code == 400  # no CSRF
    page = client.post(link, data={"comment": "Szybko i sprawnie.", "csrf_token": token})
    assert page.status_code == 200 and 'id="comment-saved"' in page.text
    ticket = ticket_of(store)
    assert (ticket.rating, ticket.rating_comment) == (5, "Szybko i sprawnie.")
    assert any(e.action == "rating_commented" for e in ticket.events)


def test_tampered_and_expired_links(app, store, resolved):
    _, raw = resolved
    link = LINK.findall(parts(raw)[0])[0]
    client = app.test_client()
    token = link.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get(f"/rate/{tampered}").status_code == 400
    assert client.get("/rate/not-a-token").status_code == 400
    forged = sign("another-secret-key-of-at-least-32-chars", ticket_of(store).id, 5,
                  NOW + timedelta(days=1))
    assert client.get(f"/rate/{forged}").status_code == 400
    expired = sign(app.secret_key, ticket_of(store).id, 5, NOW - timedelta(seconds=1))
    assert client.get(f"/rate/{expired}").status_code == 410
    assert ticket_of(store).rating is None


def test_rating_in_ticket_json_page_and_report(app, store, resolved):
    config, raw = resolved
    app.test_client().get(LINK.findall(parts(raw)[0])[2])
    with store.transaction() as session:
        ticket = session.scalars(select(Ticket)).unique().one()
        detail = ticket_detail(ticket, config.tz, NOW)
        figures = report(session, config, NOW.date(), NOW.date(), NOW)
    assert (detail["rating"], detail["rating_comment"]) == (3, None)
    assert detail["rated_at"].startswith("2026-11-25T11:0")
    assert figures["ratings"]["totals"] == {
        "count": 1, "average": 3.0, "distribution": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0}}
    assert figures["ratings"]["by_tier"][0]["tier"] == "L1"
    add_account(app)
    client = app.test_client()
    sign_in(client)
    page = client.get(f"/tickets/{ticket.number}").text
    assert 'id="rating"' in page and "3/5" in page
