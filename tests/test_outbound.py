"""Outgoing mail: queued in the ticket's transaction, delivered through a real aiosmtpd relay.

Time is handed in: each sender pass gets a Clock started at the instant the test wants.
"""
from __future__ import annotations

import json
import mailbox
import re
import threading
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import jinja2
import pytest
from sqlalchemy import func, select

from daemon import cli
from daemon import config as config_module
from daemon.clock import Clock
from daemon.directory import sync_directory
from daemon.outbound.config import outbound_config
from daemon.outbound.outbox import OutgoingAttachment, enqueue
from daemon.outbound.render import TemplateMissing, render_mail
from daemon.outbound.sender import claim_next, send_pending
from daemon.outbound.transport import MaildirTransport, make_transport
from daemon.rules.classify import LOOP_HEADER
from daemon.store import Store
from daemon.store.models import Event, Message, OutboxMail, Ticket
from daemon.tickets import Inserts, next_number, record_event
from tests.conftest import NOW
from tests.tomlwrite import write_config

CUSTOMER = "jan.nowak@bursztyn.pl"
COORDINATOR = "koordynator@jantar.pl"


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def relay_config(make_config, store, smtp_sink):
    """A configuration sending through the sink, with the directory synced into the store."""

    def build(**outbound):
        config = make_config(store.url, outbound={
            "transport": "smtp", "smtp_host": smtp_sink.host, "smtp_port": smtp_sink.port,
            "timeout": "10s", **outbound})
        with store.transaction() as session:
            sync_directory(session, config)
        return config

    return build


def open_ticket(store: Store, subject: str = "Drukarka fiskalna nie drukuje",
                mailbox: str = "serwis@jantar.pl") -> str:
    with store.transaction() as session:
        ticket = Ticket(number=next_number(session, "JAN"), subject=subject, status="new",
                        tier="L1", priority="normal", requester_email=CUSTOMER,
                        requester_name="Jan Nowak", channel="email", mailbox=mailbox,
                        language="pl", held=False, message_count=0, created_at=NOW,
                        updated_at=NOW)
        session.add(ticket)
        return ticket.number


def queue(store: Store, config, number: str | None = None, *, now=NOW, **fields) -> OutboxMail:
    fields = {"kind": "ack", "to": [CUSTOMER], "subject": "Przyjęliśmy zgłoszenie",
              "text": "Dzień dobry,\nzgłoszenie przyjęte.\n", **fields}
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number)) if number else None
        return enqueue(session, config, now=now, ticket=ticket, **fields)


def send(config, store, at=NOW, **kwargs) -> Counter:
    return send_pending(config, store, Clock(start=at), **kwargs)


def outbox(store: Store) -> list[OutboxMail]:
    with store.transaction() as session:
        return list(session.scalars(select(OutboxMail).order_by(OutboxMail.id)))


def events(store: Store, number: str, action: str = "delivery_failed") -> list[Event]:
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        return [e for e in ticket.events if e.action == action]


def by_message_id(sink) -> Counter:
    return Counter(caught.message["Message-ID"] for caught in sink.messages)


def text_of(mail) -> str:
    return mail.get_body(("plain",)).get_content().replace("\r\n", "\n")


def close_to(actual: timedelta, expected: timedelta) -> bool:
    # The Clock runs on from its start while a pass works; a few seconds cover that.
    return abs(actual - expected) < timedelta(seconds=5)


