"""The pipeline's ORM work per record: how often it flushes, and that skipping an autoflush
never hides a pending row from the query that needed it.

The pipeline runs its reads without the autoflush when nothing of the tables they read
is pending (daemon.tickets.reading, and read_rows for its Core lookups); these tests hold
the number of flushes per record down and prove the guard still flushes whenever a
pending row could change an answer.
"""
from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from daemon.conversation import may_auto_reply
from daemon.clock import Clock
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.store.models import (AutoReplyLog, Message, OutboxMail, RawMessage, Ticket,
                                 TicketCounter)
from daemon.tickets import (Inserts, next_number, read_rows, reading,
                            ticket_of_message_id)
from tests.conftest import NOW
from tests.mailfactory import make_mail


@pytest.fixture
def flushes():
    """How many flushes each session ran, by session, while the test runs."""
    counts: dict[int, int] = {}

    def count(session, _context, _instances):
        counts[id(session)] = counts.get(id(session), 0) + 1

    event.listen(Session, "before_flush", count)
    yield counts
    event.remove(Session, "before_flush", count)


def _ticket(desk, number: str) -> Ticket:
    with desk.store.transaction() as session:
        return session.scalar(select(Ticket).where(Ticket.number == number))


def _process(desk, raw: bytes, flushes: dict) -> list[int]:
    """Save RAW, then run the pipeline; the flushes of the pipeline's sessions."""
    save_raw(desk.store, channel="smtp", key=f"smtp:{content_key(raw)}", raw=raw, now=NOW,
             mailbox="sklep@jantar.pl")
    flushes.clear()
    Pipeline(desk.config, desk.store, Clock(start=NOW)).process_pending()
    return list(flushes.values())


