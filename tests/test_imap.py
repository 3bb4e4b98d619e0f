"""The IMAP puller against a real Dovecot, on SQLite and on PostgreSQL."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from imapclient import IMAPClient
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from daemon.clock import Clock
from daemon.ingest import imap as imap_module
from daemon.ingest.imap import ImapPuller, batches_by_size
from daemon.store import Store
from daemon.store.models import MailboxCursor, RawMessage
from tests.fixtures_dovecot import free_port

DONE = {b"\\Seen", b"$Helpdesk"}
DEADLINE = 30.0


def message(subject: str = "Drukarka fiskalna nie drukuje") -> bytes:
    """A CRLF message, as IMAP hands it back byte for byte, with 8-bit UTF-8 in the body."""
    return (f"From: Kasa 3 <kasa3@bursztyn.pl>\r\n"
            f"To: sklep@jantar.pl\r\n"
            f"Subject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@bursztyn.pl>\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0100\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"\r\n"
            f"Zażółć gęślą jaźń: drukarka w sklepie nr 12 stoi.\r\n").encode()


class SteppedClock:
    """A clock the test moves by hand (for lease expiry)."""

    def __init__(self):
        self.at = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self.at


def raws(store: Store) -> list[RawMessage]:
    with store.transaction() as session:
        return list(session.scalars(select(RawMessage).options(selectinload(RawMessage.body))
                                        .order_by(RawMessage.id)))


def cursor(store: Store) -> MailboxCursor | None:
    with store.transaction() as session:
        return session.scalars(select(MailboxCursor)).one_or_none()


def wait_until(condition, what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.contextmanager
def running(puller: ImapPuller):
    """puller.run() in a thread, as the daemon does; stopped (and checked) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=puller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert not thread.is_alive(), "run() did not return after stop was set"


def hide_capability(monkeypatch, hidden: str) -> None:
    """Make every IMAPClient believe the server lacks `hidden` (for the fallback paths)."""
    real = IMAPClient.has_capability
    monkeypatch.setattr(IMAPClient, "has_capability",
                        lambda self, name: name.upper() != hidden and real(self, name))


@pytest.fixture
def make_puller(make_config, db_url, store, imap_account):
    """make_puller(**mailbox_settings) -> ImapPuller on this test's account and store."""
    pullers = []

    def build(account=None, *, clock=None, owner=None, on_saved=None, limits=None,
              tls=False, **mailbox):
        account = account or imap_account
        # These tests are about live mail: mail appended before the first poll is new mail.
        mailbox.setdefault("existing_mail", "process")
        config = make_config(db_url, mailboxes=[account.mailbox_settings(tls=tls, **mailbox)],
                             limits=limits or {})
        puller = ImapPuller(config, config.mailboxes[0], store, clock or Clock(),
                            on_saved=on_saved, owner=owner)
        pullers.append(puller)
        return puller

    yield build
    for puller in pullers:
        puller.close()


# ------------------------------------------------------------------ polling


def test_poll_saves_new_messages_and_marks_them_only_after_commit(
        store, db_url, imap_account, make_puller, monkeypatch):
    sent = [message(f"Zgłoszenie {i}") for i in range(3)]
    uids = imap_account.append_many(sent)
    uidvalidity = imap_account.uidvalidity()
    puller = make_puller()
    seen_at_marking = []

    def check_then_mark(client, folder, marked):
        # Another connection must already see the records: they were committed.
        other = Store(db_url)
        seen_at_marking.append((len(raws(other)), imap_account.flags()))
        other.dispose()
        original_mark(client, folder, marked)

    original_mark = puller._mark_done
    monkeypatch.setattr(puller, "_mark_done", check_then_mark)

    assert imap_account.flags() == {uid: set() for uid in uids}
    assert puller.poll_once() == 3

    assert seen_at_marking == [(3, {uid: set() for uid in uids})]
    records = raws(store)
    assert [r.raw for r in records] == sent
    for record, uid in zip(records, uids):
        assert record.channel == "imap"
        assert record.mailbox == "sklep@jantar.pl"
        assert record.idempotency_key == f"imap:sklep@jantar.pl:INBOX:{uidvalidity}:{uid}"
        assert record.origin == (f"imap://{imap_account.user}@127.0.0.1:"
                                 f"{imap_account.server.port}/INBOX;UID={uid}")
        assert record.status == "pending"
        assert record.message_id and record.message_id.endswith("@bursztyn.pl")
    assert imap_account.flags() == {uid: DONE for uid in uids}
    state = cursor(store)
    assert (state.uidvalidity, state.last_uid) == (uidvalidity, uids[-1])
    assert state.last_success_at is not None and state.last_error is None


