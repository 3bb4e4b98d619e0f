"""SLA clocks: when a ticket's first response and resolution are due, and how they stand.

Two clocks run on every ticket, in business time on one calendar:

- **first response**, from arrival until the first technician reply (or resolve);
- **resolution**, from arrival until resolve; it stands still while the ticket waits for
  the customer (`#wait`) and while it is resolved, if it is later reopened.

Due times are always computed from the ticket's history (arrival, contract, priority,
tier, pauses), never from "now": raising the priority an hour after arrival makes the
new target count from arrival. A callback ticket (opened for a missed call by
daemon.rules.callbacks) is told apart by the call that opened it: its first response is
due `[calls] callback_target` of business time after that call, on its contract's L1
calendar, whatever its priority or tier. The pure part (`sla_times`, `deadline`,
`clock_state`) takes facts and returns instants; `refresh_clocks` and `follow_status`
store them on a ticket, including `sla_alarm_at`, the next instant the sweep has a
notice to send.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.ingest.calls.config import calls_config
from daemon.rules.calendar import BusinessCalendar, Interval
from daemon.rules.sla_config import CLOCKS, Contract, SlaConfig, sla_config
from daemon.store import Store
from daemon.store.models import Call, Ticket
from daemon.tickets import record_event

STOPPED_STATUSES = ("resolved", "closed")
# Worst first: a ticket's state is the worst of its clocks' states.
STATE_ORDER = ("breached", "warning", "paused", "ok", "met")


@dataclass(frozen=True)
class ClockFacts:
    """What the ticket's history says, as far as its clocks are concerned."""

    created_at: datetime
    contract: Contract
    priority: str
    tier: str
    pauses: tuple[Interval, ...] = ()    # closed pauses of the resolution clock
    paused_since: datetime | None = None  # the pause going on now, if any
    # A callback ticket's first response: (the missed call's start, callback_target).
    callback: tuple[datetime, timedelta] | None = None


@dataclass(frozen=True)
class SlaTimes:
    calendar: str
    started_at: datetime                  # the calendar's first open instant from arrival
    first_response_due: datetime | None
    first_response_warn_at: datetime | None
    resolution_due: datetime | None       # None while paused, unless run out before
    resolution_warn_at: datetime | None
    paused: timedelta                     # business time of the closed pauses

    def due(self, clock: str) -> datetime | None:
        return getattr(self, f"{clock}_due")


# -- pure -------------------------------------------------------------------------------
def clock_calendar(sla: SlaConfig, contract: Contract, tier: str,
                   created_at: datetime) -> BusinessCalendar:
    """The contract's (L1) calendar, unless the ticket was handed over after hours.

    A ticket that arrived outside L1 hours and sits with the contract's after-hours tier
    runs on that tier's calendar; moved to another tier, it runs on L1's again.
    """
    l1 = sla.calendar(contract.calendar)
    if (contract.after_hours_tier and tier == contract.after_hours_tier
            and not l1.is_open(created_at)):
        return sla.calendar(contract.after_hours_calendar)
    return l1


def deadline(calendar: BusinessCalendar, start: datetime, amount: timedelta,
             pauses: tuple[Interval, ...] = (), paused_since: datetime | None = None
             ) -> datetime | None:
    """The earliest instant AMOUNT of business time has run since START, the clock
    standing still during PAUSES.

    None when the time would run out only after the pause going on since PAUSED_SINCE
    ends: nobody knows when that will be.
    """
    left, cursor = amount, start
    stops = sorted(pauses) + ([(paused_since, None)] if paused_since else [])
    for pause_start, pause_end in stops:
        if pause_end is not None and pause_end <= cursor:
            continue
        if pause_start > cursor:
            ran = calendar.business_time(cursor, pause_start)
            if ran >= left:
                return calendar.add(cursor, left)
            left -= ran
        if pause_end is None:
            return None
        cursor = max(cursor, pause_end)
    return calendar.add(cursor, left)


def clock_time(calendar: BusinessCalendar, start: datetime, until: datetime,
               pauses: tuple[Interval, ...] = ()) -> timedelta:
    """Business time the clock has run from START to UNTIL, less the pauses."""
    paused = sum((calendar.business_time(max(s, start), min(e, until)) for s, e in pauses),
                 timedelta(0))
    return calendar.business_time(start, until) - paused


def share_of(target: timedelta, share: float) -> timedelta:
    return timedelta(seconds=round(target.total_seconds() * share))


