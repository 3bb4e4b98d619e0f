"""What an operator's monitor asks: is the helpdesk healthy, and its figures in Prometheus' format.

Everything is read from the store at the moment of asking, so every process sharing a
store answers alike and a restart loses no count.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store import Store
from daemon.store.models import MailboxCursor, OutboxMail, RawMessage, Ticket

log = logging.getLogger(__name__)
STORE_TIMEOUT_SECONDS = 3.0


# -- health ---------------------------------------------------------------------------------
@dataclass
class Health:
    """The answer of /healthz: `failing` names each part that is not well."""

    store: str = "ok"
    mailboxes: list[dict] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.failing

    def as_dict(self) -> dict:
        return {"status": "ok" if self.healthy else "failing", "failing": self.failing,
                "store": self.store, "mailboxes": self.mailboxes}


def ping_store(store: Store, timeout: float = STORE_TIMEOUT_SECONDS) -> str | None:
    """None when `SELECT 1` answers within TIMEOUT, else why not (no URL, no secret)."""
    outcome: list[str | None] = []

    def select_one() -> None:
        try:
            # A raw DB-API connection: no BEGIN IMMEDIATE, so a busy writer cannot block it.
            connection = store.engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                cursor.close()
            finally:
                connection.close()
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
            log.warning("health check: store unreachable: %s", exc)
            outcome.append(f"unreachable ({type(exc).__name__})")

    worker = threading.Thread(target=select_one, name="health-ping", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g}s"


def check_health(config: Config, store: Store, now: datetime, *, since: datetime,
                 timeout: float = STORE_TIMEOUT_SECONDS) -> Health:
    """Store reachable, and every IMAP mailbox polled successfully within the stale limit.

    SINCE is when this process started: a mailbox never polled yet counts its lag from then.
    """
    health = Health()
    problem = ping_store(store, timeout)
    if problem:
        health.store = problem
        health.failing.append("store")
        return health
    with store.transaction() as session:
        cursors = {(c.mailbox, c.folder): c for c in session.scalars(select(MailboxCursor))}
    limit = config.limits.poll_stale_limit
    for mailbox in (m for m in config.mailboxes if m.pulls_imap):
        cursor = cursors.get((mailbox.address, mailbox.imap_folder))
        state = _poller_state(mailbox.address, mailbox.imap_folder, cursor, now, since, limit)
        health.mailboxes.append(state)
        if not state["ok"]:
            health.failing.append(f"mailbox {mailbox.address}")
    return health


def _poller_state(address: str, folder: str, cursor: MailboxCursor | None, now: datetime,
                  since: datetime, limit: timedelta) -> dict:
    last = cursor.last_success_at if cursor else None
    lag = (now - (last or since)).total_seconds()
    # The error text stays in the log and the store: it may name hosts or server replies.
    return {"mailbox": address, "folder": folder,
            "last_success_at": last.isoformat() if last else None,
            "lag_seconds": max(0, round(lag)), "limit_seconds": round(limit.total_seconds()),
            "last_poll_failed": bool(cursor and cursor.last_error),
            "ok": lag <= limit.total_seconds()}


# -- metrics --------------------------------------------------------------------------------
@dataclass
class Metric:
    name: str
    kind: str  # counter or gauge
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def _grouped(session: Session, *columns) -> list[tuple]:
    return list(session.execute(select(*columns, func.count()).group_by(*columns)))


def _mail_metrics(session: Session) -> list[Metric]:
    received = Metric("helpdesk_mails_received_total", "counter",
                      "Raw mails saved, by channel and mailbox (rows are never deleted).")
    raw = Metric("helpdesk_raw_messages", "gauge", "Raw mail records by channel and status.")
    processed = Metric("helpdesk_mails_processed_total", "counter",
                       "Raw mails filed into a ticket or recognised as duplicates.")
    quarantined = Metric("helpdesk_mails_quarantined", "gauge",
                         "Raw mails in quarantine now (waiting for a fix and a retry).")
    totals: dict[tuple[str, str], int] = {}
    done = waiting = 0
    for channel, mailbox, status, count in _grouped(session, RawMessage.channel,
                                                    RawMessage.mailbox, RawMessage.status):
        key = (channel, mailbox or "")
        totals[key] = totals.get(key, 0) + count
        done += count if status in ("processed", "duplicate") else 0
        waiting += count if status == "quarantined" else 0
    for (channel, mailbox), count in sorted(totals.items()):
        received.add(count, channel=channel, mailbox=mailbox)
    for channel, status, count in _grouped(session, RawMessage.channel, RawMessage.status):
        raw.add(count, channel=channel, status=status)
    processed.add(done)
    quarantined.add(waiting)
    return [received, raw, processed, quarantined]


def _outbox_metrics(session: Session) -> list[Metric]:
    outbox = Metric("helpdesk_outbox_mails", "gauge", "Outgoing mails by status.")
    counts = dict.fromkeys(("pending", "sent", "failed"), 0)
    counts.update(dict(_grouped(session, OutboxMail.status)))
    for status, count in sorted(counts.items()):
        outbox.add(count, status=status)
    sent = Metric("helpdesk_mails_sent_total", "counter", "Outgoing mails delivered.")
    sent.add(counts["sent"])
    failed = Metric("helpdesk_mails_failed_total", "counter",
                    "Outgoing mails given up on (permanent failure).")
    failed.add(counts["failed"])
    return [outbox, sent, failed]


def _ticket_metrics(session: Session) -> list[Metric]:
    tickets = Metric("helpdesk_tickets", "gauge", "Tickets by status and tier.")
    for status, tier, count in sorted(_grouped(session, Ticket.status, Ticket.tier)):
        tickets.add(count, status=status, tier=tier)
    breaches = Metric("helpdesk_sla_breaches_total", "counter",
                      "Tickets whose SLA clock was breached (breach notice sent), by clock.")
    for clock, column in (("first_response", Ticket.first_response_breach_sent_at),
                          ("resolution", Ticket.resolution_breach_sent_at)):
        breaches.add(session.scalar(select(func.count()).where(column.is_not(None))) or 0,
                     clock=clock)
    return [tickets, breaches]


def _poll_metrics(config: Config, session: Session, now: datetime, since: datetime) -> list[Metric]:
    lag = Metric("helpdesk_poll_lag_seconds", "gauge",
                 "Seconds since an IMAP mailbox was last polled successfully.")
    failing = Metric("helpdesk_poll_failing", "gauge", "1 when the mailbox's last poll failed.")
    cursors = {(c.mailbox, c.folder): c for c in session.scalars(select(MailboxCursor))}
    for mailbox in (m for m in config.mailboxes if m.pulls_imap):
        cursor = cursors.get((mailbox.address, mailbox.imap_folder))
        last = cursor.last_success_at if cursor and cursor.last_success_at else since
        labels = {"mailbox": mailbox.address, "folder": mailbox.imap_folder}
        lag.add(max(0.0, (now - last).total_seconds()), **labels)
        failing.add(1 if cursor and cursor.last_error else 0, **labels)
    return [lag, failing]


def collect_metrics(config: Config, store: Store, now: datetime, *, since: datetime) -> list[Metric]:
    with store.transaction() as session:
        return [*_mail_metrics(session), *_outbox_metrics(session), *_ticket_metrics(session),
                *_poll_metrics(config, session, now, since)]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def exposition(metrics: list[Metric]) -> str:
    """The Prometheus text format (version 0.0.4)."""
    lines: list[str] = []
    for metric in metrics:
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        for labels, value in metric.samples:
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{metric.name}{{{inner}}} {_number(value)}" if inner
                         else f"{metric.name} {_number(value)}")
    return "\n".join(lines) + "\n"
