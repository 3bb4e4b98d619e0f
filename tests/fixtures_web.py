"""Web fixtures: the Flask app on each backend, its test client, accounts, CSRF, a live server
and headless Chromium.

`web_app(**sections)` builds an app from the shared BASE_CONFIG plus overrides, with the
directory mirrored; `client` is its test client. `sign_in(client, email, password)` goes
through /login like a person; `csrf_token(client)` reads the token the pages carry.
`live_server(app)` serves an app on a free loopback port for the browser tests.
`HttpBrowser` talks HTTP to a served app (the daemon's own web) with the standard library.
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

import pytest
from werkzeug.serving import make_server

from daemon.clock import Clock
from daemon.directory import sync_directory
from tests.conftest import NOW, require
from webform import create_app
from webform.accounts import add_user

COORDINATOR = "koordynator@jantar.pl"
TECHNICIAN = "anna.kowalska@jantar.pl"
PASSWORD = "kasa-fiskalna-2026"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def web_app(make_config, store):
    """web_app(**sections) -> a testing Flask app on `store`, clock at tests.conftest.NOW."""

    def build(**sections):
        config = make_config(store.url, **sections)
        with store.transaction() as session:
            sync_directory(session, config)
        return create_app(config, store=store, clock=Clock(start=NOW), testing=True)

    return build


@pytest.fixture
def app(web_app):
    return web_app()


@pytest.fixture
def client(app):
    return app.test_client()


def add_account(app, email: str = COORDINATOR, *, role: str = "coordinator",
                password: str = PASSWORD, tier: str | None = None) -> None:
    desk = app.extensions["helpdesk"]
    with desk.store.transaction() as session:
        add_user(session, desk.config, email, role=role, tier=tier, password=password,
                 now=desk.clock.now())


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token of the visit, as the page at PATH carries it."""
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    assert match, f"no csrf_token on {path}"
    return match.group(1)


def sign_in(client, email: str = COORDINATOR, password: str = PASSWORD, **extra):
    """POST /login as the browser would; returns the response (a redirect on success)."""
    data = {"email": email, "password": password, "csrf_token": csrf_token(client, "/login"),
            **extra}
    return client.post("/login", data=data)


@dataclass
class LiveServer:
    url: str
    app: object


@pytest.fixture
def live_server() -> Iterator:
    """live_server(app) -> LiveServer: the app served on a free loopback port until the end."""
    servers = []

    def serve(app) -> LiveServer:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return LiveServer(f"http://127.0.0.1:{server.server_port}", app)

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class HttpAnswer:
    status_code: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args, **_kwargs):
        return None   # the 3xx itself is the answer: a test asks where it points


class HttpBrowser:
    """Cookies kept, redirects not followed, every status an answer (not an exception)."""

    def __init__(self, timeout: float = 30):
        self.timeout = timeout
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _KeepRedirects())

    def get(self, url: str) -> HttpAnswer:
        return self._open(urllib.request.Request(url))

    def post(self, url: str, data: dict) -> HttpAnswer:
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(url, data=body, method="POST"))

    def _open(self, request: urllib.request.Request) -> HttpAnswer:
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return HttpAnswer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as answer:
            with answer:
                return HttpAnswer(answer.code, answer.headers, answer.read())


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium driven by Playwright (skipped here without it, fails under CI)."""
    require(shutil.which("chromium") is not None, "chromium is not installed")
    try:
        from playwright import sync_api
    except ImportError as missing:
        require(False, f"Playwright is not importable ({missing}): pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM,
                                             headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context (own cookies) and page; closed after the test."""
    context = chromium.new_context(locale="pl-PL", viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
