"""Relay gone, as the daemon lives it (issue 8): tests/test_outbound.py proves the sender's
rules pass by pass (backoff, an hour down, 4xx past retry_for, 5xx to the coordinator);
these add the running `helpdesk run` with its relay away and back, and the coordinator's
notice when retrying ends without a 5xx.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from daemon.directory import sync_directory
from daemon.store import Store
from daemon.store.models import OutboxMail
from tests.conftest import NOW
from tests.fixtures_smtp import send_mail
from tests.mailfactory import make_mail
from tests.test_daemon import ROOT, free_port, listening, wait_until
from tests.test_outbound import (
    COORDINATOR,
    CUSTOMER,
    open_ticket,
    outbox,
    queue,
    send,
    text_of,
)
from tests.tomlwrite import write_config


def statuses(store: Store) -> Counter:
    with store.transaction() as session:
        return Counter(session.scalars(select(OutboxMail.status)))


@pytest.mark.slow
def test_running_daemon_holds_mail_while_the_relay_is_away_and_sends_each_once_after(
        db_url, smtp_sink, tmp_path):
    smtp_port = free_port()
    config = write_config(tmp_path / "helpdesk.toml", {
        "helpdesk": {"database_url": db_url, "data_dir": str(tmp_path / "data")},
        "smtp_server": {"listen": f"127.0.0.1:{smtp_port}"},
        "web": {"enabled": False},
        "outbound": {"transport": "smtp", "smtp_host": smtp_sink.host, "smtp_port": smtp_sink.port,
                     "backoff_initial": "1s", "backoff_max": "2s"},
        "mailboxes": [{"address": "sklep@jantar.pl"}],
        "clients": [{"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"]}],
        "technicians": [{"name": "Ewa", "email": COORDINATOR, "role": "coordinator", "tier": "L2"}],
    })
    store = Store(db_url)
    smtp_sink.stop()  # the relay is away before the first mail arrives
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(smtp_port), what="the receiver")
        for n in range(3):
            send_mail(smtp_port, make_mail(sender=f"klient{n}@bursztyn.pl",
                                           message_id=f"<relay-{n}@bursztyn.pl>"))
        # Each new ticket queues an acknowledgement and a coordinator notice: six mails,
        # tried (the send job runs every 10 s) and left pending, none failed.
        wait_until(lambda: statuses(store) == {"pending": 6}, timeout=60, what="six mails queued")
        wait_until(lambda: any(m.last_error for m in outbox(store)), timeout=30,
                   what="a delivery attempt while the relay is away")
        assert all("refused" in m.last_error.lower() for m in outbox(store) if m.last_error)

        smtp_sink.start()
        wait_until(lambda: statuses(store) == {"sent": 6}, timeout=60, what="all six sent")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    caught = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert len(caught) == 6 and set(caught.values()) == {1}, caught  # each once
    recipients = sorted(m.rcpt_tos for m in smtp_sink.messages)
    assert recipients == sorted([(COORDINATOR,)] * 3 + [(f"klient{n}@bursztyn.pl",) for n in range(3)])
    store.dispose()


def test_giving_up_after_retry_for_tells_the_coordinator_by_mail(store, make_config, smtp_sink):
    config = make_config(store.url, outbound={
        "transport": "smtp", "smtp_host": smtp_sink.host, "smtp_port": smtp_sink.port,
        "retry_for": "1h", "backoff_initial": "30m", "backoff_max": "1h"})
    with store.transaction() as session:
        sync_directory(session, config)
    number = open_ticket(store)
    row = queue(store, config, number)
    smtp_sink.refuse("451 4.3.0 Relay busy, try again later", recipients=[CUSTOMER], stage="RCPT")

    assert send(config, store) == Counter(retry=1)
    assert send(config, store, NOW + timedelta(minutes=31)) == Counter(retry=1)
    # Past retry_for the mail fails; the notice goes out in the same pass to the coordinator,
    # whom the relay still accepts.
    assert send(config, store, NOW + timedelta(hours=1, seconds=1)) == Counter(failed=1, sent=1)
    failed, notice = outbox(store)
    assert failed.status == "failed" and "gave up after 3 attempts" in failed.last_error
    assert (notice.kind, notice.recipients, notice.status) == ("delivery_failed", [COORDINATOR],
                                                               "sent")
    [caught] = smtp_sink.messages
    assert caught.rcpt_tos == (COORDINATOR,)
    body = text_of(caught.message)
    assert CUSTOMER in body and row.message_id in body and "451" in body
