"""The one pipeline every raw record goes through, whatever channel brought it.

Parse, deduplicate, classify, thread, apply the mailbox's policy, file into a ticket,
route, converse (acknowledge, notify, relay, obey commands) — each a small named step,
all in one transaction per record, so the mail a step queues is committed with it. A record whose processing fails is quarantined with
its reason (never dropped) and can be retried after a fix.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from daemon.clock import Clock
from daemon.config import Config
from daemon.conversation import apply_mailbox_policy, converse, reopen_or_split
from daemon.ingest.calls.mail import import_report, is_report_mail
from daemon.parse import ParsedMail, UnparseableMail, parse_mail
from daemon.rules.classify import automatic_reason
from daemon.rules.flood import Overflow, bundle_subject, count_mail, overflow, start_flood
from daemon.rules.mail_auth import prove_staff
from daemon.rules.routing import route_new_ticket
from daemon.rules.threading import ThreadMatch, find_thread
from daemon.store import Store
from daemon.store.models import Client, Message, RawBody, RawMessage, Ticket
from daemon.tickets import (Inserts, add_participant, append_message, is_technician,
                            open_ticket, record_event, ticket_of_message_id)

log = logging.getLogger(__name__)


class Quarantine(Exception):
    """Raised by a step for mail that cannot be processed; the text is the reason."""


@dataclass
class Intake:
    """What the pipeline knows about one raw record as it goes through the steps."""

    session: Session
    config: Config
    raw: Claimed
    now: object
    mail: ParsedMail | None = None
    automatic: str | None = None          # why a machine sent it, or None
    kind: str = "customer"                # customer, technician, auto
    unproven_staff: str | None = None     # From names staff, without proof: why not
    flood: Overflow | None = None         # its sender is over the new-ticket limit
    match: ThreadMatch | None = None
    ticket: Ticket | None = None
    message: Message | None = None
    created: bool = False                 # this record opened its ticket
    done: bool = False                    # a step finished the record early
    notes: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.ticket.number if self.ticket else f"<{self.raw.message_id or self.raw.id}>"


Step = Callable[[Intake], None]


def parse(intake: Intake) -> None:
    try:
        intake.mail = parse_mail(intake.raw.raw,
                                 attachment_max_bytes=intake.config.limits.attachment_max_bytes)
    except UnparseableMail as exc:
        raise Quarantine(f"unparseable: {exc}") from exc
    finally:
        # The bytes are not needed again (a PBX report reloads them): a 30 MB mail's
        # bytes are not kept in memory beside its decoded files for the transaction.
        intake.raw.drop_bytes()


def deduplicate(intake: Intake) -> None:
    """The same Message-ID delivered twice or to two mailboxes is one message."""
    ticket = ticket_of_message_id(intake.session, intake.mail.message_id)
    if ticket is None:
        return
    intake.raw.status = "duplicate"
    intake.raw.ticket = intake.ticket = ticket
    intake.done = True
    log.info("<%s> duplicate of a message on %s", intake.mail.message_id, ticket.number)


def classify(intake: Intake) -> None:
    """Customer, technician or automatic mail. A From naming a technician or coordinator
    is a claim: the mail is theirs only with proof (daemon.rules.mail_auth); without,
    it is anybody's mail, held when it lands on an existing ticket (`file_message`)."""
    intake.automatic = automatic_reason(intake.mail, intake.config)
    if intake.automatic:
        intake.kind = "auto"  # an out-of-office, even a technician's, commands nothing
    elif is_technician(intake.session, intake.mail.from_email):
        proof = prove_staff(intake.session, intake.config, intake.mail)
        if proof:
            intake.kind = "technician"
        else:
            intake.unproven_staff = proof.how


def pbx_report(intake: Intake) -> None:
    """Mail to a `mail` PBX source's mailbox is a call report: its CSV files become call
    records, in this record's transaction; it opens no ticket."""
    if not is_report_mail(intake.config, intake.raw):
        return
    result = import_report(intake.session, intake.config, intake.raw, intake.mail, intake.now)
    if not result.files:
        raise Quarantine("PBX call report without a CSV attachment")
    intake.raw.status = "processed"
    intake.raw.reason = f"PBX call report: {result.summary()}"[:4000]
    intake.done = True
    log.info("<%s> PBX call report to %s: %s", intake.mail.message_id, intake.raw.mailbox,
             result.summary())


