"""Bad input on the web is a clear 400 (or the field's error), never a 5xx (issue 20, point 5).

The named cases the issue found, then one of each kind of bad value per page, on both
backends (PostgreSQL refuses NUL in text, SQLite and PostgreSQL refuse integers over 64
bits, Python's dates end at 9999). The walk over the whole URL map with generated values
is tests/test_web_input_walk.py.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from daemon.ratings import sign
from daemon.store.models import Ticket
from tests.fixtures_web import COORDINATOR, PASSWORD, TECHNICIAN, add_account, csrf_token, sign_in
from tests.conftest import NOW
from tests.mailfactory import deliver, make_mail

SAFE_HOME = "/tickets"


@pytest.fixture
def staff(web_app):
    """A coordinator's test client; exceptions become 500 answers, as in production."""
    app = web_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_account(app)
    add_account(app, TECHNICIAN, role="technician")
    client = app.test_client()
    assert sign_in(client).status_code == 302
    client.application = app
    return client


def assert_refused(response, *texts: str) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 400, (response.status_code, body[:500])
    assert "Traceback" not in body
    for text in texts:
        assert text in body, body[:2000]


# -- the cases issue 20 names -------------------------------------------------------------------
def test_a_duration_too_long_for_any_calendar_is_a_400_naming_it(staff):
    response = staff.get("/tickets?older_than=99999999999999999999d")
    assert_refused(response, "older_than")


def test_a_day_at_the_end_of_the_calendar_is_a_400(staff):
    assert_refused(staff.get("/calls?day=9999-12-31"), "day")


@pytest.mark.parametrize("evil", ["/tickets\r\nSet-Cookie: stolen=1", "/tickets\nX: y",
                                  "/tickets\x00", "/tickets\u2028X: y"])
def test_next_with_a_line_break_signs_in_and_goes_home(web_app, evil):
    app = web_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_account(app)
    client = app.test_client()
    response = sign_in(client, next=evil)
    assert response.status_code == 302 and response.headers["Location"] == SAFE_HOME
    # Signed in, the sign-in page sends the visitor on: the same `next` in its address.
    again = client.get("/login", query_string={"next": evil})
    assert again.status_code == 302 and again.headers["Location"] == SAFE_HOME


# -- one of each kind, page by page ---------------------------------------------------------------
@pytest.mark.parametrize("query", [
    "older_than=-1d", "older_than=1000000d", "limit=99999999999999999999999", "limit=-5",
    "limit=abc", "q=%00", "q=a%00b", "requester=a%0d%0ab", "client=%00", "assignee=%00",
    pytest.param("q=" + "x" * 100_000, id="q=100kB"), "after=99999999999999999999999999999",
    "sort=sideways",
])
def test_triage_list_refuses_bad_parameters(staff, query):
    assert_refused(staff.get(f"/tickets?{query}"))


@pytest.mark.parametrize("query", ["from=0001-01-01&to=0001-01-02", "from=9999-12-31",
                                   "to=9999-12-31", "from=2026-13-01", "from=%00"])
def test_dashboard_refuses_days_outside_the_calendar(staff, query):
    assert_refused(staff.get(f"/dashboard?{query}"))


@pytest.mark.parametrize("query", ["day=0001-01-01", "day=9999-12-31", "day=%00", "day=xyz"])
def test_calls_refuses_days_outside_the_calendar(staff, query):
    assert_refused(staff.get(f"/calls?{query}"))


def test_quarantine_refuses_a_cursor_past_64_bits(staff):
    assert_refused(staff.get("/quarantine?after=99999999999999999999999999"), "after")


@pytest.mark.parametrize("path", ["/calls/99999999999999999999999/ticket",
                                  "/tickets/JAN-1/attachments/999999999999999999999999",
                                  "/quarantine/99999999999999999999/raw",
                                  "/tickets/%00", "/tickets/JAN-1%00", "/tickets/" + "J" * 5000,
                                  "/submitted/%00", "/rate/%0d%0a"],
                         ids=lambda path: path[:40])