@pytest.fixture
def statements(desk):
    """The INSERT and UPDATE statements the store runs while the test runs, by table."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany):
        words = re.match(r"\s*(INSERT INTO|UPDATE)\s+\"?(\w+)", statement)
        if words:
            seen.append(f"{words.group(1).split()[0]} {words.group(2)}")

    engine = desk.store.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_new_ticket_and_a_reply_each_flush_once(desk, flushes, statements):
    """One flush per record, at the end: a new ticket's row is inserted once, complete
    with its routing and clocks, and its events and queued mail follow as one INSERT per
    table (daemon.tickets.Inserts). Each flush used to come after every query, and a new
    ticket used to flush itself early, then update its own row."""
    assert _process(desk, make_mail(message_id="<first@bursztyn.pl>"), flushes) == [1]
    assert statements.count("INSERT tickets") == 1 and "UPDATE tickets" not in statements
    assert statements.count("INSERT events") == 1  # created, routed, coordinator_notified
    assert statements.count("INSERT outbox") == 1  # the acknowledgement and the notice
    assert statements.count("INSERT messages") == 1  # the mail and both copies, in order
    number = desk.tickets()[0]["number"]
    with desk.store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert [e.action for e in ticket.events] == ["created", "routed",
                                                     "coordinator_notified"]
        assert ticket.tier == "L1" and ticket.first_response_due is not None
        assert [m.direction for m in ticket.messages] == ["in", "out", "out"]
        assert [o.kind for o in session.scalars(select(OutboxMail).order_by(OutboxMail.id))] \
            == ["ack", "coordinator_new"]
    reply = make_mail(subject=f"Re: [#{number}] Drukarka", message_id="<second@bursztyn.pl>",
                      in_reply_to="<first@bursztyn.pl>", references="<first@bursztyn.pl>")
    assert _process(desk, reply, flushes) == [1]
    assert statements.count("INSERT messages") == 2  # the reply and the forward's copy
    ticket = _ticket(desk, number)
    assert ticket.message_count == 5  # two in; the acknowledgement, notice and forward out
    with desk.store.transaction() as session:
        raws = list(session.scalars(select(RawMessage).order_by(RawMessage.id)))
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert [(r.status, r.ticket_id) for r in raws] == [("processed", ticket.id)] * 2
        assert session.scalar(select(func.count(OutboxMail.id))) == 3  # ack, notice, forward
        assert [e.action for e in ticket.events][-1] == "message_added"


def test_a_duplicate_is_still_found_when_saved_twice(desk):
    raw = make_mail(message_id="<twice@bursztyn.pl>")
    desk.deliver(raw, now=NOW)
    counts = desk.deliver(raw.replace(b"Drukarka", b"Drukarka!"), now=NOW)  # another key
    assert counts["duplicate"] == 1
    assert len(desk.tickets()) == 1


def test_a_pending_message_is_flushed_before_the_message_id_lookup(desk):
    """The guard: with a Message pending, the lookup flushes and finds it."""
    desk.deliver(make_mail(message_id="<seen@bursztyn.pl>"), now=NOW)
    with desk.store.transaction() as session:
        ticket = session.scalar(select(Ticket))
        session.add(Message(ticket=ticket, direction="in", kind="customer",
                            message_id="pending@bursztyn.pl", created_at=NOW))
        assert ticket_of_message_id(session, "pending@bursztyn.pl") is ticket
        session.rollback()


def test_a_pending_auto_reply_entry_counts_towards_the_limit(make_config, db_url, store, desk):
    """Two automatic mails to one address in one transaction: the second sees the first."""
    config = make_config(db_url, outbound={"auto_reply_limit_per_hour": 1})
    with store.transaction() as session:
        assert may_auto_reply(session, config, "jan.nowak@bursztyn.pl", NOW)
        assert any(isinstance(o, AutoReplyLog) for o in session.new)  # not flushed yet
        assert not may_auto_reply(session, config, "jan.nowak@bursztyn.pl", NOW)
    with store.transaction() as session:
        assert session.scalar(select(func.count(AutoReplyLog.id))) == 1


def test_a_record_s_auto_reply_entry_is_a_row_and_counts_before_it_is_written(
        make_config, db_url, store):
    """In a record's transaction (an Inserts block) the entry is a row, not an ORM object;
    a second automatic mail in the same record still sees it, and an entry older than an
    hour does not count."""
    config = make_config(db_url, outbound={"auto_reply_limit_per_hour": 2})
    with store.transaction() as session, Inserts.bound(session) as rows:
        rows.add(AutoReplyLog, address="jan.nowak@bursztyn.pl", sent_at=NOW - timedelta(hours=2))
        assert may_auto_reply(session, config, "jan.nowak@bursztyn.pl", NOW)
        assert may_auto_reply(session, config, "ewa@bursztyn.pl", NOW)
        assert not any(isinstance(o, AutoReplyLog) for o in session.new)
        assert len(rows.pending(AutoReplyLog)) == 3
        assert may_auto_reply(session, config, "jan.nowak@bursztyn.pl", NOW)
        assert not may_auto_reply(session, config, "Jan.Nowak@bursztyn.pl", NOW)
    with store.transaction() as session:
        written = session.execute(select(AutoReplyLog.address, func.count())
                                  .group_by(AutoReplyLog.address)).all()
        assert sorted(written) == [("ewa@bursztyn.pl", 1), ("jan.nowak@bursztyn.pl", 3)]


def test_reading_skips_the_flush_only_when_nothing_it_reads_is_pending(desk):
    with desk.store.transaction() as session:
        assert session.autoflush
        with reading(session, Message):
            assert not session.autoflush  # nothing pending at all
        assert session.autoflush
        session.add(AutoReplyLog(address="a@b.pl", sent_at=NOW))
        with reading(session, Message):
            assert not session.autoflush  # pending, but not what the block reads
        with reading(session, Message, AutoReplyLog):
            assert session.autoflush
        session.rollback()
    desk.deliver(make_mail(message_id="<gone@bursztyn.pl>"), now=NOW)
    with desk.store.transaction() as session:
        session.delete(session.scalar(select(AutoReplyLog)))
        with reading(session, Message):
            assert session.autoflush  # a pending delete: always flush first
        session.rollback()


def test_read_rows_flushes_only_when_what_it_reads_is_pending(desk, flushes):
    """A Core read sees a pending row of its models (the session flushes first, as its
    autoflush would), leaves other pending rows waiting, and keeps an autoflush turned off."""
    count = select(func.count(AutoReplyLog.__table__.c.id))
    desk.deliver(make_mail(message_id="<seen@bursztyn.pl>"), now=NOW)
    with desk.store.transaction() as session:
        stored = session.scalar(count)  # the acknowledgement's entry
        flushes.clear()
        session.add(AutoReplyLog(address="a@b.pl", sent_at=NOW))
        assert read_rows(session, count, {}, Message).scalar() == stored  # not what it reads
        assert not flushes and any(isinstance(o, AutoReplyLog) for o in session.new)
        with session.no_autoflush:
            assert read_rows(session, count, {}, AutoReplyLog).scalar() == stored
        assert not flushes
        assert read_rows(session, count, {}, Message, AutoReplyLog).scalar() == stored + 1
        assert sum(flushes.values()) == 1 and not session.new
        session.rollback()


def test_ticket_numbers_start_at_one_and_follow_on(store):
    with store.transaction() as session:
        assert session.scalar(select(TicketCounter)) is None
        assert next_number(session, "ABC") == "ABC-1"
        assert next_number(session, "ABC") == "ABC-2"
        assert next_number(session, "XYZ") == "XYZ-1"
    with store.transaction() as session:
        assert next_number(session, "ABC") == "ABC-3"


def test_save_raw_stores_the_record_as_before(store):
    raw = make_mail(message_id="<saved@bursztyn.pl>")
    first = save_raw(store, channel="smtp", key="smtp:one", raw=raw, now=NOW,
                     mailbox="sklep@jantar.pl", origin="test", envelope={"rcpt": ["x"]})
    again = save_raw(store, channel="smtp", key="smtp:one", raw=raw, now=NOW)
    assert first.created and not again.created and again.raw_id == first.raw_id
    with store.transaction() as session:
        record = session.get(RawMessage, first.raw_id)
        assert (record.channel, record.mailbox, record.origin, record.message_id,
                record.status, record.attempts, record.envelope, record.raw, record.size) == \
            ("smtp", "sklep@jantar.pl", "test", "saved@bursztyn.pl", "pending", 0,
             {"rcpt": ["x"]}, raw, len(raw))
        assert record.received_at == NOW


def test_a_reply_with_a_file_over_the_limit_links_it_by_its_id(make_config, db_url, store):
    """The forward links a large file by its stored id, which the flush gives it."""
    from daemon.directory import sync_directory
    from tests.conftest import Desk
    config = make_config(db_url, notifications={"attach_max_bytes": 10})
    with store.transaction() as session:
        sync_directory(session, config)
    desk = Desk(config, store)
    desk.deliver(make_mail(message_id="<start@bursztyn.pl>"), now=NOW)
    number = desk.tickets()[0]["number"]
    desk.deliver(make_mail(subject=f"Re: [#{number}]", message_id="<file@bursztyn.pl>",
                           in_reply_to="<start@bursztyn.pl>",
                           attachments=[("log.txt", "text/plain", b"x" * 100)]), now=NOW)
    with store.transaction() as session:
        forward = session.scalar(select(OutboxMail).where(OutboxMail.kind == "forward"))
        text = "".join(part.get_payload(decode=True).decode()
                       for part in message_from_bytes(forward.raw).walk()
                       if part.get_content_type() == "text/plain")
    assert re.search(rf"/tickets/{number}/attachments/\d+", text), text
    assert "attachments/None" not in text