def thread(intake: Intake) -> None:
    if intake.raw.channel == "web":
        # The form reports a new problem; a ticket tag typed into its subject joins nothing.
        intake.match = ThreadMatch(None)
        return
    intake.match = find_thread(intake.session, intake.mail, intake.config.ticket_prefix)
    intake.ticket = intake.match.ticket


def hold_new_mail_of_a_flood(intake: Intake) -> None:
    """Mail that would open a ticket from a sender over the hourly limit goes into the
    sender's bundle instead (daemon.rules.flood): held, acknowledged to nobody.

    Proven staff mail is never a flood; nor is the web form, whose submitter sees the
    number of the ticket made (a bundle's is not theirs) and which has brakes of its own.
    """
    if intake.ticket is not None or intake.kind == "technician" or intake.raw.channel == "web":
        return
    intake.flood = overflow(intake.session, intake.config, intake.mail.from_email, intake.now)
    if intake.flood is None:
        return
    flood = intake.flood.flood
    if flood is None:
        flood = start_flood(intake.session, intake.flood.sender, _open_bundle(intake), intake.now)
        record_event(intake.session, flood.ticket, "flood_started", intake.now,
                     sender=intake.flood.sender, limit=intake.flood.limit)
    intake.ticket = flood.ticket
    count_mail(flood, intake.now)


def _open_bundle(intake: Intake) -> Ticket:
    """The held ticket a new flood's mail goes into: nobody from its CC joins it."""
    mail = dataclasses.replace(intake.mail, cc=[])
    bundle = open_ticket(intake.session, intake.config, mail, channel="email",
                         mailbox=intake.raw.mailbox, now=intake.now)
    bundle.subject = bundle_subject(intake.flood.sender, intake.config.language)
    intake.created = True
    return bundle


def file_message(intake: Intake) -> None:
    """Append the mail to its ticket, or open a new ticket for it; held mail waits for the
    coordinator, with the reason recorded."""
    session, mail, now = intake.session, intake.mail, intake.now
    if intake.ticket is None:
        channel = "web" if intake.raw.channel == "web" else "email"
        intake.ticket = open_ticket(session, intake.config, mail, channel=channel,
                                    mailbox=intake.raw.mailbox, now=now)
        intake.created = True
        _apply_form_choices(intake)
    hold = held_because(intake)
    intake.message = append_message(session, intake.ticket, mail, kind=intake.kind,
                                    direction="in", now=now, raw=intake.raw, held=bool(hold))
    if hold:
        record_event(session, intake.ticket, "held", now, actor=mail.from_email,
                     cause=hold[0], reason=hold[1], message_id=mail.message_id)
    elif not intake.created:
        _join_conversation(intake)
        record_event(session, intake.ticket, "message_added", now, actor=mail.from_email,
                     via=intake.match.via, kind=intake.kind)


def held_because(intake: Intake) -> tuple[str, str] | None:
    """(cause, reason) when the mail waits for the coordinator, else None."""
    if intake.flood is not None:
        return "flood", (f"more than {intake.flood.limit} new tickets in an hour from "
                         f"{intake.flood.sender}")
    if intake.match is not None and intake.match.held:
        how = "tagged reply" if intake.match.via == "tag" else "reply by reference"
        return "stranger", f"{how} from a sender with no tie to the ticket"
    if intake.unproven_staff and not intake.created:
        return "staff_unproven", f"From names a staff member, not proven: {intake.unproven_staff}"
    return None


