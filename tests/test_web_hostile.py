"""Hostile users of the web, checked over every route the app has (issue 8).

The other web tests name their pages one by one; these walk `app.url_map`, so a page
added later is covered the day it lands: it needs a sign-in unless it is on the short
public list below, coordinator-only views refuse technicians, and every state-changing
request without a CSRF token is refused. Also: cookie flags behind an HTTPS proxy, no
secret in the log, and uploads that cannot overwrite one another.
"""
from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select

from daemon import config as config_module
from daemon.store.models import Attachment, Blob, Message
from tests.fixtures_web import (
    COORDINATOR,
    PASSWORD,
    TECHNICIAN,
    add_account,
    csrf_token,
    sign_in,
)
from tests.test_web_form import submit
from webform import create_app
from webform.auth import coordinator_required

# Open to everyone: the form, its confirmation, sign-in and sign-out (harmless signed
# out, and still behind CSRF), the rating link mailed to customers, the stylesheet, and
# the operations endpoints (/healthz, /metrics).
PUBLIC = {"public.form", "public.submit", "public.submitted", "auth.login", "auth.logout",
          "rating.rate",
          "site_css", "ops.healthz", "ops.metrics", "static"}
SAMPLE_ARGUMENTS = {"number": "JAN-1", "token": "x" * 20}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
_CODE_OF_COORDINATOR_ONLY = coordinator_required(lambda: None).__code__


