"""Sign-in and the web's foundations: accounts, throttling, who sees what, secret key, cookies,
languages, error pages, and `helpdesk user`."""
from __future__ import annotations

import io
import stat
from datetime import timedelta

import pytest
from flask import Blueprint
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from daemon.cli import main as cli_main
from daemon.directory import sync_directory
from daemon.store.models import Technician
from tests.conftest import NOW
from tests.fixtures_web import (COORDINATOR, PASSWORD, TECHNICIAN, add_account, csrf_token,
                                sign_in)
from webform.accounts import AccountError, add_user, authenticate, set_password
from webform.auth import coordinator_required
from webform.throttle import LoginThrottle, RateLimit


def technician(store, email):
    with store.transaction() as session:
        return session.scalar(select(Technician).where(Technician.email == email))


# -- signing in and out ----------------------------------------------------------------------
def test_login_page_has_email_and_password_inputs(client):
    page = client.get("/login").get_data(as_text=True)
    assert 'name="email"' in page and 'name="password"' in page and 'name="csrf_token"' in page
    assert 'type="password"' in page


def test_sign_in_with_the_right_password_goes_to_the_triage_list(app, client):
    add_account(app)
    response = sign_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/tickets"
    assert "Wyloguj" in client.get("/login", follow_redirects=True).get_data(as_text=True)


def test_wrong_password_and_unknown_address_get_the_same_answer(app, client):
    add_account(app)
    wrong = sign_in(client, password="not the password")
    unknown = sign_in(client, email="nobody@jantar.pl")
    for response in (wrong, unknown):
        assert response.status_code == 200
        assert "Nieprawidłowy e-mail lub hasło." in response.get_data(as_text=True)
    assert "_user_id" not in client.get_cookie("jantar_session").value  # not signed in


def test_inactive_account_cannot_sign_in(app, client, store):
    add_account(app, TECHNICIAN, role="technician")
    with store.transaction() as session:
        session.scalar(select(Technician).where(Technician.email == TECHNICIAN)).active = False
    assert sign_in(client, TECHNICIAN).status_code == 200  # the form again, not a redirect


def test_sign_in_redirects_back_to_the_page_asked_for_but_never_off_site(app, client):
    add_account(app)
    assert sign_in(client, next="/tickets/JAN-7").headers["Location"] == "/tickets/JAN-7"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"):
        assert sign_in(client, next=evil).headers["Location"] == "/tickets"
        client.post("/logout", data={"csrf_token": csrf_token(client, "/")})


def test_logout_is_a_post_with_csrf_and_ends_the_session(app, client):
    add_account(app)
    sign_in(client)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token
    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert client.get("/tickets").status_code == 302  # signed out: back to /login


def test_login_without_csrf_token_is_refused(app, client):
    add_account(app)
    response = client.post("/login", data={"email": COORDINATOR, "password": PASSWORD})
    assert response.status_code == 400
    assert "Formularz wygasł" in response.get_data(as_text=True)


def test_new_password_signs_out_earlier_sessions(app, client, store):
    add_account(app)
    sign_in(client)
    assert client.get("/login").status_code == 302  # signed in: /login moves on
    with store.transaction() as session:
        set_password(session, COORDINATOR, "a brand new password", now=NOW)
    assert client.get("/login").status_code == 200  # the old session no longer counts


def test_password_is_hashed_with_scrypt_and_never_stored_plain(app, store):
    add_account(app)
    stored = technician(store, COORDINATOR).password_hash
    assert stored.startswith("scrypt:") and PASSWORD not in stored


def test_no_password_or_secret_reaches_the_log(app, client, caplog):
    add_account(app)
    with caplog.at_level("DEBUG"):
        sign_in(client, password="wrong-password-123")
        sign_in(client)
    assert "sign-in failed" in caplog.text and "signed in" in caplog.text
    for secret in ("wrong-password-123", PASSWORD, app.secret_key):
        assert secret not in caplog.text


