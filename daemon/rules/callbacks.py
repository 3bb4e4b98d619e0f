"""Missed-call callbacks: who has to be called back, the callback ticket, and when it is done.

A missed or abandoned inbound call from a number we can call is `pending` once stored.
One older than `callback_max_age` when the check first sees it (an archive imported, a
report days late) is `stale`: nobody is called back for it. When `callback_after` has
passed since a call (at `now`):

- if by then the records show contact with that number after the call — an answered
  call from it, or any call out to it — it is `followed`: no ticket. (Usually that
  contact lies within `callback_after`; when a report arrives late and the contact came
  later, a ticket would only say what the records already show is done, and the
  figures still count the callback as late.)
- else, if the number has an open callback ticket, the call `joined` it (an event);
- else it `opened` a callback ticket: channel phone, tier L1, "Oddzwonić: +48…", whose
  first response is due `callback_target` of business time after the missed call, on
  the L1 calendar of the client's contract.

A call out to the number after the missed call marks the callback made: an event
`callback_made` and the ticket resolved, without a mail (nobody wrote in). Every
decision stores `callback_due` and `callback_at` on the call, for the figures.

Safe to run twice and in two processes: the check runs under a lock (PostgreSQL: an
advisory transaction lock; SQLite has one writer at a time anyway).
"""
from __future__ import annotations

import bisect
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from daemon.config import Config
from daemon.ingest.calls.config import CallSettings, calls_config
from daemon.rules.sla import STOPPED_STATUSES, follow_status, refresh_clocks, share_of
from daemon.rules.sla_config import SlaConfig, sla_config
from daemon.store import Store
from daemon.store.models import Call, Ticket
from daemon.tickets import add_participant, next_number, record_event

log = logging.getLogger(__name__)
BATCH = 200
MAX_BATCHES = 10000
LOCK_KEY = 0x4A414E434C4C   # "JANCLL": one callback check at a time across processes


def run_callback_check(config: Config, store: Store, now: datetime) -> Counter:
    """Decide every call whose callback window has passed, batch by batch; then note the
    callbacks made."""
    results: Counter = Counter()
    for _ in range(MAX_BATCHES):
        with store.transaction() as session:
            done = check_callbacks(session, config, now, limit=BATCH)
        results.update(done)
        if done["decided"] < BATCH:
            break
    with store.transaction() as session:
        _lock(session)
        results["called_back"] += close_called_back(session, config, now)
    return +results


def callbacks_in_session(session: Session, config: Config, now: datetime) -> Counter:
    """The whole check in the caller's transaction (a PBX report mail's)."""
    results = check_callbacks(session, config, now)
    results["called_back"] += close_called_back(session, config, now)
    return +results


@dataclass
class Check:
    """One batch of the check: what it needs, and what it read of the store up front."""

    session: Session
    config: Config
    settings: CallSettings
    sla: SlaConfig
    now: datetime
    open_tickets: dict[str, Ticket] = field(default_factory=dict)      # number -> its ticket
    contacts: dict[str, list[datetime]] = field(default_factory=dict)  # number -> times

    def load(self, calls: list[Call]) -> None:
        """Contacts with, and open callback tickets of, the CALLS' numbers: a query each."""
        if not calls:
            return
        numbers = {call.caller for call in calls}
        since = min(call.started_at for call in calls)
        rows = self.session.execute(
            select(Call.caller, Call.callee, Call.direction, Call.started_at)
            .where(Call.started_at > since, Call.started_at <= self.now, or_(
                and_(Call.caller.in_(numbers), Call.direction == "in",
                     Call.outcome == "answered"),
                and_(Call.callee.in_(numbers), Call.direction == "out")))
            .order_by(Call.started_at, Call.id))
        for caller, callee, direction, started_at in rows:
            self.contacts.setdefault(callee if direction == "out" else caller,
                                     []).append(started_at)
        for number, ticket in self.session.execute(
                select(Call.caller, Ticket).join(Ticket, Call.ticket_id == Ticket.id)
                .where(Call.callback == "opened", Call.caller.in_(numbers),
                       Ticket.status.not_in(STOPPED_STATUSES)).order_by(Ticket.id)):
            self.open_tickets.setdefault(number, ticket)

    def first_contact_after(self, number: str, after: datetime) -> datetime | None:
        """The first answered call from NUMBER, or call out to it, after AFTER (until now)."""
        times = self.contacts.get(number, [])
        index = bisect.bisect_right(times, after)
        return times[index] if index < len(times) else None


def check_callbacks(session: Session, config: Config, now: datetime,
                    limit: int | None = None) -> Counter:
    """One batch in the caller's transaction: stale calls marked, pending calls decided."""
    _lock(session)
    settings = calls_config(config).settings
    check = Check(session, config, settings, sla_config(config), now)
    results: Counter = Counter()
    results["stale"] = mark_stale(session, now - settings.callback_max_age)
    query = (select(Call).where(Call.callback == "pending",
                                Call.started_at <= now - settings.callback_after)
             .order_by(Call.started_at, Call.id))
    calls = list(session.scalars(query.limit(limit) if limit else query))
    check.load(calls)
    for call in calls:
        results[decide(check, call)] += 1
    results["decided"] = len(calls)
    return results