def sla_times(sla: SlaConfig, facts: ClockFacts) -> SlaTimes:
    calendar = clock_calendar(sla, facts.contract, facts.tier, facts.created_at)
    targets = facts.contract.targets_for(facts.priority)
    first, resolution = targets.first_response, targets.resolution
    arrived = facts.created_at.replace(microsecond=0)  # due times to the second

    def resolution_at(amount: timedelta) -> datetime | None:
        return deadline(calendar, arrived, amount, facts.pauses, facts.paused_since)

    times = SlaTimes(
        calendar=calendar.name,
        started_at=calendar.next_open(arrived),
        first_response_due=calendar.add(arrived, first) if first else None,
        first_response_warn_at=(calendar.add(arrived, share_of(first, sla.warning_share))
                                if first else None),
        resolution_due=resolution_at(resolution) if resolution else None,
        resolution_warn_at=(resolution_at(share_of(resolution, sla.warning_share))
                            if resolution else None),
        paused=sum((calendar.business_time(s, e) for s, e in facts.pauses), timedelta(0)),
    )
    return with_callback_target(sla, facts, times) if facts.callback else times


def with_callback_target(sla: SlaConfig, facts: ClockFacts, times: SlaTimes) -> SlaTimes:
    """A callback ticket's first response is due when the call back is: callback_target
    of business time after the missed call on the contract's L1 calendar (the after-hours
    tier does not call back), whatever the priority or tier."""
    missed_at, target = facts.callback
    l1 = sla.calendar(facts.contract.calendar)
    return replace(times, first_response_due=l1.add(missed_at, target),
                   first_response_warn_at=l1.add(missed_at, share_of(target, sla.warning_share)))


def clock_state(due: datetime | None, warn_at: datetime | None, stopped_at: datetime | None,
                paused: bool, now: datetime) -> str | None:
    """ok, warning, breached, paused or met; None for a clock the contract does not set."""
    if stopped_at is not None:
        return None if due is None else ("met" if stopped_at <= due else "breached")
    if due is not None and now >= due:
        return "breached"
    if paused:
        return "paused"
    if due is None:
        return None
    return "warning" if warn_at is not None and now >= warn_at else "ok"


def worst(states) -> str | None:
    present = [s for s in states if s]
    return min(present, key=STATE_ORDER.index) if present else None


# -- on a ticket --------------------------------------------------------------------------
def contract_of(sla: SlaConfig, ticket: Ticket) -> Contract:
    """The ticket's contract; before routing set one, its client's, else the default."""
    name = ticket.contract or (ticket.client.contract if ticket.client else None)
    return sla.contract(name)


def pauses_of(ticket: Ticket) -> tuple[Interval, ...]:
    return tuple((datetime.fromisoformat(s), datetime.fromisoformat(e))
                 for s, e in ticket.sla_pauses or [])


def facts_of(sla: SlaConfig, ticket: Ticket,
             callback: tuple[datetime, timedelta] | None = None) -> ClockFacts:
    return ClockFacts(created_at=ticket.created_at, contract=contract_of(sla, ticket),
                      priority=ticket.priority, tier=ticket.tier, pauses=pauses_of(ticket),
                      paused_since=ticket.sla_paused_at, callback=callback)


LOOK_UP = object()   # refresh_clocks: look the callback up


def callback_of(session: Session, config: Config,
                ticket: Ticket) -> tuple[datetime, timedelta] | None:
    """For a callback ticket, the start of the missed call that opened it and the
    `[calls] callback_target`; None for any other ticket.

    The call record is the mark: only phone tickets are looked up, by an indexed column.
    """
    if ticket.channel != "phone" or ticket.id is None:
        return None
    missed_at = session.scalar(select(Call.started_at).where(
        Call.ticket_id == ticket.id, Call.callback == "opened").order_by(Call.id).limit(1))
    if missed_at is None:
        return None
    return missed_at, calls_config(config).settings.callback_target


def stopped_at(ticket: Ticket, clock: str) -> datetime | None:
    """When CLOCK stopped: first response at the first reply or at resolve."""
    if clock == "first_response":
        return ticket.first_responded_at or ticket.resolved_at
    return ticket.resolved_at


def clock_running(ticket: Ticket, clock: str) -> bool:
    return ticket.status not in STOPPED_STATUSES and stopped_at(ticket, clock) is None


def next_alarm(ticket: Ticket) -> datetime | None:
    """The next instant the sweep has a notice to send for this ticket (None: nothing)."""
    instants = []
    for clock in CLOCKS:
        if not clock_running(ticket, clock):
            continue
        for notice, instant in (("warning", f"{clock}_warn_at"), ("breach", f"{clock}_due")):
            if getattr(ticket, instant) and getattr(ticket, f"{clock}_{notice}_sent_at") is None:
                instants.append(getattr(ticket, instant))
    return min(instants, default=None)


