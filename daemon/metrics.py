"""The helpdesk's figures for Prometheus, as a prometheus-client collector on a registry of its own.

Mail, outbox, ticket and poller figures are counted from the store at the moment of the
scrape, so every process sharing a store answers alike and a restart loses no count.
Intake refusals are the one exception: they happen when the store cannot be written, so
they are this process's own count since it started (daemon.ingest.refusals).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.ingest.refusals import IntakeRefusals
from daemon.store import Store
from daemon.store.models import MailboxCursor, OutboxMail, RawMessage, Ticket


class HelpdeskCollector:
    """Yields every metric family at each scrape; holds no count of its own."""

    def __init__(self, config: Config, store: Store, now: Callable[[], datetime], *,
                 since: datetime, refusals: IntakeRefusals):
        self.config, self.store, self.now = config, store, now
        self.since = since  # when this process started: a never-polled mailbox lags from then
        self.refusals = refusals

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        with self.store.transaction() as session:
            families = [*_mail_metrics(session), *_outbox_metrics(session),
                        *_ticket_metrics(session),
                        *_poll_metrics(self.config, session, now, self.since)]
        yield from families
        yield _refusal_metric(self.refusals)


def metrics_registry(config: Config, store: Store, now: Callable[[], datetime], *,
                     since: datetime, refusals: IntakeRefusals) -> CollectorRegistry:
    """A registry for one app. Not prometheus-client's global one: two apps in one process
    (tests, a second web) would count into each other."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HelpdeskCollector(config, store, now, since=since, refusals=refusals))
    return registry


def _grouped(session: Session, *columns) -> list[tuple]:
    return list(session.execute(select(*columns, func.count()).group_by(*columns)))


def _mail_metrics(session: Session) -> list[Metric]:
    received = CounterMetricFamily(
        "helpdesk_mails_received_total",
        "Raw mails saved, by channel and mailbox (rows are never deleted).",
        labels=["channel", "mailbox"])
    raw = GaugeMetricFamily("helpdesk_raw_messages", "Raw mail records by channel and status.",
                            labels=["channel", "status"])
    totals: dict[tuple[str, str], int] = {}
    done = waiting = 0
    for channel, mailbox, status, count in _grouped(session, RawMessage.channel,
                                                    RawMessage.mailbox, RawMessage.status):
        key = (channel, mailbox or "")
        totals[key] = totals.get(key, 0) + count
        done += count if status in ("processed", "duplicate") else 0
        waiting += count if status == "quarantined" else 0
    for (channel, mailbox), count in sorted(totals.items()):
        received.add_metric([channel, mailbox], count)
    for channel, status, count in _grouped(session, RawMessage.channel, RawMessage.status):
        raw.add_metric([channel, status], count)
    processed = CounterMetricFamily("helpdesk_mails_processed_total",
                                    "Raw mails filed into a ticket or recognised as duplicates.",
                                    value=done)
    quarantined = GaugeMetricFamily("helpdesk_mails_quarantined",
                                    "Raw mails in quarantine now (waiting for a fix and a retry).",
                                    value=waiting)
    return [received, raw, processed, quarantined]


def _outbox_metrics(session: Session) -> list[Metric]:
    counts = dict.fromkeys(("pending", "sent", "failed"), 0)
    counts.update(dict(_grouped(session, OutboxMail.status)))
    outbox = GaugeMetricFamily("helpdesk_outbox_mails", "Outgoing mails by status.",
                               labels=["status"])
    for status, count in sorted(counts.items()):
        outbox.add_metric([status], count)
    sent = CounterMetricFamily("helpdesk_mails_sent_total", "Outgoing mails delivered.",
                               value=counts["sent"])
    failed = CounterMetricFamily("helpdesk_mails_failed_total",
                                 "Outgoing mails given up on (permanent failure).",
                                 value=counts["failed"])
    return [outbox, sent, failed]


def _ticket_metrics(session: Session) -> list[Metric]:
    tickets = GaugeMetricFamily("helpdesk_tickets", "Tickets by status and tier.",
                                labels=["status", "tier"])
    for status, tier, count in sorted(_grouped(session, Ticket.status, Ticket.tier)):
        tickets.add_metric([status, tier], count)
    breaches = CounterMetricFamily(
        "helpdesk_sla_breaches_total",
        "Tickets whose SLA clock was breached (breach notice sent), by clock.", labels=["clock"])
    for clock, column in (("first_response", Ticket.first_response_breach_sent_at),
                          ("resolution", Ticket.resolution_breach_sent_at)):
        breaches.add_metric([clock], session.scalar(
            select(func.count()).where(column.is_not(None))) or 0)
    return [tickets, breaches]


def _poll_metrics(config: Config, session: Session, now: datetime,
                  since: datetime) -> list[Metric]:
    labels = ["mailbox", "folder"]
    lag = GaugeMetricFamily("helpdesk_poll_lag_seconds",
                            "Seconds since an IMAP mailbox was last polled successfully.",
                            labels=labels)
    failing = GaugeMetricFamily("helpdesk_poll_failing", "1 when the mailbox's last poll failed.",
                                labels=labels)
    cursors = {(c.mailbox, c.folder): c for c in session.scalars(select(MailboxCursor))}
    for mailbox in (m for m in config.mailboxes if m.pulls_imap):
        cursor = cursors.get((mailbox.address, mailbox.imap_folder))
        last = cursor.last_success_at if cursor and cursor.last_success_at else since
        values = [mailbox.address, mailbox.imap_folder]
        lag.add_metric(values, max(0.0, (now - last).total_seconds()))
        failing.add_metric(values, 1 if cursor and cursor.last_error else 0)
    return [lag, failing]


def _refusal_metric(refusals: IntakeRefusals) -> Metric:
    family = CounterMetricFamily(
        "helpdesk_intake_refusals_total",
        "Mails this process could not save and refused for now (SMTP/LMTP 451, an IMAP batch "
        "left on the server, a web form 503), by channel; counted since the process started.",
        labels=["channel"])
    for channel, count in refusals.seen().counts.items():
        family.add_metric([channel], count)
    return family