def test_second_poll_saves_nothing_and_new_mail_only_once(store, imap_account, make_puller):
    imap_account.append_many([message(), message()])
    puller = make_puller()
    assert puller.poll_once() == 2
    assert puller.poll_once() == 0
    imap_account.append(message("Kolejne"))
    assert puller.poll_once() == 1
    assert puller.poll_once() == 0
    assert len(raws(store)) == 3


def test_messages_already_flagged_by_a_human_are_read_by_uid(store, imap_account, make_puller):
    imap_account.append(message(), flags=(b"\\Seen", b"$Helpdesk"))
    assert make_puller().poll_once() == 1
    assert len(raws(store)) == 1


def test_lease_and_connection_are_given_back_on_close(store, imap_account, make_puller):
    imap_account.append(message())
    puller = make_puller()
    puller.poll_once()
    assert cursor(store).lease_owner == puller.owner
    puller.close()
    assert cursor(store).lease_owner is None
    assert puller._client is None


def test_batches_commit_one_at_a_time_and_wake_the_pipeline(store, db_url, imap_account,
                                                           make_puller):
    imap_account.append_many([message() for _ in range(5)])
    committed_at_wakeup = []

    def on_saved():
        other = Store(db_url)
        committed_at_wakeup.append(len(raws(other)))
        other.dispose()

    puller = make_puller(on_saved=on_saved)
    puller.batch_messages = 2
    assert puller.poll_once() == 5
    assert committed_at_wakeup == [2, 4, 5]
    assert puller.poll_once() == 0
    assert committed_at_wakeup == [2, 4, 5]  # nothing saved: no wake-up


def test_batches_are_cut_by_size_too():
    sizes = {1: 10, 2: 10, 3: 30, 4: 5}
    assert list(batches_by_size([1, 2, 3, 4], sizes, 25)) == [[1, 2], [3], [4]]


def test_big_messages_go_one_per_batch(store, imap_account, make_puller):
    imap_account.append_many([message("A" * 2000), message("B" * 2000), message()])
    saved_batches = []
    puller = make_puller(on_saved=lambda: saved_batches.append(len(raws(store))))
    puller.batch_bytes = 1500
    assert puller.poll_once() == 3
    assert saved_batches == [1, 2, 3]


# ------------------------------------------------------------- dying midway


@pytest.mark.parametrize("mode", ["flag", "move"])
def test_failure_between_commit_and_marking_loses_and_duplicates_nothing(
        store, imap_account, make_puller, monkeypatch, mode):
    uids = imap_account.append_many([message() for _ in range(3)])
    puller = make_puller(**({"imap_done_folder": "Obsluzone"} if mode == "move" else {}))
    original_mark = puller._mark_done
    calls = []

    def mark_fails_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionResetError("connection lost while flagging")
        original_mark(*args)

    monkeypatch.setattr(puller, "_mark_done", mark_fails_once)
    with pytest.raises(ConnectionResetError):
        puller.poll_once()
    assert len(raws(store)) == 3
    assert "connection lost while flagging" in cursor(store).last_error
    assert imap_account.uids() == uids  # still there, unmarked
    assert imap_account.flags() == {uid: set() for uid in uids}

    assert puller.poll_once() == 0
    assert len(raws(store)) == 3
    assert cursor(store).last_error is None
    if mode == "flag":
        assert imap_account.flags() == {uid: DONE for uid in uids}
    else:
        assert imap_account.uids() == []
        assert len(imap_account.uids("Obsluzone")) == 3


