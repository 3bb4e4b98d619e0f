"""The first connection to a mailbox that already holds mail (`existing_mail`), against a
real Dovecot, on SQLite and on PostgreSQL (issue 20, point 3).

"archive" (the default) imports the mail there as history and takes only unseen mail
younger than `existing_unseen_live` as new; "process" takes it all as new; "skip" starts
after it and never touches it. A changed UIDVALIDITY reads the folder again as history.
The mailbox holds what a real one does: old conversations read and answered (\\Seen and
\\Answered, old Date and INTERNALDATE), whose flags the helpdesk adds to, never replaces.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from daemon.clock import Clock
from daemon.directory import sync_directory
from daemon.ingest.imap import ImapPuller
from daemon.pipeline import Pipeline
from daemon.store.models import MailboxCursor, OutboxMail, RawMessage, Ticket
from tests.conftest import NOW
from tests.mailfactory import make_mail

SEEN, ANSWERED, DONE = b"\\Seen", b"\\Answered", {b"\\Seen", b"$Helpdesk"}
OLD = datetime(2024, 3, 1, 9, 15, tzinfo=timezone.utc)
YOUNG = NOW - timedelta(days=1)   # younger than the default 3 days


def dated(message_id: str, moment: datetime, subject: str = "Drukarka nie drukuje",
          sender: str = "jan.nowak@bursztyn.pl", **headers) -> bytes:
    raw = make_mail(message_id=f"<{message_id}>", subject=subject, sender=sender, **headers)
    old_date = b"Date: Wed, 25 Nov 2026 10:00:00 +0000"
    assert old_date in raw
    return raw.replace(old_date, moment.strftime("Date: %a, %d %b %Y %H:%M:%S +0000").encode())


def put(account, raw: bytes, arrived: datetime, *, seen: bool = False,
        answered: bool = False, folder: str = "INBOX") -> None:
    """APPEND with the server's arrival time (INTERNALDATE) and flags."""
    flags = (SEEN,) * seen + (ANSWERED,) * answered
    with account.connect() as client:
        client.append(folder, raw, flags=flags, msg_time=arrived)


@pytest.fixture
def puller_for(make_config, db_url, store, imap_account):
    """puller_for(**mailbox) -> (config, ImapPuller) on this test's account, at NOW."""
    pullers = []

    def build(**mailbox):
        config = make_config(db_url, mailboxes=[imap_account.mailbox_settings(**mailbox)])
        with store.transaction() as session:
            sync_directory(session, config)
        puller = ImapPuller(config, config.mailboxes[0], store, Clock(start=NOW))
        pullers.append(puller)
        return config, puller

    yield build
    for puller in pullers:
        puller.close()


def tickets(store) -> dict[str, Ticket]:
    with store.transaction() as session:
        return {t.messages[0].message_id: t
                for t in session.scalars(select(Ticket).order_by(Ticket.id)).unique()}


def acknowledged(store) -> list[str]:
    with store.transaction() as session:
        return sorted(session.scalars(select(OutboxMail.recipients).where(
            OutboxMail.kind == "ack")).all(), key=str)


def statuses(store) -> dict[str, int]:
    with store.transaction() as session:
        return dict(session.execute(select(RawMessage.status, func.count())
                                    .group_by(RawMessage.status)).all())


def process(config, store) -> None:
    Pipeline(config, store, Clock(start=NOW)).process_pending()


