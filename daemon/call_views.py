"""Call records as plain dicts for JSON output, alone and on the tickets they concern.

A call is shown on a ticket when it is the ticket's own (a callback ticket and the calls
that opened, joined or closed it) or when it came from, or went to, the ticket's client
or requester while the ticket was open. That is worked out when the ticket is shown,
not written at import: a million imported calls add no rows to open tickets, and a
call record that arrives late still shows up.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, object_session

from daemon.clock import iso
from daemon.store.models import Call, Ticket

TICKET_CALLS_SHOWN = 100


def call_view(call: Call, tz: ZoneInfo) -> dict:
    return {
        "source": call.source,
        "call_id": call.call_id,
        "direction": call.direction,
        "caller": call.caller,
        "callee": call.callee,
        "withheld": call.direction == "in" and call.caller is None,
        "queue": call.queue,
        "technician": call.technician.email if call.technician else None,
        "extension": call.extension,
        "started_at": iso(call.started_at, tz),
        "answered_at": iso(call.answered_at, tz),
        "ended_at": iso(call.ended_at, tz),
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
        "outcome": call.outcome,
        "client": call.client.name if call.client else None,
        "contact": call.contact,
        "ticket": call.ticket.number if call.ticket else None,
        "callback": call.callback,
        "callback_due": iso(call.callback_due, tz),
        "callback_at": iso(call.callback_at, tz),
        "source_line": call.source_line,
    }


def calls_query(*, start: datetime | None = None, end: datetime | None = None,
                source: str | None = None, number: str | None = None,
                client_id: int | None = None, contact: str | None = None) -> Select:
    """Calls by start time, narrowed by whichever filters are given."""
    query = select(Call).order_by(Call.started_at, Call.id)
    if start is not None:
        query = query.where(Call.started_at >= start)
    if end is not None:
        query = query.where(Call.started_at < end)
    if source:
        query = query.where(Call.source == source)
    if number:
        query = query.where(or_(Call.caller == number, Call.callee == number))
    if client_id is not None:
        query = query.where(Call.client_id == client_id)
    if contact:
        query = query.where(Call.contact == contact.lower())
    return query


def ticket_calls(session: Session, ticket: Ticket) -> list[Call]:
    """The ticket's own calls, and its client's or requester's calls while it was open.

    One query per way a call can belong, each one an index can answer; the newest
    TICKET_CALLS_SHOWN of them, oldest first.
    """
    while_open = [Call.started_at >= ticket.created_at]
    if ticket.resolved_at is not None:
        while_open.append(Call.started_at <= ticket.resolved_at)
    requester = ticket.requester_email or ""
    ways = [[Call.ticket_id == ticket.id]]
    if ticket.client_id is not None:
        ways.append([Call.client_id == ticket.client_id, *while_open])
    if "@" in requester:
        ways.append([Call.contact == requester, *while_open])
    elif requester.startswith("+"):   # a callback ticket for a caller with no known address
        ways.append([or_(Call.caller == requester, Call.callee == requester), *while_open])
    found: dict[int, Call] = {}
    for conditions in ways:
        for call in session.scalars(select(Call).where(*conditions)
                                    .order_by(Call.started_at.desc(), Call.id.desc())
                                    .limit(TICKET_CALLS_SHOWN)):
            found[call.id] = call
    newest = sorted(found.values(), key=lambda c: (c.started_at, c.id))
    return newest[-TICKET_CALLS_SHOWN:]


def calls_on_ticket(ticket: Ticket, tz: ZoneInfo) -> list[dict]:
    """For ticket_detail: the calls shown on TICKET (none for a ticket outside a session)."""
    session = object_session(ticket)
    if session is None or ticket.id is None:
        return []
    return [call_view(call, tz) for call in ticket_calls(session, ticket)]