# -- throttling ----------------------------------------------------------------------------------
def test_repeated_failures_are_refused_for_a_while_with_retry_after(web_app):
    app = web_app(web={"login_attempts": 3, "login_pause": "30s"})
    add_account(app)
    client = app.test_client()
    clock = FakeTime()
    app.extensions["helpdesk"].login_throttle.now = clock
    answers = [sign_in(client, password=f"guess number {n}").status_code for n in range(3)]
    assert answers == [200, 200, 429]
    refused = sign_in(client)  # even the right password waits
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 30
    assert "Zbyt wiele nieudanych prób" in refused.get_data(as_text=True)
    clock.advance(31)
    assert sign_in(client, password="guess number 4").status_code == 429  # pause doubles: 60 s
    clock.advance(61)
    assert sign_in(client).status_code == 302


def test_throttle_is_per_address_and_client(web_app):
    app = web_app(web={"login_attempts": 2})
    add_account(app)
    add_account(app, TECHNICIAN, role="technician")
    client = app.test_client()
    for _ in range(2):
        sign_in(client, password="wrong guess here")
    assert sign_in(client).status_code == 429
    assert sign_in(client, TECHNICIAN).status_code == 302  # another address is not held up
    other_client = app.test_client()
    response = other_client.post("/login", environ_base={"REMOTE_ADDR": "10.1.2.3"}, data={
        "email": COORDINATOR, "password": PASSWORD,
        "csrf_token": csrf_token(other_client, "/login")})
    assert response.status_code == 302  # nor is the same address from elsewhere