# -- building and delivering one mail ------------------------------------------------------------
def test_queued_mail_reaches_the_relay_exactly_with_threading_headers(store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    row = queue(store, config, number, subject="Zgłoszenie przyjęte: żółta kartka",
                from_name="Serwis Jantar — Łódź", in_reply_to="<zgl-1@bursztyn.pl>",
                references=["root@bursztyn.pl"], auto_submitted="auto-replied",
                html="<p>Dzień dobry, <b>przyjęte</b></p>", message_kind="auto")

    assert send(config, store) == Counter(sent=1)

    [caught] = smtp_sink.messages
    assert caught.raw == row.raw  # the exact bytes queued, nothing re-rendered
    assert caught.raw.isascii()   # Polish goes as RFC 2047 and quoted-printable
    assert caught.mail_from == "serwis@jantar.pl" and caught.rcpt_tos == (CUSTOMER,)
    mail = caught.message
    sender = mail["From"].addresses[0]
    assert (sender.addr_spec, sender.display_name) == ("serwis@jantar.pl", "Serwis Jantar — Łódź")
    assert mail["Subject"] == f"[#{number}] Zgłoszenie przyjęte: żółta kartka"
    assert mail["Message-ID"] == f"<{row.message_id}>"
    assert row.message_id.endswith("@jantar.pl")
    assert mail["In-Reply-To"] == "<zgl-1@bursztyn.pl>"
    assert mail["References"] == "<root@bursztyn.pl> <zgl-1@bursztyn.pl>"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail[LOOP_HEADER]
    assert mail["Date"].datetime == NOW
    assert mail.get_content_type() == "multipart/alternative"
    assert text_of(mail) == "Dzień dobry,\nzgłoszenie przyjęte.\n"
    assert "<b>przyjęte</b>" in mail.get_body(("html",)).get_content()

    [sent] = outbox(store)
    assert (sent.status, sent.attempts, sent.sent_at is not None) == ("sent", 1, True)
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        [message] = ticket.messages
        assert (message.direction, message.kind) == ("out", "auto")
        assert message.message_id == row.message_id
        assert message.in_reply_to == "zgl-1@bursztyn.pl"
        assert message.references == ["root@bursztyn.pl", "zgl-1@bursztyn.pl"]
        assert message.subject == mail["Subject"] and message.to == [CUSTOMER]
        assert ticket.message_count == 1


def test_header_values_cannot_smuggle_headers_or_recipients(store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    queue(store, config, number, subject="Awaria\r\nBcc: x@evil.example",
          from_name="Jantar\r\nBcc: y@evil.example", auto_submitted="auto-replied\nX-Evil: 1")

    assert send(config, store) == Counter(sent=1)

    [caught] = smtp_sink.messages
    assert caught.rcpt_tos == (CUSTOMER,)
    header_lines = caught.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert not [line for line in header_lines if line.lower().startswith((b"bcc", b"x-evil"))]
    assert caught.message["Subject"] == f"[#{number}] Awaria Bcc: x@evil.example"
    assert caught.message["Bcc"] is None


def test_an_address_with_a_line_break_is_refused_not_sent(store, relay_config):
    config = relay_config()
    with pytest.raises(ValueError, match="not an email address"):
        queue(store, config, to=[f"{CUSTOMER}\r\nBcc: x@evil.example"])
    with pytest.raises(ValueError, match="not an email address"):
        queue(store, config, reply_to="serwis@jantar.pl\nX-Evil: 1")
    assert outbox(store) == []


def test_non_ascii_address_goes_out_with_smtputf8(store, relay_config, smtp_sink):
    config = relay_config()
    row = queue(store, config, to=["łukasz@bursztyn.pl"], cc=["anna@bursztyn.pl"])

    assert send(config, store) == Counter(sent=1)

    [caught] = smtp_sink.messages
    assert caught.rcpt_tos == ("łukasz@bursztyn.pl", "anna@bursztyn.pl")
    assert "To: łukasz@bursztyn.pl\r\n".encode() in caught.raw  # a UTF-8 header (RFC 6532)
    assert caught.message["Message-ID"] == f"<{row.message_id}>"


def test_subject_tag_is_not_repeated_and_attachments_make_mixed(store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    queue(store, config, number, subject=f"Re: [#{number}] Drukarka", html="<p>zdjęcie</p>",
          attachments=[OutgoingAttachment("paragon.pdf", "application/pdf", b"%PDF-1.4 test")])

    send(config, store)

    mail = smtp_sink.messages[0].message
    assert mail["Subject"] == f"Re: [#{number}] Drukarka"
    assert mail.get_content_type() == "multipart/mixed"
    [attachment] = list(mail.iter_attachments())
    assert (attachment.get_filename(), attachment.get_content()) == ("paragon.pdf", b"%PDF-1.4 test")
    with store.transaction() as session:
        [message] = session.scalar(select(Ticket).where(Ticket.number == number)).messages
        assert [a.filename for a in message.attachments] == ["paragon.pdf"]


def test_from_defaults_to_the_first_mailbox_and_copies_can_stay_off_the_ticket(store, relay_config,
                                                                                smtp_sink):
    config = relay_config()
    number = open_ticket(store, mailbox=None)
    queue(store, config, number, record_on_ticket=False)
    queue(store, config, to=[COORDINATOR], kind="notice")  # no ticket at all

    assert send(config, store) == Counter(sent=2)

    assert [c.mail_from for c in smtp_sink.messages] == ["sklep@jantar.pl", "sklep@jantar.pl"]
    assert not smtp_sink.messages[1].message["Subject"].startswith("[#")
    with store.transaction() as session:
        assert session.scalars(select(Message)).all() == []


def unique_parts(raw: bytes, message_id: str) -> bytes:
    """RAW with its Message-ID and MIME boundaries (random in every mail) blanked."""
    return re.sub(rb"=_jantar_[0-9a-f]+", b"=_jantar_X", raw.replace(message_id.encode(), b"X"))


def test_a_mail_queued_as_plain_rows_is_stored_as_through_the_orm(store, relay_config):
    # The SLA sweep queues its notices through daemon.tickets.Inserts (one INSERT per
    # table); the rows must be the ones the ORM path writes, but for ids and Message-ID.
    config = relay_config()
    number = open_ticket(store)
    fields = {"kind": "sla_warning", "now": NOW, "to": [CUSTOMER, COORDINATOR],
              "subject": "Zbliża się termin SLA", "text": "Termin: 15:00\n",
              "html": "<p>Termin: <b>15:00</b></p>", "in_reply_to": "<zgl-1@bursztyn.pl>",
              "references": ["root@bursztyn.pl"], "auto_submitted": "auto-generated"}
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        through_orm = enqueue(session, config, ticket=ticket, **fields).message_id
        rows, pending = Inserts(), set(session.new)
        plain = enqueue(session, config, ticket=ticket, into=rows, **fields)["message_id"]
        assert len(rows) == 2 and set(session.new) == pending  # the mail and its copy, as rows
        record_event(session, ticket, "sla_warning", NOW, clock="first_response", to=[CUSTOMER])
        rows.event(ticket, "sla_warning", NOW, clock="first_response", to=[CUSTOMER])
        rows.write(session)

    def columns(row, skip=("id",)) -> dict:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}

    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert ticket.message_count == 2
        mails = {m.message_id: m for m in session.scalars(select(OutboxMail))}
        copies = {m.message_id: m for m in ticket.messages}
        assert set(mails) == set(copies) == {through_orm, plain}
        a, b = mails[through_orm], mails[plain]
        assert columns(a, ("id", "message_id", "raw")) == columns(b, ("id", "message_id", "raw"))
        assert unique_parts(a.raw, through_orm) == unique_parts(b.raw, plain)
        assert columns(copies[through_orm], ("id", "message_id")) == \
            columns(copies[plain], ("id", "message_id"))
        orm_event, plain_event = [e for e in ticket.events if e.action == "sla_warning"]
        assert columns(orm_event) == columns(plain_event)
        assert plain_event.detail == {"clock": "first_response", "to": [CUSTOMER]}


def test_a_mail_with_files_is_an_orm_row_after_the_rows_queued_before_it(store, relay_config):
    # A copy with files needs its id for its attachments: enqueue writes the rows queued
    # so far, then adds the mail through the ORM, so the ticket's messages keep the order
    # they were queued in.
    config = relay_config()
    number = open_ticket(store)
    fields = {"kind": "relay", "now": NOW, "to": [CUSTOMER], "text": "Proszę.\n"}
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        rows = Inserts()
        first = enqueue(session, config, ticket=ticket, into=rows, subject="first", **fields)
        second = enqueue(session, config, ticket=ticket, into=rows, subject="second", **fields,
                         attachments=[OutgoingAttachment("a.pdf", "application/pdf", b"%PDF")])
        assert isinstance(first, dict) and isinstance(second, OutboxMail)
        assert len(rows) == 0  # the first mail's rows are in the store already
        third = enqueue(session, config, ticket=ticket, into=rows, subject="third", **fields)
        rows.write(session)
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert [m.message_id for m in ticket.messages] == \
            [first["message_id"], second.message_id, third["message_id"]]
        assert [a.filename for a in ticket.messages[1].attachments] == ["a.pdf"]
        assert ticket.message_count == 3


def test_a_bound_block_collects_events_and_mail_as_rows_and_drops_them_on_error(store,
                                                                                 relay_config):
    config = relay_config()
    number = open_ticket(store)
    fields = {"kind": "relay", "now": NOW, "to": [CUSTOMER], "subject": "Odp.", "text": "Tak.\n"}
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        with Inserts.bound(session) as rows:
            assert isinstance(record_event(session, ticket, "first", NOW), dict)
            assert isinstance(enqueue(session, config, ticket=ticket, **fields), dict)
            assert len(rows) == 3 and not session.new  # event, mail, copy: nothing in the ORM
            # A mail of no ticket beside it: one executemany, its ticket_id NULL.
            assert isinstance(enqueue(session, config, **fields), dict)
            with pytest.raises(RuntimeError):
                with Inserts.bound(session):
                    pass
        assert isinstance(record_event(session, ticket, "after", NOW), Event)  # unbound again
    with pytest.raises(LookupError):
        with store.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == number))
            with Inserts.bound(session):
                record_event(session, ticket, "lost", NOW)
                raise LookupError
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        assert [e.action for e in ticket.events] == ["first", "after"]
        assert [m.ticket_id for m in session.scalars(select(OutboxMail).order_by(OutboxMail.id))] \
            == [ticket.id, None]
        assert ticket.message_count == 1