def test_path_values_no_store_can_hold_are_not_found(staff, path):
    response = staff.get(path)
    assert response.status_code in (400, 404), (path, response.status_code)


def test_an_error_page_says_which_parameter_in_english_too(staff):
    response = staff.get("/tickets?limit=abc&lang=en")
    assert_refused(response, "limit", "a whole number")
    assert_refused(staff.get("/tickets?limit=abc&lang=pl"), "limit", "liczba całkowita")


# -- form fields ------------------------------------------------------------------------------------
def test_sign_in_with_a_nul_in_the_address_is_a_failed_sign_in(web_app):
    app = web_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_account(app)
    client = app.test_client()
    response = sign_in(client, email="koordynator@jantar.pl\x00")
    assert response.status_code == 200 and "Nieprawidłowy e-mail lub hasło." in response.text
    assert sign_in(client, password=PASSWORD).status_code == 302


def ticket_number(client, store, config) -> str:
    deliver(store, config, make_mail(subject="Kasa nie drukuje", body="Pomocy"), now=NOW)
    with store.transaction() as session:
        return session.scalar(select(Ticket.number))


@pytest.mark.parametrize("data", [
    {"ticket": ["JAN-1\x00"], "priority": "high"},
    {"ticket": ["JAN-1"], "assignee": "anna\x00@jantar.pl"},
    {"ticket": [f"JAN-{n}" for n in range(5000)], "priority": "high"},
    {"ticket": ["JAN-1"], "priority": "x" * 100_000},
], ids=["nul", "nul-assignee", "5000-tickets", "100kB"])
def test_bulk_refuses_values_no_form_of_ours_sends(staff, data):
    token = csrf_token(staff, "/tickets")
    assert_refused(staff.post("/tickets/bulk", data={**data, "csrf_token": token}))


def test_a_note_or_reply_with_nul_bytes_is_kept_without_them(staff, store):
    desk = staff.application.extensions["helpdesk"]
    number = ticket_number(staff, store, desk.config)
    token = csrf_token(staff, f"/tickets/{number}")
    response = staff.post(f"/tickets/{number}/note",
                          data={"text": "kasa\x00 nr 3\r\nrestart", "csrf_token": token})
    assert response.status_code == 302
    response = staff.post(f"/tickets/{number}/reply",
                          data={"body": "Dzień dobry\x00, proszę o restart", "csrf_token": token})
    assert response.status_code == 302
    page = staff.get(f"/tickets/{number}").get_data(as_text=True)
    assert "kasa nr 3" in page and "Dzień dobry, proszę o restart" in page


def test_a_note_over_the_limit_is_refused_not_cut(staff, store):
    desk = staff.application.extensions["helpdesk"]
    number = ticket_number(staff, store, desk.config)
    token = csrf_token(staff, f"/tickets/{number}")
    response = staff.post(f"/tickets/{number}/note",
                          data={"text": "x" * 100_001, "csrf_token": token})
    assert_refused(response, "text")


def test_a_forwarded_address_too_long_for_the_store_still_signs_in(web_app):
    app = web_app(web={"proxies": 1})
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_account(app)
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login", headers={"X-Forwarded-For": "203.0.113." + "7" * 300},
                           data={"email": COORDINATOR, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302


def test_a_signed_in_coordinator_can_open_a_rating_link(staff, store):
    """The walk found it: the rating page's layout asked who is signed in inside the view's
    write transaction, and on SQLite that second transaction waited for the first (503)."""
    desk = staff.application.extensions["helpdesk"]
    number = ticket_number(staff, store, desk.config)
    with store.transaction() as session:
        ticket_id = session.scalar(select(Ticket.id).where(Ticket.number == number))
    token = sign(staff.application.secret_key, ticket_id, 5, NOW + timedelta(days=1))
    response = staff.get(f"/rate/{token}")
    assert response.status_code == 200, response.status_code
