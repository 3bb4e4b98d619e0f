"""Deliver due outbox mail: claim one row, send it outside any transaction, record the outcome.

Delivery is at-least-once. A row is claimed by pushing its next_attempt_at one lease
into the future (and counting the attempt) in a short transaction; the network send
happens with no transaction open, so a slow relay never holds SQLite's write lock
against the receiver; the outcome is committed in a second short transaction. A
process that dies mid-send leaves the row pending, and it is sent again once the lease
runs out. A crash after the relay accepted a mail but before "sent" is committed sends
that mail a second time (same bytes, same Message-ID): the accepted trade-off, since
the alternative, marking it sent first, can lose it.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.clock import Clock
from daemon.config import Config
from daemon.outbound.config import OutboundConfig, outbound_config
from daemon.outbound.follow_up import follow_up
from daemon.outbound.outbox import enqueue
from daemon.outbound.render import render_mail
from daemon.outbound.transport import (Accepted, DeliveryFailure, PermanentFailure,
                                       TemporaryFailure, Transport, make_transport)
from daemon.store import Store
from daemon.store.models import OutboxMail, Technician, Ticket
from daemon.tickets import record_event

log = logging.getLogger(__name__)

NOTICE_KIND = "delivery_failed"


@dataclass(frozen=True)
class Claim:
    """What the sender needs of a claimed row once the claiming transaction is over."""

    id: int
    label: str                # the ticket number, else the Message-ID: for log lines
    mail_from: str
    recipients: list[str]
    raw: bytes
    attempts: int


def send_pending(config: Config, store: Store, clock: Clock, transport: Transport | None = None,
                 limit: int | None = None) -> Counter:
    """Send every due mail (at most LIMIT); counts "sent", "retry" and "failed" outcomes."""
    outbound = outbound_config(config)
    transport = transport or make_transport(outbound)
    results: Counter = Counter()
    while limit is None or sum(results.values()) < limit:
        claim = claim_next(store, outbound, clock.now())
        if claim is None:
            break
        outcome = attempt(transport, claim)
        results[record_outcome(store, config, outbound, claim, outcome, clock.now())] += 1
        if isinstance(outcome, TemporaryFailure) and outcome.relay_down:
            # Nothing gets through now; the other due mail waits without using up attempts.
            break
    return results


# -- claim ---------------------------------------------------------------------------------------
def claim_next(store: Store, outbound: OutboundConfig, now: datetime) -> Claim | None:
    """Take the oldest due mail for one lease, in a short transaction of its own."""
    with store.transaction() as session:
        query = (select(OutboxMail)
                 .where(OutboxMail.status == "pending", OutboxMail.next_attempt_at <= now)
                 .order_by(OutboxMail.next_attempt_at, OutboxMail.id).limit(1))
        if store.backend == "postgresql":
            # Two daemons never take the same row; on SQLite the write lock (BEGIN
            # IMMEDIATE) already serialises claims.
            query = query.with_for_update(skip_locked=True)
        mail = session.scalar(query)
        if mail is None:
            return None
        mail.attempts += 1
        mail.next_attempt_at = now + outbound.lease
        return Claim(id=mail.id, label=_label(session, mail), mail_from=mail.mail_from,
                     recipients=list(mail.recipients), raw=mail.raw, attempts=mail.attempts)


def _label(session: Session, mail: OutboxMail) -> str:
    ticket = session.get(Ticket, mail.ticket_id) if mail.ticket_id else None
    return ticket.number if ticket else f"<{mail.message_id}>"


# -- send -----------------------------------------------------------------------------------------
def attempt(transport: Transport, claim: Claim) -> Accepted | DeliveryFailure:
    """One delivery attempt; never raises for a delivery problem, returns it."""
    try:
        return transport.send(claim.mail_from, claim.recipients, claim.raw)
    except DeliveryFailure as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a transport bug must not lose the mail
        log.exception("%s: transport failed unexpectedly", claim.label)
        return TemporaryFailure(f"unexpected {type(exc).__name__}: {exc}")


# -- record -------------------------------------------------------------------------------------
def record_outcome(store: Store, config: Config, outbound: OutboundConfig, claim: Claim,
                   outcome: Accepted | DeliveryFailure, now: datetime) -> str:
    """Commit what happened to the claimed mail; returns "sent", "retry" or "failed"."""
    with store.transaction() as session:
        mail = session.get(OutboxMail, claim.id)
        if isinstance(outcome, Accepted):
            return _mark_sent(session, config, mail, claim, outcome, now)
        if mail.status != "pending" or mail.attempts != claim.attempts:
            # Our lease ran out mid-send and another sender owns the row now.
            log.warning("%s: attempt %d outlived its lease: %s", claim.label, claim.attempts,
                        outcome)
            return "retry"
        if isinstance(outcome, TemporaryFailure) and now < mail.created_at + outbound.retry_for:
            return _schedule_retry(mail, claim, outbound, str(outcome), now)
        error = str(outcome) if isinstance(outcome, PermanentFailure) else \
            f"gave up after {mail.attempts} attempts over {outbound.retry_for}: {outcome}"
        return _mark_failed(session, config, mail, claim, error, mail.recipients, now)


def _mark_sent(session: Session, config: Config, mail: OutboxMail, claim: Claim,
               accepted: Accepted, now: datetime) -> str:
    mail.status, mail.sent_at, mail.last_error = "sent", now, None
    log.info("%s: sent %s to %s (%s)", claim.label, mail.kind, ", ".join(mail.recipients),
             accepted.detail)
    if accepted.refused:
        # The relay took the mail for the others; resending would duplicate it for them.
        error = "; ".join(f"{address}: {reply}" for address, reply in accepted.refused.items())
        mail.last_error = f"refused recipients: {error}"
        _report_failure(session, config, mail, claim, error, list(accepted.refused), now)
    return "sent"


def _schedule_retry(mail: OutboxMail, claim: Claim, outbound: OutboundConfig, error: str,
                    now: datetime) -> str:
    deadline = mail.created_at + outbound.retry_for
    # The last attempt falls on the deadline rather than past it.
    mail.next_attempt_at = min(now + backoff(outbound, mail.attempts), deadline)
    mail.last_error = error
    log.warning("%s: %s not delivered (attempt %d), retrying at %s: %s", claim.label, mail.kind,
                mail.attempts, mail.next_attempt_at.isoformat(), error)
    return "retry"


def backoff(outbound: OutboundConfig, attempts: int) -> timedelta:
    """backoff_initial doubled per failed attempt, at most backoff_max."""
    # The exponent is capped so that the product stays inside timedelta's range.
    return min(outbound.backoff_initial * 2 ** min(max(attempts - 1, 0), 32), outbound.backoff_max)


def _mark_failed(session: Session, config: Config, mail: OutboxMail, claim: Claim, error: str,
                 recipients: list[str], now: datetime) -> str:
    mail.status, mail.last_error = "failed", error
    log.error("%s: %s to %s failed for good: %s", claim.label, mail.kind,
              ", ".join(recipients), error)
    _report_failure(session, config, mail, claim, error, recipients, now)
    return "failed"


# -- telling people -----------------------------------------------------------------------------
def _report_failure(session: Session, config: Config, mail: OutboxMail, claim: Claim,
                    error: str, recipients: list[str], now: datetime) -> None:
    """Record the failure on the ticket and tell the coordinators, by mail."""
    ticket = session.get(Ticket, mail.ticket_id) if mail.ticket_id else None
    if ticket is not None:
        record_event(session, ticket, "delivery_failed", now, error=error,
                     recipients=recipients, message_id=mail.message_id, kind=mail.kind)
    if mail.kind == NOTICE_KIND:
        return  # a notice about a failed notice could fail the same way, forever
    _notify_coordinators(session, config, mail, ticket, error, recipients, now, claim.label)


def _notify_coordinators(session: Session, config: Config, mail: OutboxMail,
                         ticket: Ticket | None, error: str, recipients: list[str],
                         now: datetime, label: str) -> None:
    coordinators = list(session.scalars(select(Technician).where(
        Technician.role == "coordinator", Technician.active).order_by(Technician.id)))
    if not coordinators:
        log.warning("%s: no active coordinator to tell about the failed delivery", label)
        return
    notice = render_mail(config, NOTICE_KIND, config.language, mail=mail, ticket=ticket,
                         error=error, recipients=recipients)
    to = [c.email for c in coordinators]
    thread = follow_up(session, ticket, to)  # under the ticket's notices to the coordinators
    enqueue(session, config, kind=NOTICE_KIND, now=now, to=to,
            subject=notice.subject, text=notice.text, html=notice.html, ticket=ticket,
            auto_submitted="auto-generated", record_on_ticket=False,
            in_reply_to=thread.parent, references=list(thread.references))
