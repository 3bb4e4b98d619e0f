"""The SLA sweep: warning and breach notices, each once per ticket and clock, and escalation.

A periodic job. It reads only tickets whose `sla_alarm_at` (the next instant a notice
is due, kept by daemon.rules.sla) has come: an index range scan, so its cost grows with
the tickets that are due, not with all tickets.

Safe to run twice and in several processes at once: due tickets are read locked — on
PostgreSQL `FOR UPDATE SKIP LOCKED` (another sweep's tickets are skipped, and a locked
row is read as last committed), on SQLite under the write lock every transaction takes
at BEGIN IMMEDIATE — so the `<notice>_sent_at` flags read are current and nobody else
can set them before this transaction commits. A notice's flag is set in the transaction
that queues its mail, so each notice is sent once.
"""
from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.clock import Clock
from daemon.config import PRIORITIES, TIERS, Config
from daemon.conversation import change_priority, change_tier, send_template
from daemon.rules.sla import clock_running, next_alarm
from daemon.rules.sla_config import CLOCKS, Escalation, sla_config
from daemon.store import Store
from daemon.store.models import Ticket
from daemon.tickets import Inserts

log = logging.getLogger(__name__)

BATCH = 100
MAX_BATCHES = 1000  # a guard: each ticket has at most four notices, so the sweep ends anyway


def sweep_sla(config: Config, store: Store, clock: Clock, batch: int = BATCH) -> Counter:
    """Send the notices due at the clock's now; returns how many of each kind were sent."""
    now = clock.now()
    results: Counter = Counter()
    for _ in range(MAX_BATCHES):
        with store.transaction() as session:
            tickets = due_tickets(session, store.backend, now, batch)
            rows = Inserts()  # the batch's notices: one INSERT per table
            for ticket in tickets:
                results.update(ticket_notices(session, config, ticket, now, rows))
            rows.write(session)
        if len(tickets) < batch:
            break
    return results


def due_tickets(session: Session, backend: str, now: datetime, limit: int) -> list[Ticket]:
    query = (select(Ticket).where(Ticket.sla_alarm_at <= now)
             .order_by(Ticket.sla_alarm_at, Ticket.id).limit(limit))
    if backend == "postgresql":
        # Another sweep holding a ticket is sending its notices: leave it to that one.
        query = query.with_for_update(skip_locked=True, of=Ticket)
    return list(session.scalars(query).unique())


def ticket_notices(session: Session, config: Config, ticket: Ticket, now: datetime,
                   rows: Inserts) -> Counter:
    """Send what is due on TICKET at NOW, escalate on a breach, set its next alarm.

    The notices' rows go to ROWS, which the caller writes before it commits.
    """
    sent: Counter = Counter()
    breached = False
    for name in CLOCKS:
        if not clock_running(ticket, name):
            continue
        due, warn_at = getattr(ticket, f"{name}_due"), getattr(ticket, f"{name}_warn_at")
        if due is not None and due <= now:
            # Past due already: a warning now would say less than the breach notice.
            claim(ticket, name, "warning", now)
            if claim(ticket, name, "breach", now):
                notify(session, config, ticket, name, "breach", due, now, rows)
                sent["sla_breach"] += 1
                breached = True
        elif warn_at is not None and warn_at <= now and claim(ticket, name, "warning", now):
            notify(session, config, ticket, name, "warning", due, now, rows)
            sent["sla_warning"] += 1
    if breached:
        rows.write(session)  # the breach comes before what the escalation records
        escalate(session, config, ticket, now)
    ticket.sla_alarm_at = next_alarm(ticket)
    return sent


def claim(ticket: Ticket, clock: str, notice: str, now: datetime) -> bool:
    """Set the notice's flag unless it is set; True when this call set it.

    The ticket's row is locked (see the module's docstring), so the flag is current.
    """
    attribute = f"{clock}_{notice}_sent_at"
    if getattr(ticket, attribute) is not None:
        return False
    setattr(ticket, attribute, now)
    return True


def notify(session: Session, config: Config, ticket: Ticket, clock: str, notice: str,
           due: datetime | None, now: datetime, rows: Inserts) -> None:
    """The notice to the assignee and the coordinators, and an event on the ticket."""
    recipients = list(dict.fromkeys(([ticket.assignee.email] if ticket.assignee else [])
                                    + [t.email for t in config.coordinators]))
    sla = sla_config(config)
    escalation = pending_escalation(sla.contract(ticket.contract).on_breach, ticket) \
        if notice == "breach" else None
    queued = send_template(session, config, ticket, f"sla_{notice}", kind=f"sla_{notice}",
                           now=now, to=recipients, language=config.language,
                           auto_submitted="auto-generated", clock=clock, due=due,
                           share_percent=round(sla.warning_share * 100), escalation=escalation,
                           into=rows)
    rows.event(ticket, f"sla_{notice}", now, clock=clock,
               due=due.isoformat() if due else None, to=recipients if queued else [])
    log.info("%s SLA %s for %s (due %s) to %s", ticket.number, notice, clock, due,
             ", ".join(recipients) or "nobody")


def pending_escalation(on_breach: Escalation | None, ticket: Ticket) -> Escalation | None:
    """What of the contract's escalation would change the ticket (it only ever raises)."""
    if on_breach is None:
        return None
    priority = on_breach.priority if on_breach.priority and \
        PRIORITIES.index(on_breach.priority) > PRIORITIES.index(ticket.priority) else None
    tier = on_breach.tier if on_breach.tier and \
        TIERS.index(on_breach.tier) > TIERS.index(ticket.tier) else None
    return Escalation(priority, tier) if priority or tier else None


def escalate(session: Session, config: Config, ticket: Ticket, now: datetime) -> None:
    escalation = pending_escalation(sla_config(config).contract(ticket.contract).on_breach, ticket)
    if escalation is None:
        return
    if escalation.priority:
        change_priority(session, config, ticket, escalation.priority, actor="sla", now=now)
    if escalation.tier:
        change_tier(session, config, ticket, escalation.tier, actor="sla", now=now)