def test_archive_imports_the_old_mail_and_takes_unseen_young_mail_as_new(
        store, imap_account, puller_for, caplog):
    put(imap_account, dated("old-seen@b.pl", OLD, sender="a@bursztyn.pl"), OLD, seen=True)
    put(imap_account, dated("old-unseen@b.pl", OLD, sender="b@bursztyn.pl"), OLD)
    put(imap_account, dated("young-seen@b.pl", YOUNG, sender="c@bursztyn.pl"), YOUNG,
        seen=True)
    put(imap_account, dated("young-unseen@b.pl", YOUNG, sender="d@bursztyn.pl"), YOUNG)
    # Copied onto the server lately (a young INTERNALDATE), written long ago: history.
    put(imap_account, dated("copied@b.pl", OLD, sender="e@bursztyn.pl"), YOUNG)
    config, puller = puller_for()   # existing_mail = "archive", the default

    with caplog.at_level(logging.INFO, logger="daemon.ingest.imap"):
        assert puller.poll_once() == 5
    process(config, store)

    found = tickets(store)
    history = {mid for mid, t in found.items() if t.imported}
    assert history == {"old-seen@b.pl", "old-unseen@b.pl", "young-seen@b.pl", "copied@b.pl"}
    assert all(found[mid].status == "closed" for mid in history)
    assert found["old-unseen@b.pl"].created_at == OLD
    assert found["young-unseen@b.pl"].imported is False
    assert found["young-unseen@b.pl"].status == "new"
    assert acknowledged(store) == [["d@bursztyn.pl"]]
    assert statuses(store) == {"processed": 5}
    assert [r.getMessage() for r in caplog.records if "first connection" in r.getMessage()] \
        and "5 message(s) already there" in caplog.text \
        and "4 archived as history, 1 taken as new" in caplog.text
    # Marked like any mail the helpdesk took, so a person reading the mailbox sees it.
    assert set(map(frozenset, imap_account.flags().values())) == {frozenset(DONE)}

    put(imap_account, dated("later@b.pl", OLD, sender="f@bursztyn.pl"), OLD)
    assert puller.poll_once() == 1
    process(config, store)
    assert tickets(store)["later@b.pl"].imported is False   # after the first connection: new
    assert ["f@bursztyn.pl"] in acknowledged(store)


def test_old_answered_conversations_are_history_and_keep_their_flags(
        store, imap_account, puller_for, caplog):
    """A mailbox someone has worked in for years: each conversation read and answered."""
    later = OLD + timedelta(days=2)
    put(imap_account, dated("kasa@b.pl", OLD, subject="Kasa nr 3 nie drukuje",
                            sender="a@bursztyn.pl"), OLD, seen=True, answered=True)
    put(imap_account, dated("kasa-re@b.pl", later, subject="Re: Kasa nr 3 nie drukuje",
                            sender="a@bursztyn.pl", in_reply_to="<kasa@b.pl>",
                            references="<kasa@b.pl>"), later, seen=True, answered=True)
    # Answered yesterday, so young by both dates: still history, somebody answered it.
    put(imap_account, dated("waga@b.pl", YOUNG, subject="Waga", sender="b@bursztyn.pl"),
        YOUNG, seen=True, answered=True)
    put(imap_account, dated("nowe@b.pl", YOUNG, subject="Terminal", sender="c@bursztyn.pl"),
        YOUNG)   # arrived yesterday, unread: nobody has answered it
    # Answered from a phone's preview without being opened (\Answered, not \Seen):
    # somebody answered it, so it is history too.
    put(imap_account, dated("skaner@b.pl", YOUNG, subject="Skaner", sender="d@bursztyn.pl"),
        YOUNG, answered=True)
    config, puller = puller_for()   # existing_mail = "archive", the default

    with caplog.at_level(logging.INFO, logger="daemon.ingest.imap"):
        assert puller.poll_once() == 5
    process(config, store)

    found = tickets(store)
    assert set(found) == {"kasa@b.pl", "waga@b.pl", "nowe@b.pl", "skaner@b.pl"}  # reply threads
    assert found["skaner@b.pl"].imported and found["skaner@b.pl"].status == "closed"
    kasa, waga = found["kasa@b.pl"], found["waga@b.pl"]
    assert kasa.imported and kasa.status == "closed" and kasa.message_count == 2
    assert (kasa.created_at, kasa.first_response_due) == (OLD, None)
    assert waga.imported and waga.status == "closed" and waga.created_at == YOUNG
    assert not found["nowe@b.pl"].imported and found["nowe@b.pl"].status == "new"
    assert acknowledged(store) == [["c@bursztyn.pl"]]   # nobody answered twice
    assert statuses(store) == {"processed": 5}
    assert "4 archived as history, 1 taken as new" in caplog.text
    # Marked as taken, and still marked answered: the flags are added to, never replaced.
    answered_done = DONE | {ANSWERED}
    assert imap_account.flags() == {1: answered_done, 2: answered_done, 3: answered_done,
                                    4: DONE, 5: answered_done}


def test_process_takes_the_mail_already_there_as_new_mail(store, imap_account, puller_for,
                                                          caplog):
    put(imap_account, dated("p1@b.pl", OLD, sender="a@bursztyn.pl"), OLD, seen=True)
    put(imap_account, dated("p2@b.pl", OLD, sender="b@bursztyn.pl"), OLD)
    config, puller = puller_for(existing_mail="process")

    with caplog.at_level(logging.INFO, logger="daemon.ingest.imap"):
        assert puller.poll_once() == 2
    process(config, store)

    assert not any(t.imported for t in tickets(store).values())
    assert acknowledged(store) == [["a@bursztyn.pl"], ["b@bursztyn.pl"]]
    assert "0 archived as history, 2 taken as new" in caplog.text