def _apply_form_choices(intake: Intake) -> None:
    """What the web form asked for: category, the network when the address does not say,
    and the language the reporter used the form in."""
    form = (intake.raw.envelope or {}).get("form") if intake.raw.channel == "web" else None
    if not form:
        return
    ticket = intake.ticket
    ticket.category = str(form.get("category") or "")[:100] or None
    if ticket.client is None and form.get("client"):
        ticket.client = intake.session.scalar(select(Client).where(
            Client.name == form["client"], Client.active))
    if form.get("language") in ("pl", "en"):
        ticket.language = form["language"]
    record_event(intake.session, ticket, "form_choices", intake.now, actor=intake.mail.from_email,
                 category=ticket.category, client=ticket.client.name if ticket.client else None,
                 language=ticket.language)


def _join_conversation(intake: Intake) -> None:
    """Someone who answered a message of the ticket (e.g. from CC) joins its conversation."""
    if intake.kind != "customer":
        return
    if add_participant(intake.session, intake.ticket, intake.mail.from_email,
                       intake.mail.from_name):
        record_event(intake.session, intake.ticket, "participant_added", intake.now,
                     actor=intake.mail.from_email, email=intake.mail.from_email)


def route(intake: Intake) -> None:
    if intake.created and intake.flood is None:  # a bundle runs no clock and has no rules
        route_new_ticket(intake.session, intake.config, intake.ticket, intake.mail, intake.now)


def finish(intake: Intake) -> None:
    intake.raw.status = "processed"
    intake.raw.ticket = intake.ticket
    log.info("%s <%s> %s from %s", intake.ticket.number, intake.mail.message_id,
             "opened" if intake.created else ("held" if intake.message.held else "appended"),
             intake.mail.from_email)


STEPS: tuple[Step, ...] = (parse, deduplicate, classify, pbx_report, thread,
                           apply_mailbox_policy, reopen_or_split, hold_new_mail_of_a_flood,
                           file_message, route, converse, finish)


class Claimed:
    """The raw record a pipeline run has claimed: its columns as plain attributes.

    Not an ORM object: the steps read a few columns and set the outcome (`status`,
    `reason`, `ticket`), which the run writes with one UPDATE at its end. Loading and
    flushing the record through the unit of work cost more than its one SELECT and one
    UPDATE, and nothing else in the record's transaction reads it.
    """

    __slots__ = ("id", "channel", "mailbox", "origin", "envelope", "message_id", "attempts",
                 "processed_at", "status", "reason", "ticket", "_data", "_session")

    def __init__(self, session: Session, row) -> None:
        self.id, self.channel, self.mailbox = row.id, row.channel, row.mailbox
        self.origin, self.envelope, self.message_id = row.origin, row.envelope, row.message_id
        self.attempts = (row.attempts or 0) + 1
        self.processed_at = None
        self.status, self.reason, self.ticket = "pending", None, None
        self._data, self._session = row.data, session

    @property
    def raw(self) -> bytes:
        """The bytes: loaded with the claim; read again once dropped (a PBX report)."""
        if self._data is None:
            self._data = self._session.scalar(_RAW_BYTES, {"raw_id": self.id})
            if self._data is None:
                raise Quarantine("the record's bytes are missing from the store")
        return self._data

    def drop_bytes(self) -> None:
        self._data = None

    def write(self, session: Session) -> None:
        """The record's outcome, after the flush that gives a new ticket its id."""
        if self.ticket is not None and self.ticket.id is None:
            session.flush()
        session.execute(_FINISH, {
            "raw_id": self.id, "status": self.status, "reason": self.reason,
            "attempts": self.attempts, "processed_at": self.processed_at,
            "ticket_id": self.ticket.id if self.ticket is not None else None})


def _claim_query(*, locking: bool, by_id: bool):
    # The bytes come with the record (parse reads them next): one query, not two. An
    # outer join: a record whose bytes are missing is still claimed, and quarantined.
    raw, body = RawMessage.__table__, RawBody.__table__
    query = (select(raw.c.id, raw.c.channel, raw.c.mailbox, raw.c.origin, raw.c.envelope,
                    raw.c.message_id, raw.c.attempts, body.c.data)
             .select_from(raw.outerjoin(body, body.c.raw_id == raw.c.id))
             .where(raw.c.status == "pending"))
    query = (query.where(raw.c.id == bindparam("raw_id")) if by_id
             else query.order_by(raw.c.id))
    if locking:  # PostgreSQL: another process skips the record this one holds
        query = query.with_for_update(skip_locked=True, of=raw)
    return query.limit(1)


