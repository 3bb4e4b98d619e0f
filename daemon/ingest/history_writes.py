"""Write a filed batch of imported history: one statement per table, rows as parameters.

Tickets and messages take their ids first (daemon.store.ids: the next table points at
them); every table's rows then go in as one executemany, or one COPY on PostgreSQL for
many rows (`daemon.tickets.copy_rows`). No ORM object, no unit of work, no rendered
mail: a batch of 200 mails costs a dozen statements.
"""
from __future__ import annotations

import functools
import hashlib
from datetime import datetime

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

from daemon.ingest.history_filing import BatchFiling, Filed, HistoryTicket
from daemon.parse import ParsedAttachment
from daemon.store.ids import allocate_ids
from daemon.store.models import Attachment, Blob, Event, Message, Participant, RawMessage, Ticket
from daemon.tickets import COPY_FROM, _insert_ignoring, _message_values, _text, copy_rows, \
    reserve_numbers

_TICKETS, _MESSAGES, _RAWS = Ticket.__table__, Message.__table__, RawMessage.__table__
_TOUCHED = (update(_TICKETS).where(_TICKETS.c.id == bindparam("ticket_id"))
            .values(message_count=_TICKETS.c.message_count + bindparam("added"),
                    updated_at=bindparam("latest")))
# SET: the parameters' keys other than raw_id (see daemon/pipeline.py _FINISH).
_OUTCOME = update(_RAWS).where(_RAWS.c.id == bindparam("raw_id"))
_RELEASE = (update(_RAWS).where(_RAWS.c.id.in_(bindparam("ids", expanding=True)))
            .values(status="pending"))


def write_batch(session: Session, filing: BatchFiling, prefix: str, now: datetime) -> None:
    """Store what FILING decided, in SESSION's transaction."""
    _insert_tickets(session, filing.new_tickets, prefix)
    _update_touched(session, filing.touched)
    _insert_people(session, filing)
    kept = [f for f in filing.filed if not f.duplicate]
    message_ids = _insert_messages(session, kept)
    _insert_files(session, kept, message_ids)
    _insert_events(session, filing, kept, now)


def _insert_tickets(session: Session, tickets: list[HistoryTicket], prefix: str) -> None:
    if not tickets:
        return
    for ticket, number in zip(tickets, reserve_numbers(session, prefix, len(tickets))):
        ticket.number = number
    ids = allocate_ids(session.connection(), _TICKETS, len(tickets))
    for ticket, ticket_id in zip(tickets, ids):
        ticket.id = ticket_id
    _insert_rows(session, _TICKETS, [_ticket_row(t) for t in tickets])


def _ticket_row(ticket: HistoryTicket) -> dict:
    # Closed, with no clock: no due time, no alarm, nothing for the SLA sweep to find.
    return dict(id=ticket.id, number=ticket.number, subject=_text(ticket.subject, 2000),
                status="closed", tier="L1", priority="normal", category=None,
                client_id=ticket.client.id if ticket.client else None, assignee_id=None,
                requester_email=_text(ticket.requester_email, 320),
                requester_name=_text(ticket.requester_name, 300), channel="email",
                mailbox=ticket.mailbox, language=ticket.language, held=False,
                message_count=ticket.added_messages, created_at=ticket.created_at,
                updated_at=ticket.updated_at, imported=True, sla_paused_seconds=0)


def _update_touched(session: Session, tickets: list[HistoryTicket]) -> None:
    if tickets:
        session.connection().execute(_TOUCHED, [
            {"ticket_id": t.id, "added": t.added_messages, "latest": t.updated_at}
            for t in tickets])


def _insert_people(session: Session, filing: BatchFiling) -> None:
    new = [_person_row(t, p) for t in filing.new_tickets for p in t.added_people]
    _insert_rows(session, Participant.__table__, new)
    # The store's imported tickets: a person may have joined meanwhile (a second process).
    joined = [_person_row(t, p) for t in filing.touched for p in t.added_people]
    if joined:
        session.connection().execute(_ignoring(session, Participant), joined)


def _person_row(ticket: HistoryTicket, person) -> dict:
    return {"ticket_id": ticket.id, "email": _text(person.email, 320),
            "name": _text(person.name, 300), "role": person.role}


def _insert_messages(session: Session, kept: list[Filed]) -> list[int]:
    if not kept:
        return []
    ids = allocate_ids(session.connection(), _MESSAGES, len(kept))
    _insert_rows(session, _MESSAGES, [
        {**_message_values(f.record.mail, kind=f.kind, direction="in", now=f.date),
         "id": message_id, "ticket_id": f.ticket.id, "raw_id": f.record.raw_id, "held": False}
        for f, message_id in zip(kept, ids)])
    return ids


def _insert_files(session: Session, kept: list[Filed], message_ids: list[int]) -> None:
    blobs: dict[str, dict] = {}
    files = []
    for filed, message_id in zip(kept, message_ids):
        for attachment in filed.record.mail.attachments:
            digest = None
            if not attachment.truncated:
                digest = file_digest(attachment)
                blobs.setdefault(digest, {"sha256": digest, "size": len(attachment.data),
                                          "data": attachment.data})
            files.append(dict(message_id=message_id,
                              filename=_text(attachment.filename, 500),
                              content_type=_text(attachment.content_type, 200),
                              size=attachment.size or len(attachment.data),
                              sha256=digest or "", blob_sha256=digest,
                              content_id=attachment.content_id, inline=attachment.inline))
    if blobs:  # stored once per content, whoever stored it first
        session.connection().execute(_ignoring(session, Blob), list(blobs.values()))
    _insert_rows(session, Attachment.__table__, files)


def file_digest(attachment: ParsedAttachment) -> str:
    """The SHA-256 of a parsed file's content: as `history_parse.parse_all` worked it out."""
    return getattr(attachment, "digest", None) or hashlib.sha256(attachment.data).hexdigest()


def _insert_events(session: Session, filing: BatchFiling, kept: list[Filed],
                   now: datetime) -> None:
    events = [dict(ticket_id=t.id, at=now, actor=_text(t.requester_email, 320) or "system",
                   action="imported", detail=t.event) for t in filing.new_tickets]
    events += [dict(ticket_id=f.ticket.id, at=now,
                    actor=_text(f.record.mail.from_email, 320) or "system",
                    action="message_imported",
                    detail={"via": f.via, "kind": f.kind, "date": f.date.isoformat()})
               for f in kept if f.via is not None]   # the others opened their ticket
    _insert_rows(session, Event.__table__, events)


def write_outcomes(session: Session, outcomes: list[dict], released: list[int]) -> None:
    """The claimed records' outcome; new mail found with the history goes to the pipeline."""
    if outcomes:
        session.connection().execute(_OUTCOME, outcomes)
    if released:
        session.connection().execute(_RELEASE, {"ids": released})


def _insert_rows(session: Session, table, rows: list[dict]) -> None:
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= COPY_FROM:
        copy_rows(session, table, rows)
    else:
        session.connection().execute(_plain_insert(table), rows)


def _ignoring(session: Session, model):
    return _insert_ignoring(session.get_bind().dialect.name, model)


@functools.cache
def _plain_insert(table):
    return insert(table)