def test_skip_starts_after_the_mail_there_and_never_marks_it(store, imap_account, puller_for,
                                                             caplog):
    put(imap_account, dated("s1@b.pl", OLD), OLD)
    put(imap_account, dated("s2@b.pl", OLD), OLD, seen=True, answered=True)
    config, puller = puller_for(existing_mail="skip")

    with caplog.at_level(logging.INFO, logger="daemon.ingest.imap"):
        assert puller.poll_once() == 0
    assert "2 message(s) already there" in caplog.text and "all skipped" in caplog.text
    with store.transaction() as session:
        cursor = session.scalars(select(MailboxCursor)).one()
        assert (cursor.last_uid, cursor.existing_through, cursor.existing_mail) == (2, 2, "skip")

    put(imap_account, dated("s3@b.pl", OLD, sender="nowy@bursztyn.pl"), OLD)
    assert puller.poll_once() == 1
    assert puller.poll_once() == 0   # a later poll marks leftovers: not the skipped mail
    process(config, store)

    assert list(tickets(store)) == ["s3@b.pl"] and acknowledged(store) == [["nowy@bursztyn.pl"]]
    assert imap_account.flags() == {1: set(), 2: {SEEN, ANSWERED}, 3: DONE}


def test_a_first_connection_stopped_halfway_goes_on_under_the_same_rule(
        store, imap_account, puller_for, monkeypatch, caplog):
    for n in range(5):
        put(imap_account, dated(f"h{n}@b.pl", OLD, sender=f"k{n}@bursztyn.pl"), OLD)
    config, first = puller_for()
    first.batch_messages = 2
    saved_batches = []
    real_save = ImapPuller._save_batch

    def dies_after_one_batch(self, client, folder, uids):
        if saved_batches:
            raise ConnectionResetError("killed")
        saved_batches.append(uids)
        return real_save(self, client, folder, uids)
    monkeypatch.setattr(ImapPuller, "_save_batch", dies_after_one_batch)
    with pytest.raises(ConnectionResetError):
        first.poll_once()
    monkeypatch.setattr(ImapPuller, "_save_batch", real_save)
    first.close()
    assert statuses(store) == {"history": 2}

    _config, again = puller_for()
    with caplog.at_level(logging.INFO, logger="daemon.ingest.imap"):
        assert again.poll_once() == 3
    process(config, store)

    assert "going on with the mail already there" in caplog.text
    assert all(t.imported and t.status == "closed" for t in tickets(store).values())
    assert len(tickets(store)) == 5 and acknowledged(store) == []
    assert statuses(store) == {"processed": 5}


def test_a_changed_uidvalidity_reads_the_folder_again_as_history_sending_nothing(
        store, imap_account, puller_for, caplog):
    imap_account.create_folder("Zgloszenia")
    known = [dated("k1@b.pl", YOUNG, sender="a@bursztyn.pl"),
             dated("k2@b.pl", YOUNG, sender="b@bursztyn.pl")]
    for raw in known:
        put(imap_account, raw, YOUNG, folder="Zgloszenia")
    config, puller = puller_for(imap_folder="Zgloszenia", existing_mail="process")
    assert puller.poll_once() == 2
    process(config, store)
    before = acknowledged(store)
    assert len(before) == 2

    imap_account.delete_folder("Zgloszenia")
    imap_account.create_folder("Zgloszenia")
    for raw in known:
        put(imap_account, raw, YOUNG, folder="Zgloszenia")
    # Never seen by the helpdesk, old and unseen: under "process" it would be answered.
    put(imap_account, dated("never@b.pl", OLD, sender="stary@bursztyn.pl"), OLD,
        folder="Zgloszenia")
    with caplog.at_level(logging.WARNING, logger="daemon.ingest.imap"):
        assert puller.poll_once() == 3
    process(config, store)

    assert "UIDVALIDITY changed" in caplog.text and "again as history" in caplog.text
    found = tickets(store)
    assert len(found) == 3 and found["never@b.pl"].imported
    assert not found["k1@b.pl"].imported and found["k1@b.pl"].message_count == \
        found["k2@b.pl"].message_count
    assert acknowledged(store) == before
    assert statuses(store) == {"processed": 3, "duplicate": 2}