def test_failure_before_commit_keeps_earlier_batches_and_rereads_the_rest(
        store, imap_account, make_puller, monkeypatch):
    sent = [message(f"nr {i}") for i in range(5)]
    uids = imap_account.append_many(sent)
    puller = make_puller()
    puller.batch_messages = 2
    original_add_raw = imap_module.add_raw
    calls = []

    def add_raw_fails_on_third(session, **kwargs):
        calls.append(kwargs["key"])
        if len(calls) == 3:
            raise OSError("disk full")
        return original_add_raw(session, **kwargs)

    monkeypatch.setattr(imap_module, "add_raw", add_raw_fails_on_third)
    with pytest.raises(OSError):
        puller.poll_once()
    assert [r.raw for r in raws(store)] == sent[:2]
    assert cursor(store).last_uid == uids[1]
    assert imap_account.flags() == {uid: (DONE if uid in uids[:2] else set()) for uid in uids}

    assert puller.poll_once() == 3
    assert [r.raw for r in raws(store)] == sent
    assert imap_account.flags() == {uid: DONE for uid in uids}


# --------------------------------------------------------------- UIDVALIDITY


def test_uidvalidity_change_starts_the_folder_over(store, imap_account, make_puller):
    imap_account.create_folder("Zgloszenia")
    first = [message(), message()]
    imap_account.append_many(first, folder="Zgloszenia")
    before = imap_account.uidvalidity("Zgloszenia")
    puller = make_puller(imap_folder="Zgloszenia")
    assert puller.poll_once() == 2

    imap_account.delete_folder("Zgloszenia")
    imap_account.create_folder("Zgloszenia")
    imap_account.append_many([*first, message("po odtworzeniu")], folder="Zgloszenia")
    after = imap_account.uidvalidity("Zgloszenia")
    assert after != before, "Dovecot gave the recreated folder the same UIDVALIDITY"

    # Read again under the new UIDVALIDITY; the pipeline recognises the known Message-IDs.
    assert puller.poll_once() == 3
    keys = [r.idempotency_key for r in raws(store)]
    assert keys[2:] == [f"imap:sklep@jantar.pl:Zgloszenia:{after}:{uid}" for uid in (1, 2, 3)]
    state = cursor(store)
    assert (state.folder, state.uidvalidity, state.last_uid) == ("Zgloszenia", after, 3)
    assert puller.poll_once() == 0


# ----------------------------------------------------------- done folder


def test_move_mode_moves_saved_messages_to_the_done_folder(store, imap_account, make_puller):
    sent = [message(), message()]
    imap_account.append_many(sent)
    puller = make_puller(imap_done_folder="Obsluzone")
    assert puller.poll_once() == 2
    assert imap_account.uids() == []
    with imap_account.connect(folder="Obsluzone") as client:
        bodies = client.fetch(client.search(["ALL"]), [b"BODY.PEEK[]"])
    assert sorted(b[b"BODY[]"] for b in bodies.values()) == sorted(sent)
    assert [r.raw for r in raws(store)] == sent
    imap_account.append(message())
    assert puller.poll_once() == 1
    assert len(imap_account.uids("Obsluzone")) == 3


def test_move_mode_without_move_capability_copies_and_expunges(
        store, imap_account, make_puller, monkeypatch):
    imap_account.append_many([message(), message()])
    hide_capability(monkeypatch, "MOVE")
    puller = make_puller(imap_done_folder="Obsluzone")
    assert puller.poll_once() == 2
    assert imap_account.uids() == []
    assert len(imap_account.uids("Obsluzone")) == 2
    assert puller.poll_once() == 0


