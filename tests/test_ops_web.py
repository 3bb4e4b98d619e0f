"""/healthz and /metrics: health from the store, pollers and intake; Prometheus figures from known rows."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from daemon.clock import Clock
from daemon.store import Store
from daemon.store.models import MailboxCursor, OutboxMail, RawMessage, Ticket
from tests.conftest import NOW
from daemon.directory import sync_directory
from tests.fixtures_web import add_account, sign_in
from webform import create_app

IMAP_PASSWORD = "imap-tajne-haslo-42"
PULLED = {"address": "sklep@jantar.pl", "imap_host": "imap.jantar.test", "imap_user": "sklep",
          "imap_password": IMAP_PASSWORD}
TOKEN = "metryki-token-0123456789"
# One sample line of the text format: name, optional {labels}, a number.
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                       r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?)\})? '
                       r'(-?[0-9.e+]+|NaN|[+-]Inf)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[tuple[str, frozenset], float]:
    """Strictly parse the text format: every line a HELP, a TYPE or a sample, or fail."""
    samples: dict[tuple[str, frozenset], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            typed.add(name)
            continue
        match = SAMPLE_RE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE line"
        key = (name, frozenset(LABEL_RE.findall(labels or "")))
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(value)
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def add_cursor(store, *, ago: timedelta | None, error: str | None = None) -> None:
    with store.transaction() as session:
        session.add(MailboxCursor(mailbox="sklep@jantar.pl", folder="INBOX", last_uid=7,
                                  last_success_at=NOW - ago if ago is not None else None,
                                  last_error=error))


# -- /healthz ---------------------------------------------------------------------------------
def test_healthz_is_public_and_ok_with_a_fresh_poller(web_app, store):
    app = web_app(mailboxes=[PULLED])
    add_cursor(store, ago=timedelta(seconds=30))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["failing"] == [] and body["store"] == "ok"
    assert body["intake"]["state"] == "ok"
    [mailbox] = body["mailboxes"]
    assert mailbox["mailbox"] == "sklep@jantar.pl" and mailbox["ok"] is True
    assert 30 <= mailbox["lag_seconds"] < 60 and mailbox["limit_seconds"] == 660


def test_healthz_names_a_stale_poller_and_leaks_no_secret(web_app, store):
    app = web_app(mailboxes=[PULLED], limits={"poll_stale_after": "10m"})
    add_cursor(store, ago=timedelta(minutes=11), error=f"LOGIN failed for sklep/{IMAP_PASSWORD}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["mailbox sklep@jantar.pl"]
    assert body["mailboxes"][0]["last_poll_failed"] is True
    assert body["mailboxes"][0]["limit_seconds"] == 600
    text = response.get_data(as_text=True)
    assert IMAP_PASSWORD not in text and "imap.jantar.test" not in text
    assert store.url not in text


def test_healthz_counts_a_never_polled_mailbox_from_the_start(web_app, store):
    app = web_app(mailboxes=[PULLED])
    assert app.test_client().get("/healthz").status_code == 200  # just started: not stale yet
    app.config["ops_started_at"] = NOW - timedelta(hours=1)
    body = app.test_client().get("/healthz").get_json()
    assert body["failing"] == ["mailbox sklep@jantar.pl"]
    assert body["mailboxes"][0]["last_success_at"] is None


def test_healthz_is_503_naming_the_store_when_it_is_unreachable(make_config, sqlite_url):
    password = "pg-sekret-99"
    down = Store(f"postgresql+psycopg://helpdesk:{password}@127.0.0.1:1/helpdesk",
                 connect_args={"connect_timeout": 2})
    app = create_app(make_config(sqlite_url), store=down, clock=Clock(start=NOW), testing=True)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    # Intake commits into the store: it cannot take mail either.
    assert body["failing"] == ["store", "intake"] and body["store"].startswith("unreachable")
    assert body["intake"]["why"] == ["store_unreachable"]
    assert password not in response.get_data(as_text=True)
    down.dispose()


def test_healthz_answers_its_own_json_to_a_signed_in_browser_while_the_store_is_down(
        make_config, sqlite_url):
    """A staff cookie makes every other page look its person up in the store first; a
    health check must not: it answers its own 503, naming the store, not the error page."""
    web = {"secret_key": "a-secret-key-shared-by-both-apps-0123456789"}
    config = make_config(sqlite_url, web=web)
    up = Store(sqlite_url)
    with up.transaction() as session:
        sync_directory(session, config)
    working = create_app(config, store=up, clock=Clock(start=NOW), testing=True)
    add_account(working)
    client = working.test_client()
    assert sign_in(client).status_code == 302
    cookie = client.get_cookie("jantar_session")
    down = Store("postgresql+psycopg://helpdesk@127.0.0.1:1/helpdesk",
                 connect_args={"connect_timeout": 2})
    failing = create_app(config, store=down, clock=Clock(start=NOW), testing=True).test_client()
    failing.set_cookie(cookie.key, cookie.value)
    response = failing.get("/healthz")
    assert response.status_code == 503 and response.is_json
    assert "store" in response.get_json()["failing"]
    up.dispose()
    down.dispose()


# -- /metrics ---------------------------------------------------------------------------------
def _known_rows(store) -> None:
    with store.transaction() as session:
        for n, (channel, status) in enumerate([("smtp", "processed"), ("smtp", "processed"),
                                               ("imap", "duplicate"), ("imap", "quarantined"),
                                               ("web", "pending")]):
            session.add(RawMessage(channel=channel, mailbox="sklep@jantar.pl", idempotency_key=f"k{n}",
                                   sha256="0" * 64, size=1, raw=b"x", received_at=NOW, status=status))
        for n, (status, tier, breached) in enumerate([("new", "L1", False), ("new", "L1", True),
                                                      ("open", "L2", True), ("closed", "L1", False)]):
            session.add(Ticket(number=f"JAN-{n + 1}", status=status, tier=tier, created_at=NOW,
                               updated_at=NOW,
                               first_response_breach_sent_at=NOW if breached else None,
                               resolution_breach_sent_at=NOW if n == 2 else None))
        for n, status in enumerate(["sent", "sent", "sent", "failed", "pending"]):
            session.add(OutboxMail(kind="ack", mail_from="sklep@jantar.pl", message_id=f"<o{n}@x>",
                                   raw=b"x", status=status, next_attempt_at=NOW, created_at=NOW))


def test_metrics_come_from_the_store_at_scrape_time(web_app, store):
    app = web_app(mailboxes=[PULLED])
    _known_rows(store)
    add_cursor(store, ago=timedelta(seconds=90), error="timeout")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = parse_exposition(response.get_data(as_text=True))
    assert value(samples, "helpdesk_mails_received_total", channel="smtp", mailbox="sklep@jantar.pl") == 2
    assert value(samples, "helpdesk_mails_received_total", channel="imap", mailbox="sklep@jantar.pl") == 2
    assert value(samples, "helpdesk_raw_messages", channel="imap", status="quarantined") == 1
    assert value(samples, "helpdesk_mails_processed_total") == 3
    assert value(samples, "helpdesk_mails_quarantined") == 1
    assert value(samples, "helpdesk_mails_sent_total") == 3
    assert value(samples, "helpdesk_mails_failed_total") == 1
    assert value(samples, "helpdesk_outbox_mails", status="pending") == 1
    assert value(samples, "helpdesk_tickets", status="new", tier="L1") == 2
    assert value(samples, "helpdesk_tickets", status="open", tier="L2") == 1
    assert value(samples, "helpdesk_sla_breaches_total", clock="first_response") == 2
    assert value(samples, "helpdesk_sla_breaches_total", clock="resolution") == 1
    lag = value(samples, "helpdesk_poll_lag_seconds", mailbox="sklep@jantar.pl", folder="INBOX")
    assert 90 <= lag < 120
    assert value(samples, "helpdesk_poll_failing", mailbox="sklep@jantar.pl", folder="INBOX") == 1
    for channel in ("smtp", "lmtp", "imap", "web"):  # no refusal yet, but every series there
        assert value(samples, "helpdesk_intake_refusals_total", channel=channel) == 0
    assert IMAP_PASSWORD not in response.get_data(as_text=True)


def test_metrics_answer_only_loopback_without_a_token(app):
    client = app.test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 403


def test_metrics_want_the_bearer_token_when_one_is_set(web_app):
    client = web_app(web={"metrics_token": TOKEN}).test_client()
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0000000"}
                      ).status_code == 403
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                          environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert response.status_code == 200
    assert "helpdesk_tickets" in response.get_data(as_text=True)


def test_metric_label_values_are_escaped(app, store):
    with store.transaction() as session:  # a mailbox as an old configuration may have named it
        session.add(RawMessage(channel="smtp", mailbox='a"b\\c\nd', idempotency_key="k",
                               sha256="0" * 64, size=1, raw=b"x", received_at=NOW))
    samples = parse_exposition(app.test_client().get("/metrics").get_data(as_text=True))
    assert value(samples, "helpdesk_mails_received_total", channel="smtp",
                 mailbox='a\\"b\\\\c\\nd') == 1


def test_metrics_speak_openmetrics_when_the_scraper_asks(app):
    response = app.test_client().get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    text = response.get_data(as_text=True)
    assert "# TYPE helpdesk_mails_received counter" in text and text.endswith("# EOF\n")


def test_each_app_counts_on_a_registry_of_its_own(web_app):
    from prometheus_client import REGISTRY
    first, second = web_app(), web_app()
    first.extensions["helpdesk"].intake_refusals.record("smtp")
    counted = {}
    for name, app in (("first", first), ("second", second)):
        samples = parse_exposition(app.test_client().get("/metrics").get_data(as_text=True))
        counted[name] = value(samples, "helpdesk_intake_refusals_total", channel="smtp")
    assert counted == {"first": 1, "second": 0}
    assert REGISTRY.get_sample_value("helpdesk_intake_refusals_total", {"channel": "smtp"}) is None


# -- with a real IMAP poller ----------------------------------------------------------------------
class StepClock:
    def __init__(self):
        self.at = NOW

    def now(self):
        return self.at


def test_healthz_follows_a_real_poller_on_dovecot(make_config, store, imap_account):
    from daemon.directory import sync_directory
    from daemon.ingest.imap import ImapPuller
    from tests.fixtures_dovecot import free_port
    clock = StepClock()
    config = make_config(store.url, mailboxes=[imap_account.mailbox_settings(),
                                               {**imap_account.mailbox_settings("serwis@jantar.pl"),
                                                "imap_port": free_port()}])  # nothing listens
    with store.transaction() as session:
        sync_directory(session, config)
    client = create_app(config, store=store, clock=clock, testing=True).test_client()
    with ImapPuller(config, config.mailboxes[0], store, clock) as puller:
        puller.poll_once()
    with ImapPuller(config, config.mailboxes[1], store, clock) as puller, \
            pytest.raises(OSError):
        puller.poll_once()
    clock.at = NOW + timedelta(minutes=5)
    body = client.get("/healthz").get_json()
    states = {m["mailbox"]: m for m in body["mailboxes"]}
    assert states["sklep@jantar.pl"]["last_success_at"] == NOW.isoformat()
    assert states["sklep@jantar.pl"]["ok"] and not states["sklep@jantar.pl"]["last_poll_failed"]
    assert states["serwis@jantar.pl"]["ok"]  # failing, but within the limit of the start
    clock.at = NOW + timedelta(minutes=12)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["failing"] == ["mailbox sklep@jantar.pl", "mailbox serwis@jantar.pl"]
    assert imap_account.password not in response.get_data(as_text=True)
