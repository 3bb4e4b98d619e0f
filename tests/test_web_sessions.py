"""Web sessions end when they should (issue 20, point 4), and sign-in throttling per client IP
(point 7), through Flask's test client on both backends.

The session is a row of `web_sessions`; the cookie only names it. Sign-out ends that
session; a new password (`helpdesk user passwd`, `user add` again) and `helpdesk user
disable` end every session of that account and no other's; the idle timeout and the
lifetime end a session at the first request after them. The time is the app's clock,
moved by the test (`now` is handed in, never read inside). The real browser's version of
the sign-out case is tests/test_browser_sessions.py.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, select

from daemon.cli import main as cli_main
from daemon.config import ConfigError
from daemon.store.models import Technician, WebSession
from tests.conftest import NOW
from tests.fixtures_web import COORDINATOR, PASSWORD, TECHNICIAN, add_account, csrf_token, sign_in
from tests.test_web_auth import FakeTime
from webform.config import web_config
from webform.sessions import SessionPolicy, live_session, open_session, token_hash

COOKIE = "jantar_session"


class Hands:
    """The app's clock, set by the test: now() is wherever the test put it."""

    def __init__(self, start: datetime = NOW):
        self.moment = start

    def now(self) -> datetime:
        return self.moment

    def advance(self, **delta) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture
def clock() -> Hands:
    return Hands()


@pytest.fixture
def site(web_app, clock):
    """site(**web) -> an app on the test's clock with a coordinator's and a technician's account."""

    def build(**web):
        app = web_app(web=web) if web else web_app()
        app.extensions["helpdesk"].clock = clock
        add_account(app)
        add_account(app, TECHNICIAN, role="technician")
        return app

    return build


def signed_in(app, email: str = COORDINATOR):
    client = app.test_client()
    assert sign_in(client, email).status_code == 302
    assert client.get("/tickets").status_code == 200
    return client


def sees_tickets(client) -> bool:
    response = client.get("/tickets")
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/login?next=")
        return False
    assert response.status_code == 200
    return True


def sessions(store, email: str) -> list[WebSession]:
    with store.transaction() as db:
        return list(db.scalars(select(WebSession).join(Technician, Technician.id ==
                                                       WebSession.technician_id)
                               .where(Technician.email == email).order_by(WebSession.id)))


# -- the session lives in the store ------------------------------------------------------------
def test_the_cookie_carries_a_random_token_and_the_store_only_its_hash(site, store):
    app = site()
    client = signed_in(app)
    with app.test_request_context():
        token = app.session_interface.open_session(app, _request_with(client)).get("_user_id")
    assert token and len(token) >= 40
    [row] = sessions(store, COORDINATOR)
    assert row.token_hash == token_hash(token) and token not in row.token_hash
    assert (row.created_at, row.last_seen_at, row.ended_at) == (NOW, NOW, None)
    assert row.client_ip == "127.0.0.1"


def _request_with(client):
    """A request object carrying CLIENT's session cookie, to read the cookie's content."""
    from werkzeug.test import EnvironBuilder
    from flask import Request
    cookie = client.get_cookie(COOKIE).value
    return Request(EnvironBuilder(headers={"Cookie": f"{COOKIE}={cookie}"}).get_environ())


def test_a_cookie_saved_before_sign_out_gets_the_sign_in_page(site, store):
    app = site()
    client = signed_in(app)
    saved = client.get_cookie(COOKIE).value
    thief = app.test_client()
    thief.set_cookie(COOKIE, saved)
    assert sees_tickets(thief)  # the copy works while the session lives: the test can fail
    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302
    thief.set_cookie(COOKIE, saved)
    assert not sees_tickets(thief)
    [row] = sessions(store, COORDINATOR)
    assert (row.ended_reason, row.ended_at) == ("signed_out", NOW)


def test_signing_out_ends_only_that_session(site, store):
    app = site()
    office, home = signed_in(app), signed_in(app)
    office.post("/logout", data={"csrf_token": csrf_token(office, "/")})
    assert not sees_tickets(office) and sees_tickets(home)


# -- a new password and a disabled account end every session of the account ---------------------
def cli(config_file, *args: str) -> int:
    return cli_main(["--config", str(config_file()), "--now", NOW.isoformat(), "user", *args])