# -- Maildir, the embedded default -----------------------------------------------------------
def test_maildir_is_the_default_and_writes_readable_files(store, make_config, tmp_path):
    default = make_config(store.url)
    assert outbound_config(default).transport == "maildir"
    assert outbound_config(default).maildir == default.data_dir / "sent"
    assert isinstance(make_transport(outbound_config(default)), MaildirTransport)

    config = make_config(store.url, outbound={"maildir": str(tmp_path / "sent")})
    number = open_ticket(store)
    rows = [queue(store, config, number, subject=f"Wiadomość {i}") for i in range(2)]

    assert send(config, store) == Counter(sent=2)

    folder = mailbox.Maildir(tmp_path / "sent", create=False)
    files = sorted(folder, key=lambda m: m["Subject"])
    assert [m["Message-ID"] for m in files] == [f"<{r.message_id}>" for r in rows]
    assert files[0]["Return-Path"] == "<serwis@jantar.pl>"
    assert files[0]["X-Envelope-To"] == CUSTOMER
    assert not list((tmp_path / "sent" / "tmp").iterdir())


# -- temporary failures ----------------------------------------------------------------------
def test_relay_busy_retries_with_growing_backoff_then_sends_each_once(store, relay_config, smtp_sink):
    config = relay_config(backoff_initial="1m", backoff_max="4m")
    number = open_ticket(store)
    rows = [queue(store, config, number, subject=f"Mail {i}") for i in range(3)]
    smtp_sink.refuse("451 4.3.0 Relay busy, try again later")

    delays, at = [], NOW
    for attempt in range(1, 5):
        assert send(config, store, at) == Counter(retry=3)
        pending = outbox(store)
        assert {(m.status, m.attempts) for m in pending} == {("pending", attempt)}
        assert all("451" in m.last_error for m in pending)
        delays.append(pending[0].next_attempt_at - at)
        assert send(config, store, at + timedelta(seconds=30)) == Counter()  # not due yet
        at = pending[0].next_attempt_at + timedelta(seconds=1)
    expected = [timedelta(minutes=m) for m in (1, 2, 4, 4)]  # doubling, capped at backoff_max
    assert all(close_to(d, e) for d, e in zip(delays, expected)), delays

    smtp_sink.accept()
    assert send(config, store, at) == Counter(sent=3)
    assert send(config, store, at + timedelta(hours=1)) == Counter()
    assert by_message_id(smtp_sink) == Counter(f"<{r.message_id}>" for r in rows)
    assert all(m.status == "sent" and m.attempts == 5 for m in outbox(store))