# ----------------------------------------------------------------- leases


def test_only_the_lease_holder_polls(store, imap_account, make_puller):
    imap_account.append_many([message(), message()])
    first, second = make_puller(owner="host-a:1"), make_puller(owner="host-b:2")
    assert first.poll_once() == 2
    imap_account.append(message())
    assert second.poll_once() == 0
    assert second._client is None  # a standby does not even log in
    assert cursor(store).lease_owner == "host-a:1"

    first.close()  # a clean stop hands the folder over at once
    assert second.poll_once() == 1
    assert first.poll_once() == 0
    assert cursor(store).lease_owner == "host-b:2"
    assert len(raws(store)) == 3


def test_an_expired_lease_is_taken_over_and_fences_the_old_holder(
        store, imap_account, make_puller, monkeypatch):
    clock = SteppedClock()
    sent = [message(), message()]
    imap_account.append_many(sent)
    stalled = make_puller(owner="stalled", clock=clock)
    standby = make_puller(owner="standby", clock=clock)
    original_fetch = stalled._fetch

    def fetch_then_stall(client, uids):
        bodies = original_fetch(client, uids)
        # While this process hangs, its lease runs out and the standby takes over.
        clock.at += stalled.lease_length + timedelta(seconds=1)
        assert standby.poll_once() == 2
        return bodies

    monkeypatch.setattr(stalled, "_fetch", fetch_then_stall)
    assert stalled.poll_once() == 0  # its batch write is refused: the lease is gone
    assert [r.raw for r in raws(store)] == sent
    assert cursor(store).lease_owner == "standby"
    assert stalled._client is None


def test_two_running_pullers_share_a_mailbox_without_duplicates(store, imap_account,
                                                               make_puller):
    saved = {"a": 0, "b": 0}

    def counter(name):
        return lambda: saved.__setitem__(name, saved[name] + 1)

    pullers = [make_puller(owner=name, on_saved=counter(name), limits={"poll_interval": "1s"})
               for name in saved]
    with running(pullers[0]), running(pullers[1]):
        for batch in range(3):
            imap_account.append_many([message() for _ in range(4)])
            wait_until(lambda: len(raws(store)) == 4 * (batch + 1), "all mail saved")
    assert len({r.idempotency_key for r in raws(store)}) == 12
    assert sorted(n > 0 for n in saved.values()) == [False, True]  # one did all the work


# ------------------------------------------------------------------- run()


def test_run_with_idle_picks_up_mail_while_idling_and_stops(store, imap_account, make_puller):
    # An hour between polls: only IDLE can bring the second message in time.
    puller = make_puller(limits={"poll_interval": "1h", "idle_timeout": "9m"})
    imap_account.append(message())
    with running(puller):
        wait_until(lambda: (c := cursor(store)) and c.last_success_at, "the first poll")
        assert len(raws(store)) == 1
        imap_account.append(message("W trakcie IDLE"))
        wait_until(lambda: len(raws(store)) == 2, "the message appended while idling")
    assert cursor(store).lease_owner is None  # released on a clean stop
    assert imap_account.flags() == {1: DONE, 2: DONE}


def test_run_sees_mail_that_arrived_while_it_was_busy_before_idling(
        store, imap_account, make_puller, monkeypatch):
    # Dovecot announces such mail in the answer to our STORE, and never again in the IDLE.
    puller = make_puller(limits={"poll_interval": "1h", "idle_timeout": "9m"})
    original_mark = puller._mark_done
    appended = []

    def append_while_marking(*args):
        if not appended:
            appended.append(imap_account.append(message("w trakcie oznaczania")))
        original_mark(*args)

    monkeypatch.setattr(puller, "_mark_done", append_while_marking)
    imap_account.append(message())
    with running(puller):
        wait_until(lambda: len(raws(store)) == 2, "the message that arrived while marking")