def test_user_passwd_ends_the_accounts_sessions_and_no_one_elses(site, store, config_file):
    app = site()
    office, home, colleague = signed_in(app), signed_in(app), signed_in(app, TECHNICIAN)
    assert cli(config_file, "passwd", COORDINATOR, "--password", "nowe-haslo-2026") == 0
    assert not sees_tickets(office) and not sees_tickets(home)
    assert sees_tickets(colleague)
    assert {s.ended_reason for s in sessions(store, COORDINATOR)} == {"password"}
    assert [s.ended_at for s in sessions(store, TECHNICIAN)] == [None]
    again = app.test_client()
    assert sign_in(again, password="nowe-haslo-2026").status_code == 302 and sees_tickets(again)


def test_user_add_with_a_new_password_for_an_existing_account_ends_its_sessions(
        site, store, config_file):
    app = site()
    client = signed_in(app, TECHNICIAN)
    assert cli(config_file, "add", TECHNICIAN, "--role", "technician",
               "--password", "inne-haslo-2026") == 0
    assert not sees_tickets(client)
    assert [s.ended_reason for s in sessions(store, TECHNICIAN)] == ["password"]


def test_user_disable_ends_the_accounts_sessions_and_no_one_elses(site, store, config_file):
    app = site()
    technician, coordinator = signed_in(app, TECHNICIAN), signed_in(app)
    assert cli(config_file, "disable", TECHNICIAN) == 0
    assert not sees_tickets(technician) and sees_tickets(coordinator)
    assert [s.ended_reason for s in sessions(store, TECHNICIAN)] == ["disabled"]
    assert sign_in(app.test_client(), TECHNICIAN).status_code == 200  # no new session either


def test_an_account_switched_off_in_the_store_is_signed_out_at_its_next_request(site, store):
    app = site()
    client = signed_in(app, TECHNICIAN)
    with store.transaction() as db:
        db.scalar(select(Technician).where(Technician.email == TECHNICIAN)).active = False
    assert not sees_tickets(client)
    assert [s.ended_reason for s in sessions(store, TECHNICIAN)] == ["disabled"]


# -- idle timeout and lifetime ---------------------------------------------------------------------
def test_a_session_unused_for_the_idle_timeout_ends(site, store, clock):
    app = site(session_idle_timeout="30m")
    client = signed_in(app)
    signed_in(app, TECHNICIAN)  # a colleague, idle as long, not looked at again
    for _ in range(4):  # used every 29 minutes, it lives on past the timeout
        clock.advance(minutes=29)
        assert sees_tickets(client)
    clock.advance(minutes=30)
    assert not sees_tickets(client)
    [row] = sessions(store, COORDINATOR)
    assert row.ended_reason == "idle" and row.last_seen_at == NOW + timedelta(minutes=4 * 29)
    assert [s.ended_at for s in sessions(store, TECHNICIAN)] == [None]  # not yet looked at


def test_a_session_ends_at_its_lifetime_however_busy(site, store, clock):
    app = site(session_idle_timeout="1h", session_lifetime="3h")
    client = signed_in(app)
    for _ in range(5):
        clock.advance(minutes=35)
        assert sees_tickets(client)
    clock.advance(minutes=6)  # 3 h 1 min after sign-in
    assert not sees_tickets(client)
    assert [s.ended_reason for s in sessions(store, COORDINATOR)] == ["expired"]
    assert sign_in(client).status_code == 302 and sees_tickets(client)  # a new one begins


def test_the_default_timeouts_are_eight_hours_idle_and_seven_days(site, clock):
    app = site()
    client = signed_in(app)
    for _ in range(23):  # a request every 7 hours, for 161 hours
        clock.advance(hours=7)
        assert sees_tickets(client)
    clock.advance(hours=7)  # 168 hours: seven days
    assert not sees_tickets(client)
    client = signed_in(app)
    clock.advance(hours=8)
    assert not sees_tickets(client)


def test_last_seen_is_written_at_most_once_a_minute(site, store, clock):
    app = site()
    client = signed_in(app)
    writes = count_session_writes(store)
    for _ in range(20):
        clock.advance(seconds=2)  # 40 s of clicking
        assert sees_tickets(client)
    assert writes == []
    clock.advance(seconds=25)
    assert sees_tickets(client) and sees_tickets(client)
    assert len(writes) == 1
    assert sessions(store, COORDINATOR)[0].last_seen_at == NOW + timedelta(seconds=65)


def count_session_writes(store) -> list[str]:
    writes: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE WEB_SESSIONS"):
            writes.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    return writes