def test_relay_down_for_an_hour_loses_nothing_and_sends_each_once(store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    rows = [queue(store, config, number, subject=f"Mail {i}") for i in range(3)]
    smtp_sink.stop()

    for minutes in range(0, 61, 10):
        # Connection refused: one attempt shows the relay is down; the rest wait their turn.
        assert send(config, store, NOW + timedelta(minutes=minutes)) == Counter(retry=1)
    waiting = outbox(store)
    assert {m.status for m in waiting} == {"pending"}
    assert sum(m.attempts for m in waiting) == 7
    assert all("Connection refused" in m.last_error for m in waiting)

    smtp_sink.start()
    assert send(config, store, NOW + timedelta(hours=1, minutes=10)) == Counter(sent=3)
    assert by_message_id(smtp_sink) == Counter(f"<{r.message_id}>" for r in rows)
    assert send(config, store, NOW + timedelta(hours=3)) == Counter()
    assert len(smtp_sink.messages) == 3


def test_temporary_failures_past_retry_for_fail_the_mail(store, relay_config, smtp_sink):
    config = relay_config(retry_for="1h", backoff_initial="10m", backoff_max="1h")
    number = open_ticket(store)
    queue(store, config, number)
    smtp_sink.refuse("451 4.7.1 Greylisted")

    assert send(config, store) == Counter(retry=1)
    assert send(config, store, NOW + timedelta(minutes=10, seconds=1)) == Counter(retry=1)
    # The next attempt falls on the deadline, not past it.
    [mail] = outbox(store)
    assert mail.next_attempt_at <= NOW + timedelta(hours=1)

    assert send(config, store, NOW + timedelta(hours=1, seconds=1))["failed"] == 1
    original = outbox(store)[0]
    assert original.status == "failed" and "gave up after 3 attempts" in original.last_error
    [event] = events(store, number)
    assert event.detail["recipients"] == [CUSTOMER] and "451" in event.detail["error"]


# -- permanent failures ----------------------------------------------------------------------
def test_permanent_refusal_fails_records_event_and_tells_the_coordinator(store, relay_config,
                                                                         smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    row = queue(store, config, number)
    smtp_sink.refuse("550 5.1.1 No such user", stage="RCPT", recipients=[CUSTOMER])

    # The notice is queued in the same transaction and, being due, sent in the same pass.
    assert send(config, store) == Counter(failed=1, sent=1)

    failed, notice = outbox(store)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "550 5.1.1 No such user" in failed.last_error
    [event] = events(store, number)
    assert event.detail["recipients"] == [CUSTOMER]
    assert event.detail["message_id"] == row.message_id
    assert "550" in event.detail["error"]
    assert (notice.kind, notice.recipients, notice.status) == ("delivery_failed", [COORDINATOR], "sent")
    [caught] = smtp_sink.messages
    assert caught.rcpt_tos == (COORDINATOR,)
    assert caught.message["Subject"] == f"Nie doręczono wiadomości: [#{number}] Przyjęliśmy zgłoszenie"
    assert caught.message["Auto-Submitted"] == "auto-generated"
    body = text_of(caught.message)
    assert CUSTOMER in body and "550 5.1.1 No such user" in body and row.message_id in body


def test_a_failing_notice_gets_no_notice_of_its_own(store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    queue(store, config, number)
    smtp_sink.refuse("550 5.7.1 Relaying denied", stage="RCPT")

    assert send(config, store) == Counter(failed=2)
    assert send(config, store, NOW + timedelta(days=3)) == Counter()

    assert [(m.kind, m.status) for m in outbox(store)] == [("ack", "failed"),
                                                           ("delivery_failed", "failed")]
    assert len(events(store, number)) == 2
    assert smtp_sink.messages == []


def test_some_recipients_refused_sends_to_the_rest_once_and_reports_the_others(
        store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    queue(store, config, number, cc=["kierownik@bursztyn.pl"])
    smtp_sink.refuse("550 5.1.1 No such user", stage="RCPT", recipients=["kierownik@bursztyn.pl"])

    assert send(config, store) == Counter(sent=2)  # the mail, and the notice about kierownik

    mail, notice = outbox(store)
    assert mail.status == "sent" and "kierownik@bursztyn.pl" in mail.last_error
    assert [e.detail["recipients"] for e in events(store, number)] == [["kierownik@bursztyn.pl"]]
    assert notice.kind == "delivery_failed"
    assert [c.rcpt_tos for c in smtp_sink.messages] == [(CUSTOMER,), (COORDINATOR,)]


# -- never twice -----------------------------------------------------------------------------
def test_two_senders_at_once_never_send_a_mail_twice(store, relay_config, smtp_sink):
    config = relay_config()
    number = open_ticket(store)
    rows = [queue(store, config, number, subject=f"Mail {i}") for i in range(12)]
    stores = [Store(store.url), Store(store.url)]
    results: list[Counter] = []

    def sender(own_store):
        results.append(send(config, own_store))

    threads = [threading.Thread(target=sender, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for own_store in stores:
        own_store.dispose()

    assert sum(results, Counter()) == Counter(sent=12)
    assert send(config, store, NOW + timedelta(hours=1)) == Counter()
    assert by_message_id(smtp_sink) == Counter(f"<{r.message_id}>" for r in rows)


def test_a_row_locked_by_another_postgresql_sender_is_skipped_not_waited_for(store, relay_config):
    if store.backend != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite serialises claims with its write lock")
    config = relay_config()
    outbound = outbound_config(config)
    first, second = queue(store, config), queue(store, config)
    other = Store(store.url)
    try:
        with other.transaction() as session:
            # Another daemon is in the middle of claiming the first row.
            session.scalar(select(OutboxMail).where(OutboxMail.id == first.id).with_for_update())
            claim = claim_next(store, outbound, NOW)
    finally:
        other.dispose()
    assert claim.id == second.id


def test_a_claimed_mail_is_left_alone_for_its_lease_then_retried(store, relay_config, smtp_sink):
    config = relay_config()
    outbound = outbound_config(config)
    queue(store, config)

    # A sender claims the mail and dies before sending it.
    assert claim_next(store, outbound, NOW) is not None
    assert claim_next(Store(store.url), outbound, NOW) is None
    assert send(config, store, NOW + timedelta(minutes=1)) == Counter()

    assert send(config, store, NOW + outbound.lease + timedelta(seconds=1)) == Counter(sent=1)
    assert len(smtp_sink.messages) == 1
    assert outbox(store)[0].attempts == 2


def test_send_job_runs_in_the_daemon(store, relay_config, smtp_sink):
    from daemon.service import Daemon
    config = relay_config()
    queue(store, config)
    daemon = Daemon(config, store, Clock(start=NOW))
    [job] = [j for j in daemon.jobs if j.name == "send"]
    assert job.run() == Counter(sent=1)
    assert len(smtp_sink.messages) == 1


# -- the outbox command ----------------------------------------------------------------------
def test_outbox_command_lists_mail_as_json(config_file, capsys):
    path = config_file()
    config = config_module.load(path, env={})
    store = Store(config.database_url)
    with store.transaction() as session:
        sync_directory(session, config)
    number = open_ticket(store)
    sent = queue(store, config, number)
    pending = queue(store, config, to=[COORDINATOR], kind="notice", subject="Bez zgłoszenia",
                    now=NOW + timedelta(minutes=1))
    assert send(config, store, NOW, limit=1) == Counter(sent=1)  # the maildir default
    store.dispose()

    assert cli.main(["--config", str(path), "outbox", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["sent", "pending"]
    first, second = rows
    assert first["to"] == [CUSTOMER]
    assert first["subject"] == f"[#{number}] Przyjęliśmy zgłoszenie"
    assert (first["attempts"], first["ticket"], first["kind"]) == (1, number, "ack")
    assert first["message_id"] == sent.message_id
    assert first["last_error"] is None and first["next_attempt_at"] is None
    assert first["created_at"] == "2026-11-25T11:00:00+01:00"  # config.tz, Warsaw in winter
    assert first["sent_at"].endswith("+01:00")
    assert (second["ticket"], second["attempts"], second["sent_at"]) == (None, 0, None)
    assert second["next_attempt_at"] == "2026-11-25T11:01:00+01:00"
    assert second["message_id"] == pending.message_id

    assert cli.main(["--config", str(path), "outbox", "--json", "--status", "pending"]) == 0
    assert [r["kind"] for r in json.loads(capsys.readouterr().out)] == ["notice"]


# -- templates -------------------------------------------------------------------------------
@pytest.fixture
def plain_config(make_config):
    """A configuration for tests that never open the store."""
    return make_config("sqlite:///unused.db")


ACK_CONTEXT = {"ticket": SimpleNamespace(number="JAN-12", subject="Kasa <3> nie działa"),
               "requester_name": "Jan Nowak", "mailbox": "sklep@jantar.pl"}


def test_ack_renders_in_polish_and_english(plain_config):
    polish = render_mail(plain_config, "ack", "pl", **ACK_CONTEXT)
    english = render_mail(plain_config, "ack", "en", **ACK_CONTEXT)

    assert polish.subject == "Przyjęliśmy zgłoszenie: Kasa <3> nie działa"
    assert english.subject == "Ticket received: Kasa <3> nie działa"
    for part in (polish.text, polish.html, english.text, english.html):
        assert "JAN-12" in part and "[#JAN-12]" in part and "http://helpdesk.test/" in part
    assert "zostaw w temacie numer [#JAN-12]" in polish.text
    assert "koordynator przydzieli" in polish.text and "L1, L2 lub L3" in polish.text
    assert "keep the number [#JAN-12] in the subject" in english.text
    assert "L1, L2 or L3" in english.text
    assert 'lang="pl"' in polish.html and 'lang="en"' in english.html
    assert "Kasa &lt;3&gt; nie działa" in polish.html   # escaped in HTML ...
    assert "Kasa <3> nie działa" in polish.text          # ... and only there


def test_missing_language_falls_back_to_the_default(plain_config):
    assert render_mail(plain_config, "ack", "de", **ACK_CONTEXT).subject.startswith("Przyjęliśmy")
    assert render_mail(plain_config, "ack", "../en", **ACK_CONTEXT).subject.startswith("Przyjęliśmy")
    with pytest.raises(TemplateMissing):
        render_mail(plain_config, "no_such_mail", "pl")


def test_a_variable_the_caller_forgot_is_an_error(plain_config):
    with pytest.raises(jinja2.UndefinedError, match="requester_name"):
        render_mail(plain_config, "ack", "pl", ticket=ACK_CONTEXT["ticket"], mailbox="sklep@jantar.pl")


def test_templates_dir_overrides_file_by_file(make_config, tmp_path):
    (tmp_path / "mine" / "pl").mkdir(parents=True)
    (tmp_path / "mine" / "pl" / "ack.subject.txt").write_text("Mamy to: {{ ticket.number }}\n",
                                                              encoding="utf-8")
    config = make_config("sqlite:///unused.db", outbound={"templates_dir": str(tmp_path / "mine")})
    rendered = render_mail(config, "ack", "pl", **ACK_CONTEXT)
    assert rendered.subject == "Mamy to: JAN-12"
    assert "zostaw w temacie numer" in rendered.text  # the rest is built in


# -- configuration -----------------------------------------------------------------------------
def test_outbound_problems_are_named_by_key(make_config):
    with pytest.raises(config_module.ConfigError) as caught:
        make_config("sqlite:///unused.db", outbound={
            "transport": "pigeon", "smtp_port": "25", "retry_for": "soon", "smtp_tls": "maybe",
            "backoff_initial": "2h", "backoff_max": "1h", "colour": "blue"})
    problems = caught.value.problems
    for key in ("transport", "smtp_port", "retry_for", "smtp_tls", "backoff_max", "colour"):
        assert any(p.startswith(f"outbound.{key}: ") for p in problems), (key, problems)
    assert "outbound.smtp_port: must be int, got '25'" in problems


def test_tls_follows_the_port_and_passwords_need_it(make_config):
    def outbound(**section):
        return outbound_config(make_config("sqlite:///unused.db", outbound=section), env={})

    assert outbound(transport="smtp").smtp_tls == "none"
    assert outbound(smtp_port=587).smtp_tls == "starttls"
    assert outbound(smtp_port=465).smtp_tls == "tls"
    assert outbound(smtp_port=587, smtp_tls="none").smtp_tls == "none"
    with pytest.raises(config_module.ConfigError, match="outbound.smtp_tls: .*unencrypted"):
        make_config("sqlite:///unused.db", outbound={"smtp_host": "relay.example.net",
                                                      "smtp_user": "u", "smtp_password": "p"})


def test_check_config_reports_outbound_problems(tmp_path, capsys):
    path = write_config(tmp_path / "bad.toml", {"outbound": {"smtp_port": 0, "retry_for": "x"}})
    assert cli.main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "outbound.smtp_port: must be a port number" in err and "outbound.retry_for" in err