def routes(app, methods: set[str] | None = None):
    """(endpoint, method, path) for every rule, with sample values for its arguments."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        values = {name: SAMPLE_ARGUMENTS.get(name, 1) for name in rule.arguments}
        path = rule.build(values, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if methods is None or method in methods:
                yield rule.endpoint, method, path


def is_public(app, endpoint: str) -> bool:
    return bool(getattr(app.view_functions.get(endpoint), "public", False))


def coordinator_only(app, endpoint: str) -> bool:
    view = app.view_functions[endpoint]
    return getattr(view, "__code__", None) is _CODE_OF_COORDINATOR_ONLY


def request(client, method: str, path: str, **kwargs):
    return client.open(path, method=method, **kwargs)


@pytest.fixture
def staff_app(web_app):
    app = web_app()
    add_account(app)
    add_account(app, TECHNICIAN, role="technician")
    return app


# -- sign-in ------------------------------------------------------------------------------------
def test_only_the_known_public_views_are_marked_public(staff_app):
    marked = {endpoint for endpoint in staff_app.view_functions if is_public(staff_app, endpoint)}
    assert marked <= PUBLIC, f"new public views, review them: {marked - PUBLIC}"
    assert {"public.form", "public.submit", "auth.login"} <= marked


def test_every_route_but_the_public_ones_sends_strangers_to_sign_in(staff_app):
    staff_app.config["WTF_CSRF_ENABLED"] = False  # the sign-in check, not CSRF, is under test
    client = staff_app.test_client()
    checked = []
    for endpoint, method, path in routes(staff_app):
        if endpoint in PUBLIC:
            continue
        response = request(client, method, path)
        assert response.status_code in (302, 401), (method, path, response.status_code)
        if response.status_code == 302:
            assert response.location.startswith("/login?next="), (method, path, response.location)
        checked.append(f"{method} {path}")
    assert len(checked) >= 15 and "POST /tickets/bulk" in checked and "GET /tickets" in checked


def test_a_technician_cannot_reach_any_coordinator_only_view(staff_app):
    staff_app.config["WTF_CSRF_ENABLED"] = False
    client = staff_app.test_client()
    sign_in(client, TECHNICIAN)
    guarded = [(e, m, p) for e, m, p in routes(staff_app) if coordinator_only(staff_app, e)]
    assert {"triage.quarantine", "triage.reprocess", "triage.discard", "triage.raw_mail",
            "triage.attach", "triage.split", "triage.bulk"} <= {e for e, _, _ in guarded}
    for _endpoint, method, path in guarded:
        response = request(client, method, path)
        assert response.status_code == 403, (method, path, response.status_code)
        assert "Brak dostępu" in response.get_data(as_text=True)


def test_a_coordinator_gets_past_the_same_views(staff_app):
    staff_app.config["WTF_CSRF_ENABLED"] = False
    client = staff_app.test_client()
    sign_in(client)
    guarded = [(e, m, p) for e, m, p in routes(staff_app) if coordinator_only(staff_app, e)]
    assert {"triage.quarantine", "triage.reprocess", "triage.discard", "triage.raw_mail",
            "triage.attach", "triage.split", "triage.bulk"} <= {e for e, _, _ in guarded}
    for _endpoint, method, path in guarded:
        response = request(client, method, path)
        assert response.status_code not in (401, 403), (method, path)
        assert not (response.location or "").startswith("/login"), (method, path)


# -- CSRF -------------------------------------------------------------------------------------
@pytest.mark.parametrize("who", [None, COORDINATOR, TECHNICIAN])
def test_every_state_changing_route_without_a_csrf_token_is_refused(staff_app, who):
    assert staff_app.config.get("WTF_CSRF_ENABLED", True)
    client = staff_app.test_client()
    if who:
        assert sign_in(client, who).status_code == 302
    posted = []
    for _endpoint, method, path in routes(staff_app, STATE_CHANGING):
        for data in ({}, {"csrf_token": "forged-token"}):
            response = request(client, method, path, data=data)
            assert response.status_code == 400, (who, method, path, data, response.status_code)
            assert "Formularz wygasł" in response.get_data(as_text=True)
        posted.append(path)
    assert {"/", "/login", "/logout", "/tickets/bulk", "/tickets/JAN-1/reply"} <= set(posted)


def test_a_token_from_another_session_is_refused(staff_app):
    stranger = staff_app.test_client()
    token = csrf_token(stranger, "/login")
    client = staff_app.test_client()
    sign_in(client)
    response = client.post("/tickets/JAN-1/note", data={"csrf_token": token, "text": "x"})
    assert response.status_code == 400


# -- cookies behind a proxy -----------------------------------------------------------------------
def scheme_probe(app) -> dict:
    """A public page on APP that records the scheme and client address the app sees."""
    seen: dict = {}

    def probe():
        from flask import request as flask_request
        seen.update(scheme=flask_request.scheme, remote=flask_request.remote_addr)
        return "ok"

    probe.public = True
    app.add_url_rule("/probe-scheme", "probe_scheme", probe)
    return seen


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7",
             "X-Forwarded-Host": "helpdesk.jantar.pl"}


def test_behind_an_https_proxy_the_cookie_is_secure_httponly_and_samesite(web_app):
    app = web_app(helpdesk={"web_url": "https://helpdesk.jantar.pl"}, web={"proxies": 1})
    seen = scheme_probe(app)
    add_account(app)
    client = app.test_client()
    token = csrf_token(client, "/login")
    # Flask-WTF checks the Referer on HTTPS: that it passes shows the request is seen as HTTPS.
    response = client.post("/login", data={"email": COORDINATOR, "password": PASSWORD,
                                           "csrf_token": token},
                           headers={**FORWARDED, "Referer": "https://helpdesk.jantar.pl/login"})
    assert response.status_code == 302
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith("jantar_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax"} <= flags
    client.get("/probe-scheme", headers=FORWARDED)
    assert seen == {"scheme": "https", "remote": "203.0.113.7"}


def test_without_trusted_proxies_forwarded_headers_change_nothing(web_app):
    app = web_app()
    seen = scheme_probe(app)
    app.test_client().get("/probe-scheme", headers=FORWARDED)
    assert seen == {"scheme": "http", "remote": "127.0.0.1"}


# -- secrets and the log --------------------------------------------------------------------------
def test_no_secret_reaches_the_log_while_configuration_loads_and_staff_sign_in(
        make_config, store, caplog):
    secrets = {"imap": "imap-Haslo-9f3k2", "relay": "relay-Haslo-77xq", "web": "w" * 40,
               "db": "db-Haslo-55zz", "wrong": "zle-haslo-123456"}
    with caplog.at_level(logging.DEBUG):
        config = make_config(store.url, mailboxes=[{
            "address": "sklep@jantar.pl", "imap_host": "imap.jantar.pl", "imap_user": "sklep",
            "imap_password": secrets["imap"]}],
            web={"secret_key": secrets["web"]},
            outbound={"transport": "smtp", "smtp_host": "relay.jantar.pl", "smtp_port": 465,
                      "smtp_user": "helpdesk", "smtp_password": secrets["relay"]})
        assert config.mailboxes[0].imap_password == secrets["imap"]
        from daemon.outbound.config import outbound_config
        assert outbound_config(config).smtp_password == secrets["relay"]
        config_module.from_dict({"helpdesk": {
            "database_url": f"postgresql://helpdesk:{secrets['db']}@db.invalid/helpdesk"}}, env={})
        from daemon.clock import Clock
        app = create_app(config, store=store, clock=Clock(), testing=True)
        add_account(app)
        client = app.test_client()
        sign_in(client, password=secrets["wrong"])
        sign_in(client)
        client.get("/tickets")
    assert "signed in" in caplog.text
    for secret in (*secrets.values(), PASSWORD, app.secret_key):
        assert secret not in caplog.text, secret
    for text in (repr(config), str(config)):
        for secret in (secrets["imap"], secrets["web"]):
            assert secret not in text, "a secret in the configuration's repr would reach tracebacks"


# -- uploads ----------------------------------------------------------------------------------------
def test_two_uploads_with_the_same_name_keep_their_own_content(client, store):
    first = submit(client, files=[("paragon.txt", b"pierwszy"), ("paragon.txt", b"drugi")],
                   subject="Pierwsze zgloszenie")
    second = submit(client, files=[("paragon.txt", b"trzeci")], subject="Drugie zgloszenie",
                    email="ewa@bursztyn.pl")
    assert (first.status_code, second.status_code) == (303, 303), \
        re.sub(r"\s+", " ", first.get_data(as_text=True))[:800]
    with store.transaction() as session:
        stored = sorted((m.subject, a.filename, session.get(Blob, a.blob_sha256).data)
                        for m, a in session.execute(select(Message, Attachment)
                                                    .join(Attachment, Attachment.message_id == Message.id)
                                                    .where(Message.direction == "in")))
    contents = sorted(data for _subject, _name, data in stored)
    assert contents == [b"drugi", b"pierwszy", b"trzeci"]
    assert all(name.endswith(".txt") and "/" not in name for _s, name, _d in stored)