def refresh_clocks(session: Session, config: Config, ticket: Ticket, now: datetime, *,
                   reason: str | None = None,
                   callback: tuple[datetime, timedelta] | None | object = LOOK_UP) -> SlaTimes:
    """Recompute and store the ticket's due times from its history.

    With a REASON (a change of priority, tier or contract) a changed due time is
    recorded as an `sla_changed` event. CALLBACK is `callback_of`'s answer when the
    caller already knows it (the callback check, for the ticket it has just opened):
    the lookup is a query, and its autoflush, per ticket.
    """
    sla = sla_config(config)
    before = (ticket.first_response_due, ticket.resolution_due)
    if callback is LOOK_UP:
        callback = callback_of(session, config, ticket)
    times = sla_times(sla, facts_of(sla, ticket, callback))
    ticket.contract = ticket.contract or contract_of(sla, ticket).name
    ticket.sla_calendar = times.calendar
    for clock in CLOCKS:
        setattr(ticket, f"{clock}_due", times.due(clock))
        setattr(ticket, f"{clock}_warn_at", getattr(times, f"{clock}_warn_at"))
    ticket.sla_paused_seconds = int(times.paused.total_seconds())
    ticket.sla_alarm_at = next_alarm(ticket)
    after = (ticket.first_response_due, ticket.resolution_due)
    if reason and after != before:
        record_event(session, ticket, "sla_changed", now, reason=reason,
                     first_response_due=_iso(after[0]), resolution_due=_iso(after[1]))
    return times


def follow_status(session: Session, config: Config, ticket: Ticket, previous: str,
                  now: datetime) -> None:
    """Keep the clocks in step with a status change (the new status is already set).

    Waiting pauses the resolution clock and leaving it resumes; resolving stops both
    clocks and notes the tier that solved it; reopening a resolved ticket resumes the
    resolution clock, the resolved stretch counting as a pause.
    """
    status = ticket.status
    if previous == "waiting" and ticket.sla_paused_at is not None:
        _add_pause(ticket, ticket.sla_paused_at, now)
        ticket.sla_paused_at = None
    if previous in STOPPED_STATUSES and status not in STOPPED_STATUSES:
        if ticket.resolved_at is not None:
            _add_pause(ticket, ticket.resolved_at, now)
        ticket.resolved_at, ticket.resolved_tier = None, None
    if status == "waiting" and ticket.sla_paused_at is None:
        ticket.sla_paused_at = now
    if status in STOPPED_STATUSES:
        ticket.resolved_at = ticket.resolved_at or now
        ticket.resolved_tier = ticket.resolved_tier or ticket.tier
    refresh_clocks(session, config, ticket, now)


def recompute_open_tickets(config: Config, store: Store, now: datetime, batch: int = 500) -> int:
    """Refresh every open ticket's clocks (after contracts or calendars changed).

    Resolved tickets keep the due times they were measured against.
    """
    count, last_id = 0, 0
    while True:
        with store.transaction() as session:
            tickets = list(session.scalars(
                select(Ticket).where(Ticket.status.not_in(STOPPED_STATUSES), Ticket.id > last_id)
                .order_by(Ticket.id).limit(batch)).unique())
            for ticket in tickets:
                refresh_clocks(session, config, ticket, now, reason="recomputed")
        if not tickets:
            return count
        count, last_id = count + len(tickets), tickets[-1].id


def _add_pause(ticket: Ticket, since: datetime, until: datetime) -> None:
    if until > since:
        ticket.sla_pauses = [*(ticket.sla_pauses or []), [since.isoformat(), until.isoformat()]]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# -- for views ----------------------------------------------------------------------------
def clock_view(ticket: Ticket, clock: str, now: datetime) -> dict:
    due, warn_at = getattr(ticket, f"{clock}_due"), getattr(ticket, f"{clock}_warn_at")
    stop = stopped_at(ticket, clock)
    paused = clock == "resolution" and ticket.sla_paused_at is not None
    return {"due": due, "warn_at": warn_at, "stopped_at": stop,
            "state": clock_state(due, warn_at, stop, paused, now)}


def ticket_sla(ticket: Ticket, now: datetime) -> dict:
    """The clocks of TICKET at NOW: each clock's due, state and stop, and the worst state."""
    clocks = {clock: clock_view(ticket, clock, now) for clock in CLOCKS}
    return {"state": worst(c["state"] for c in clocks.values()), "clocks": clocks,
            "paused_seconds": ticket.sla_paused_seconds or 0,
            "paused_since": ticket.sla_paused_at}