def test_throttle_counts_correctly_across_threads():
    import threading
    throttle = LoginThrottle(50, timedelta(seconds=10), timedelta(minutes=1))
    threads = [threading.Thread(target=lambda: [throttle.failed("k") for _ in range(20)])
               for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle._failures["k"].count == 200
    assert throttle.retry_after("k") == 60  # capped at the maximum pause


def test_rate_limit_window_slides():
    clock = FakeTime()
    limit = RateLimit(2, timedelta(minutes=10), now=clock)
    limit.record("a")
    clock.advance(60)
    limit.record("a")
    assert limit.retry_after("a") == 540 and limit.retry_after("b") == 0
    clock.advance(541)
    assert limit.retry_after("a") == 0
    assert RateLimit(0, timedelta(minutes=1)).retry_after("a") == 0  # 0: no limit


class FakeTime:
    def __init__(self):
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


# -- who sees what --------------------------------------------------------------------------------
@pytest.fixture
def guarded_app(web_app):
    """An app with two extra pages: one for anyone signed in, one for coordinators only."""
    app = web_app()
    pages = Blueprint("probe", __name__)
    pages.add_url_rule("/probe/staff", "staff", lambda: "staff page")
    pages.add_url_rule("/probe/coordinators", "coordinators",
                       coordinator_required(lambda: "coordinator page"))
    app.register_blueprint(pages)
    add_account(app)
    add_account(app, TECHNICIAN, role="technician")
    return app


@pytest.mark.parametrize("path", ["/tickets", "/tickets/JAN-1", "/quarantine", "/dashboard",
                                  "/probe/staff", "/probe/coordinators"])
def test_every_page_but_the_form_needs_a_signed_in_user(guarded_app, path):
    response = guarded_app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_public_pages_need_no_sign_in(client):
    for path in ("/", "/login", "/site.css", "/?lang=en"):
        assert client.get(path).status_code == 200, path


def test_technician_gets_403_on_coordinator_pages(guarded_app):
    client = guarded_app.test_client()
    sign_in(client, TECHNICIAN)
    assert client.get("/probe/staff").get_data(as_text=True) == "staff page"
    response = client.get("/probe/coordinators")
    assert response.status_code == 403 and "Brak dostępu" in response.get_data(as_text=True)


def test_coordinator_passes_coordinator_required(guarded_app):
    client = guarded_app.test_client()
    sign_in(client)
    assert client.get("/probe/coordinators").get_data(as_text=True) == "coordinator page"


def test_navigation_shows_staff_links_only_when_signed_in(app, client):
    add_account(app)
    anonymous = client.get("/").get_data(as_text=True)
    assert 'href="/tickets"' not in anonymous and 'href="/login"' in anonymous
    sign_in(client)
    staff = client.get("/").get_data(as_text=True)
    for path in ("/tickets", "/quarantine", "/dashboard"):
        assert f'href="{path}"' in staff
    assert 'action="/logout"' in staff


# -- secret key and cookies -------------------------------------------------------------------------
def test_secret_key_is_generated_once_private_and_reused(web_app, make_config, store, tmp_path):
    first = web_app()
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.secret_key == key_file.read_text().strip() and len(first.secret_key) >= 32
    assert web_app().secret_key == first.secret_key  # the second start reads the same file


def test_secret_key_file_readable_by_others_is_made_private(web_app, tmp_path):
    key_file = tmp_path / "data" / "secret_key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("x" * 64)
    key_file.chmod(0o644)
    assert web_app().secret_key == "x" * 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_secret_key_from_configuration_or_environment(make_config, store, tmp_path, monkeypatch):
    from daemon import config as config_module
    from tests.conftest import BASE_CONFIG, merge
    from webform import create_app
    doc = merge(BASE_CONFIG, {"web": {"secret_key_env": "JANTAR_WEB_KEY"}})
    doc["helpdesk"] = {**doc["helpdesk"], "database_url": store.url,
                       "data_dir": str(tmp_path / "data")}
    monkeypatch.setenv("JANTAR_WEB_KEY", "k" * 40)
    config = config_module.from_dict(doc)
    assert create_app(config, store=store, testing=True).secret_key == "k" * 40
    assert not (tmp_path / "data" / "secret_key").exists()
    with pytest.raises(config_module.ConfigError, match="web.secret_key: must be at least 32"):
        make_config(store.url, web={"secret_key": "short"})


def test_session_cookie_is_httponly_lax_and_not_secure_on_http(client):
    cookie = client.get("/").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_session_cookie_is_secure_when_the_site_is_https(web_app):
    app = web_app(helpdesk={"web_url": "https://helpdesk.jantar.pl"})
    cookie = app.test_client().get("/", base_url="https://helpdesk.jantar.pl").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    forced = web_app(web={"secure_cookies": True})
    assert "Secure" in forced.test_client().get("/").headers["Set-Cookie"]


def test_pages_carry_security_headers(client):
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"


# -- languages ------------------------------------------------------------------------------------------
def test_polish_by_default_english_on_request_and_remembered(client):
    page = client.get("/").get_data(as_text=True)
    assert '<html lang="pl">' in page and "Zgłoś problem" in page
    assert '<html lang="en">' in client.get("/?lang=en").get_data(as_text=True)
    page = client.get("/login").get_data(as_text=True)  # the choice stays for the visit
    assert "Sign in" in page and '<html lang="en">' in page


def test_browser_preference_picks_english_and_the_switch_keeps_the_query(client):
    page = client.get("/?email=a%40b.pl", headers={"Accept-Language": "en-GB,en;q=0.9"})
    html = page.get_data(as_text=True)
    assert "Report a problem" in html
    assert 'href="/?email=a%40b.pl&amp;lang=pl"' in html  # switching keeps the prefill


# -- error pages -----------------------------------------------------------------------------------------
def test_unknown_address_gets_the_404_page(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "Nie ma takiej strony" in response.get_data(as_text=True)


def test_store_unreachable_gets_a_clear_503_page(app, client, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    add_account(app)
    sign_in(client)
    monkeypatch.setattr(app.extensions["helpdesk"].store, "transaction", unreachable)
    response = client.get("/tickets")
    page = response.get_data(as_text=True)
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert "Baza danych niedostępna" in page


def test_server_error_page(web_app):
    app = web_app()
    app.testing = False  # let the error handler answer instead of raising into the test
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)
    add_account(app)
    client = app.test_client()
    sign_in(client)
    response = client.get("/boom")
    assert response.status_code == 500 and "Błąd serwera" in response.get_data(as_text=True)


# -- accounts and `helpdesk user` -----------------------------------------------------------------------
def test_user_add_with_password_option_creates_a_coordinator(config_file, store, capsys):
    path = config_file()
    code = cli_main(["--config", str(path), "user", "add", "szef@jantar.pl", "--role",
                     "coordinator", "--tier", "L3", "--password", PASSWORD])
    assert code == 0 and "konto utworzone (koordynator, L3)" in capsys.readouterr().out
    row = technician(store, "szef@jantar.pl")
    assert (row.role, row.tier, row.active) == ("coordinator", "L3", True)
    with store.transaction() as session:
        assert authenticate(session, "szef@jantar.pl", PASSWORD) is not None


def test_user_add_reads_the_password_from_a_pipe(config_file, store, monkeypatch, capsys):
    path = config_file()
    monkeypatch.setattr("sys.stdin", io.StringIO("z-potoku-haslo-123\n"))
    assert cli_main(["--config", str(path), "user", "add", TECHNICIAN, "--role", "technician"]) == 0
    with store.transaction() as session:
        assert authenticate(session, TECHNICIAN, "z-potoku-haslo-123").name == "Anna Kowalska"
    monkeypatch.setattr("sys.stdin", io.StringIO("nowe-haslo-456789\n"))
    assert cli_main(["--config", str(path), "user", "passwd", TECHNICIAN]) == 0
    with store.transaction() as session:
        assert authenticate(session, TECHNICIAN, "z-potoku-haslo-123") is None
        assert authenticate(session, TECHNICIAN, "nowe-haslo-456789") is not None
    out = capsys.readouterr().out
    assert "z-potoku" not in out and "nowe-haslo" not in out


def test_user_add_asks_twice_on_a_terminal(config_file, store, monkeypatch):
    path = config_file()
    answers = iter(["haslo-z-terminala", "haslo-z-terminala"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli_main(["--config", str(path), "user", "add", "x@jantar.pl", "--role", "technician"]) == 0
    with store.transaction() as session:
        assert authenticate(session, "x@jantar.pl", "haslo-z-terminala") is not None


def test_user_commands_refuse_weak_passwords_and_conflicts(config_file, capsys):
    path = config_file()
    assert cli_main(["--config", str(path), "user", "add", "y@jantar.pl", "--role", "technician",
                     "--password", "short"]) == 1
    assert "at least 10 characters" in capsys.readouterr().err
    # Anna is a technician in the configuration: the configuration decides her role.
    assert cli_main(["--config", str(path), "user", "add", TECHNICIAN, "--role", "coordinator",
                     "--password", PASSWORD]) == 1
    assert "change role and tier there" in capsys.readouterr().err
    assert cli_main(["--config", str(path), "user", "passwd", "nobody@jantar.pl",
                     "--password", PASSWORD]) == 1
    assert "no active account" in capsys.readouterr().err


def test_user_disable_ends_web_access(config_file, store):
    path = config_file()
    cli_main(["--config", str(path), "user", "add", "z@jantar.pl", "--role", "technician",
              "--password", PASSWORD])
    assert cli_main(["--config", str(path), "user", "disable", "z@jantar.pl"]) == 0
    row = technician(store, "z@jantar.pl")
    assert row.password_hash is None and row.active is False


def test_directory_sync_keeps_accounts_made_by_user_add(config, store):
    with store.transaction() as session:
        sync_directory(session, config)
        add_user(session, config, "extra@jantar.pl", role="technician", password=PASSWORD,
                 now=NOW)
        session.add(Technician(email="gone@jantar.pl", name="Gone", tier="L1", role="technician",
                               active=True))
    with store.transaction() as session:
        sync_directory(session, config)
    assert technician(store, "extra@jantar.pl").active is True
    assert technician(store, "gone@jantar.pl").active is False  # removed from configuration


def test_add_user_refuses_bad_addresses(config, store):
    with store.transaction() as session, pytest.raises(AccountError, match="not an email"):
        add_user(session, config, "not-an-address", role="technician", password=PASSWORD,
                 now=NOW)