# Built once: building the statement and its cache key cost as much as running it.
_CLAIM = {(locking, by_id): _claim_query(locking=locking, by_id=by_id)
          for locking in (False, True) for by_id in (False, True)}
_RAW_BYTES = select(RawBody.__table__.c.data).where(
    RawBody.__table__.c.raw_id == bindparam("raw_id"))
# SET: the parameters' keys other than raw_id, which is not a column of the table.
_FINISH = update(RawMessage.__table__).where(RawMessage.__table__.c.id == bindparam("raw_id"))


class Pipeline:
    """Claims pending raw records and runs the steps on each, one transaction per record."""

    def __init__(self, config: Config, store: Store, clock: Clock,
                 steps: tuple[Step, ...] = STEPS):
        self.config, self.store, self.clock, self.steps = config, store, clock, steps

    def _claim(self, session: Session, raw_id: int | None) -> Claimed | None:
        query = _CLAIM[self.store.backend == "postgresql", raw_id is not None]
        row = session.execute(query, {"raw_id": raw_id} if raw_id is not None else None).first()
        return Claimed(session, row) if row is not None else None

    def _run_steps(self, raw_id: int | None, claimed: list[int]) -> str | None:
        with self.store.transaction() as session:
            raw = self._claim(session, raw_id)
            if raw is None:
                return None
            claimed.append(raw.id)
            raw.processed_at = self.clock.now()
            intake = Intake(session=session, config=self.config, raw=raw, now=raw.processed_at)
            # The record's events and queued mail are rows inserted together at the end,
            # not ORM objects: most of what a new ticket writes, and most of its flush.
            with Inserts.bound(session):
                for step in self.steps:
                    step(intake)
                    if intake.done:
                        break
            raw.write(session)
            return raw.status

    def process_one(self, raw_id: int | None = None) -> str | None:
        """Process the oldest pending record (or RAW_ID); returns its new status, None if none."""
        for attempt in (1, 2):
            claimed: list[int] = []
            try:
                return self._run_steps(raw_id, claimed)
            except Quarantine as exc:
                return self._quarantine(claimed[0], str(exc))
            except IntegrityError as exc:
                # Another process filed the same Message-ID at the same moment: run again,
                # the record then reads as a duplicate.
                raw_id = claimed[0] if claimed else raw_id
                if attempt == 2 and claimed:
                    return self._quarantine(claimed[0], _reason(exc))
            except OperationalError:
                raise  # the store is unreachable: leave the record pending, try later
            except Exception as exc:  # noqa: BLE001 - any bug in a step must not lose mail
                if not claimed:
                    raise
                log.exception("%s: processing failed", self._label(claimed[0]))
                return self._quarantine(claimed[0], _reason(exc))
        return None

    def _quarantine(self, raw_id: int, reason: str) -> str:
        with self.store.transaction() as session:
            session.execute(update(RawMessage).where(RawMessage.id == raw_id,
                                                     RawMessage.status == "pending")
                            .values(status="quarantined", reason=reason[:4000],
                                    processed_at=self.clock.now(),
                                    attempts=RawMessage.attempts + 1))
        log.warning("%s quarantined: %s", self._label(raw_id), reason)
        return "quarantined"

    def _label(self, raw_id: int) -> str:
        """'<message-id> raw record N', for the log lines of a record that failed."""
        try:
            with self.store.transaction() as session:
                message_id = session.scalar(select(RawMessage.message_id)
                                            .where(RawMessage.id == raw_id))
        except Exception:  # noqa: BLE001 - a log line must not fail the quarantine
            message_id = None
        return f"<{message_id or '-'}> raw record {raw_id}"

    def process_pending(self, limit: int | None = None,
                        stop: threading.Event | None = None) -> Counter:
        """Work off the backlog; returns how many records ended in each status."""
        results: Counter = Counter()
        while limit is None or sum(results.values()) < limit:
            if stop is not None and stop.is_set():
                break
            status = self.process_one()
            if status is None:
                break
            results[status] += 1
        return results


def _reason(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"