def test_live_session_takes_now_as_a_parameter(store, make_config):
    """The rule without the web: the same session is live or not by the `now` handed in."""
    policy = SessionPolicy(idle_timeout=timedelta(hours=1), lifetime=timedelta(hours=5))
    with store.transaction() as db:
        technician = Technician(email="t@jantar.pl", name="T", tier="L1", role="technician",
                                active=True, password_hash="scrypt:x")
        db.add(technician)
        db.flush()
        token = open_session(db, technician, policy, client_ip="10.0.0.1", now=NOW)
    for minutes, alive in ((59, True), (118, True), (179, False)):
        with store.transaction() as db:
            found = live_session(db, token, policy, NOW + timedelta(minutes=minutes))
            assert (found is not None) == alive, minutes
    with store.transaction() as db:
        assert live_session(db, token, policy, NOW + timedelta(minutes=119)) is None  # ended


# -- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, problem", [
    ("session_idle_timeout", "forever", "web.session_idle_timeout: not a duration"),
    ("session_lifetime", "99999999999999999999d", "web.session_lifetime: too long a duration"),
    ("session_lifetime", "30s", "web.session_lifetime: must be from 1m to 366d"),
    ("session_idle_timeout", "400d", "web.session_idle_timeout: must be from 1m to 366d"),
    ("login_ip_attempts", -1, "web.login_ip_attempts: must be 0"),
    ("login_ip_window", "0s", "web.login_ip_window: must be from 1m to 366d"),
])
def test_bad_session_and_throttle_settings_are_named_by_section_and_key(
        make_config, key, value, problem):
    with pytest.raises(ConfigError) as raised:  # at load time, as `check-config` does
        web_config(make_config("sqlite://", web={key: value}))
    assert problem in str(raised.value)


def test_session_settings_are_read(make_config):
    web = web_config(make_config("sqlite://", web={
        "session_idle_timeout": "2h", "session_lifetime": "1d 12h", "login_ip_attempts": 0}))
    assert web.session_idle_timeout == timedelta(hours=2)
    assert web.session_lifetime == timedelta(days=1, hours=12)
    assert web.login_ip_attempts == 0
    assert web_config(make_config("sqlite://")).session_idle_timeout == timedelta(hours=8)


# -- sign-in throttling per client IP -----------------------------------------------------------------
def try_address(client, email: str, ip: str, password: str = "zgadywane-haslo-1"):
    token = csrf_token(client, "/login")
    return client.post("/login", environ_base={"REMOTE_ADDR": ip},
                       data={"email": email, "password": password, "csrf_token": token})


def test_fifty_addresses_tried_from_one_ip_are_throttled(site):
    app = site()
    time = FakeTime()
    desk = app.extensions["helpdesk"]
    desk.login_throttle.now = desk.login_ip_throttle.now = time
    client = app.test_client()
    answers = [try_address(client, f"osoba{n}@jantar.pl", "198.51.100.7").status_code
               for n in range(50)]
    assert answers[:19] == [200] * 19  # the default: 20 failures per IP before a pause
    assert set(answers[19:]) == {429}
    refused = try_address(client, COORDINATOR, "198.51.100.7", PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert try_address(client, COORDINATOR, "203.0.113.9", PASSWORD).status_code == 302


def test_the_ip_count_pauses_doubles_and_is_forgotten_after_its_window(site):
    app = site(login_ip_attempts=3, login_pause="30s", login_ip_window="1h")
    time = FakeTime()
    desk = app.extensions["helpdesk"]
    desk.login_throttle.now = desk.login_ip_throttle.now = time
    client = app.test_client()
    ip = "198.51.100.8"
    assert [try_address(client, f"a{n}@jantar.pl", ip).status_code for n in range(3)] == \
        [200, 200, 429]
    time.advance(31)
    refused = try_address(client, "a4@jantar.pl", ip)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 60  # doubled
    time.advance(3600 + 61)
    assert try_address(client, "a5@jantar.pl", ip).status_code == 200  # counted afresh


def test_a_right_password_does_not_reset_the_ip_count(site):
    app = site(login_ip_attempts=3)
    client = app.test_client()
    ip = "198.51.100.9"
    for n in range(2):
        assert try_address(client, f"b{n}@jantar.pl", ip).status_code == 200
    assert try_address(client, TECHNICIAN, ip, PASSWORD).status_code == 302
    assert try_address(app.test_client(), "b3@jantar.pl", ip).status_code == 429


def test_the_ip_count_can_be_switched_off(site):
    app = site(login_ip_attempts=0)
    client = app.test_client()
    answers = {try_address(client, f"c{n}@jantar.pl", "198.51.100.10").status_code
               for n in range(30)}
    assert answers == {200}