def mark_stale(session: Session, before: datetime) -> int:
    """Pending calls from before BEFORE are past calling back: one UPDATE, however many."""
    return session.execute(update(Call).where(Call.callback == "pending",
                                              Call.started_at < before)
                           .values(callback="stale")
                           .execution_options(synchronize_session=False)).rowcount


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


# -- one missed call ----------------------------------------------------------------------
def decide(check: Check, call: Call) -> str:
    call.callback_due = callback_due(check.sla, check.settings, call)
    contact = check.first_contact_after(call.caller, call.started_at)
    if contact is not None:
        call.callback, call.callback_at = "followed", contact
        return "followed"
    ticket = check.open_tickets.get(call.caller)
    if ticket is not None:
        _join(check.session, ticket, call, check.now)
        return "joined"
    check.open_tickets[call.caller] = open_callback_ticket(check, call)
    return "opened"


def _join(session: Session, ticket: Ticket, call: Call, now: datetime) -> None:
    call.callback, call.ticket_id = "joined", ticket.id
    ticket.updated_at = now
    record_event(session, ticket, "missed_call", now, **call_detail(call))
    log.info("%s: another missed call from %s (%s)", ticket.number, call.caller, call.call_id)


def open_callback_ticket(check: Check, call: Call) -> Ticket:
    session, config, now = check.session, check.config, check.now
    client_config = next((c for c in config.clients if call.client and c.name == call.client.name),
                         None)
    ticket = Ticket(number=next_number(session, config.ticket_prefix),
                    subject=f"Oddzwonić: {call.caller}", status="new", tier="L1",
                    priority="normal", client=call.client,
                    requester_email=call.contact or call.caller,
                    requester_name=call.client.name if call.client else "",
                    channel="phone", mailbox=None,
                    language=(client_config and client_config.language) or config.language,
                    held=False, message_count=0, created_at=now, updated_at=now)
    session.add(ticket)
    if call.contact:
        add_participant(session, ticket, call.contact, role="requester")
    session.flush()
    call.callback, call.ticket_id = "opened", ticket.id
    record_event(session, ticket, "created", now, channel="phone", mailbox=None,
                 client=call.client.name if call.client else None, **call_detail(call))
    # The call now marks it a callback ticket: its first response is due with the callback
    # (daemon.rules.sla.callback_of), here and at every later recompute.
    refresh_clocks(session, config, ticket, now,
                   callback=(call.started_at, check.settings.callback_target))
    log.info("%s opened: call back %s (missed at %s, due %s)", ticket.number, call.caller,
             call.started_at.isoformat(), call.callback_due.isoformat())
    return ticket


def callback_due(sla: SlaConfig, settings: CallSettings, call: Call,
                 share: float = 1.0) -> datetime:
    """`callback_target` (or SHARE of it) of business time after the call, on the L1
    calendar of the caller's contract (the default contract's for an unknown caller)."""
    contract = sla.contract(call.client.contract if call.client else None)
    calendar = sla.calendar(contract.calendar)
    return calendar.add(call.started_at, share_of(settings.callback_target, share))


# -- the callback made --------------------------------------------------------------------
def close_called_back(session: Session, config: Config, now: datetime) -> int:
    """Resolve the open callback tickets whose number was called after the missed call."""
    called = aliased(Call)
    first_call_out = (select(func.min(called.started_at))
                      .where(called.callee == Call.caller, called.direction == "out",
                             called.started_at > Call.started_at)
                      .correlate(Call).scalar_subquery())
    rows = session.execute(
        select(Ticket, Call, first_call_out).join(Call, Call.ticket_id == Ticket.id)
        .where(Call.callback == "opened", Ticket.status.not_in(STOPPED_STATUSES),
               first_call_out.is_not(None))
        .order_by(Ticket.id)).all()
    for ticket, missed, started_at in rows:
        callback = session.scalars(
            select(Call).where(Call.callee == missed.caller, Call.direction == "out",
                               Call.started_at == started_at).order_by(Call.id).limit(1)).one()
        mark_called_back(session, config, ticket, missed, callback, now)
    return len(rows)


def mark_called_back(session: Session, config: Config, ticket: Ticket, missed: Call,
                     callback: Call, now: datetime) -> None:
    for call in session.scalars(select(Call).where(Call.ticket_id == ticket.id,
                                                   Call.callback.in_(("opened", "joined")))):
        call.callback_at = call.callback_at or callback.started_at
    callback.ticket_id = callback.ticket_id or ticket.id
    record_event(session, ticket, "callback_made", now, actor=_actor(callback),
                 **call_detail(callback))
    previous, ticket.status = ticket.status, "resolved"
    record_event(session, ticket, "status_changed", now, actor=_actor(callback),
                 previous=previous, status="resolved")
    # The callback is the first response, and resolves the ticket at the moment it was made.
    ticket.first_responded_at = ticket.first_responded_at or callback.started_at
    ticket.resolved_at = callback.started_at
    ticket.updated_at = now
    follow_status(session, config, ticket, previous, now)
    log.info("%s: called back %s at %s", ticket.number, missed.caller,
             callback.started_at.isoformat())


def _actor(call: Call) -> str:
    return call.technician.email if call.technician else "system"


def call_detail(call: Call) -> dict:
    return {"call": call.call_id, "source": call.source, "direction": call.direction,
            "caller": call.caller, "callee": call.callee, "outcome": call.outcome,
            "started_at": call.started_at.isoformat(),
            "due": call.callback_due.isoformat() if call.callback_due else None}
