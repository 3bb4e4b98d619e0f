"""SIGKILL the daemon while it pulls a mailbox of a few hundred messages; after restarts,
every message is in the store exactly once (issue: the spine)."""
from __future__ import annotations

import random
import signal
import time

import pytest
from sqlalchemy import Engine, create_engine, func, select

from daemon.store import Store
from daemon.store.models import Message, RawMessage
from tests.mailfactory import make_mail
from tests.test_daemon import start_daemon, stop_daemon, wait_until
from tests.tomlwrite import write_config

MESSAGES = 300
KILL_AFTER = (20, 90, 170, 240)  # raw records saved before each SIGKILL


def count(reader: Engine, *criteria) -> int:
    """Records saved so far, read without the write lock: a Store's transaction takes it
    up front on SQLite (BEGIN IMMEDIATE), so a poll through it waits while the daemon
    saves batch after batch and only sees the count once the pull is over."""
    with reader.connect() as connection:
        return connection.scalar(select(func.count(RawMessage.id)).where(*criteria))


@pytest.mark.slow
def test_sigkill_while_pulling_loses_nothing_and_duplicates_nothing(imap_account, db_url, tmp_path):
    # ~80 KB each: big enough that pulling takes a while and the kills land mid-pull.
    body = "Dzień dobry,\nopis problemu w sklepie.\n" + "Szczegóły logu kasy: 0123456789\n" * 2500
    imap_account.append_many(
        make_mail(sender=f"sklep{n % 30}@bursztyn.pl", subject=f"Problem nr {n}", body=body,
                  message_id=f"<kill-{n}@bursztyn.pl>") for n in range(MESSAGES))
    config = write_config(tmp_path / "helpdesk.toml", {
        "helpdesk": {"database_url": db_url, "data_dir": str(tmp_path / "data")},
        "smtp_server": {"enabled": False},
        "web": {"enabled": False},
        "limits": {"poll_interval": "1s"},
        "outbound": {"transport": "maildir", "maildir": str(tmp_path / "sent")},
        "mailboxes": [imap_account.mailbox_settings(existing_mail="process")],  # live mail
        "clients": [{"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"]}],
    })
    store = Store(db_url)
    reader = create_engine(db_url)   # plain: SQLite reads in WAL need no lock
    jitter = random.Random(20261125)
    kills_mid_pull = 0
    for threshold in KILL_AFTER:
        process = start_daemon(config)
        try:
            wait_until(lambda: count(reader) >= threshold or process.poll() is not None,
                       timeout=120, what=f"{threshold} saved records", interval=0.005)
            time.sleep(jitter.uniform(0, 0.05))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        kills_mid_pull += count(reader) < MESSAGES
    # At least one kill must land mid-pull; more is timing (tests/test_kill_harness.py lands 20).
    assert kills_mid_pull >= 1, "a kill should land while the mailbox is being pulled"

    # Its log tells when it runs: the kills may have left nothing for it to do, and a
    # SIGTERM sent before its handler exists would end it with the default action.
    process = start_daemon(config, log_path=tmp_path / "final.log")
    try:
        wait_until(lambda: count(reader) == MESSAGES and
                   count(reader, RawMessage.status == "pending") == 0, timeout=180,
                   what="every message pulled and processed")
        wait_until(lambda: [b"$Helpdesk" in f for f in imap_account.flags().values()]
                   == [True] * MESSAGES, timeout=60, what="every message flagged on the server")
    finally:
        assert stop_daemon(process, tmp_path / "final.log") == 0, \
            (tmp_path / "final.log").read_text(errors="replace")[-3000:]

    with store.transaction() as session:
        statuses = dict(session.execute(select(RawMessage.status, func.count())
                                        .group_by(RawMessage.status)).all())
        message_ids = list(session.scalars(select(Message.message_id).where(Message.direction == "in")))
    assert statuses == {"processed": MESSAGES}
    assert sorted(message_ids) == sorted(f"kill-{n}@bursztyn.pl" for n in range(MESSAGES))
    store.dispose()
    reader.dispose()