def test_run_ends_each_idle_after_idle_timeout_and_polls_again(store, imap_account, make_puller,
                                                               caplog):
    puller = make_puller(limits={"poll_interval": "1h", "idle_timeout": "1s"})
    with running(puller):
        first = wait_until(lambda: (c := cursor(store)) and c.last_success_at, "the first poll")
        wait_until(lambda: cursor(store).last_success_at > first, "a poll after the IDLE ended")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_run_renews_the_lease_while_idling(store, imap_account, make_puller):
    puller = make_puller(limits={"poll_interval": "1h", "idle_timeout": "9m"})
    puller.lease_length = timedelta(seconds=3)  # renewed every second while idling
    with running(puller):
        first = wait_until(lambda: (c := cursor(store)) and c.last_success_at and c,
                           "the first poll")
        wait_until(lambda: cursor(store).lease_until > first.lease_until, "a renewal in IDLE")
        renewed = cursor(store)
    assert renewed.last_success_at == first.last_success_at  # renewed without polling
    assert renewed.lease_owner == puller.owner


def test_run_without_idle_polls_every_interval(store, imap_account, make_puller, monkeypatch):
    hide_capability(monkeypatch, "IDLE")
    puller = make_puller(limits={"poll_interval": "1s"})
    with running(puller):
        wait_until(lambda: (c := cursor(store)) and c.last_success_at, "the first poll")
        imap_account.append(message())
        wait_until(lambda: len(raws(store)) == 1, "the next poll")


def test_run_reconnects_when_the_server_drops_the_connection(store, imap_account, make_puller):
    puller = make_puller(limits={"poll_interval": "1h"})
    with running(puller):
        wait_until(lambda: (c := cursor(store)) and c.last_success_at, "the first poll")
        time.sleep(0.5)  # let it settle into IDLE
        imap_account.server.doveadm("kick", imap_account.user)
        imap_account.append(message("po zerwaniu"))
        wait_until(lambda: len(raws(store)) == 1, "the message after reconnecting")


def test_run_survives_a_refused_login_and_never_logs_the_password(
        store, imap_account, make_puller, caplog):
    caplog.set_level(logging.DEBUG)
    puller = make_puller(imap_password="Zle-Haslo-123")
    with running(puller):
        wait_until(lambda: (c := cursor(store)) and c.last_error, "the error to be recorded")
    assert "AUTHENTICATIONFAILED" in cursor(store).last_error
    assert "Zle-Haslo-123" not in caplog.text
    assert "Zle-Haslo-123" not in cursor(store).last_error


def test_run_survives_an_unreachable_server(store, imap_account, make_puller):
    puller = make_puller(imap_port=free_port())  # nothing listens there
    with running(puller):
        wait_until(lambda: (c := cursor(store)) and c.last_error, "the error to be recorded")
    assert "Connection refused" in cursor(store).last_error or "Errno" in cursor(store).last_error


# -------------------------------------------------------------------- TLS


def test_tls_connection_verifies_the_server_certificate(store, imap_account, make_puller,
                                                        monkeypatch):
    imap_account.append(message())
    puller = make_puller(tls=True)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        puller.poll_once()  # a self-signed certificate nobody said to trust
    monkeypatch.setenv("SSL_CERT_FILE", str(imap_account.server.ca_file))
    assert puller.poll_once() == 1


def test_a_lease_held_by_a_dead_process_on_this_host_is_taken_at_once():
    import subprocess
    import sys

    from daemon.ingest.imap import default_owner, holder_is_dead
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = default_owner().split(":")[0]
    assert holder_is_dead(f"{host}:{child.pid}:abcd1234")
    assert not holder_is_dead(default_owner())                     # ourselves
    assert not holder_is_dead(f"{host}:1:abcd1234")                # alive (init)
    assert not holder_is_dead(f"other-host:{child.pid}:abcd1234")  # cannot tell: let it expire
