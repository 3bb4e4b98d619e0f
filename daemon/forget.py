"""GDPR erasure: `helpdesk forget EMAIL` anonymises one contact on closed and resolved tickets.

On each such ticket the contact's address becomes a pseudonym (`forgotten-<random>@invalid`,
new per erasure, so nothing ties it back to the address), and their names and phone
numbers become `[anonymised]` wherever the ticket keeps text: requester, participants,
message senders, recipients, subjects, bodies, attachment names of their mails, events,
the raw bytes of the ticket's mail (blanked, as discarded quarantine is), and the sent
mail in the outbox. Call records matched to the contact lose the contact and the number.
Tickets still open are left alone and listed with the reason: the conversation needs the
address until the work is done.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.ingest.calls.numbers import is_external, normalise_number
from daemon.store import Store
from daemon.store.models import (
    Attachment,
    Call,
    Message,
    OutboxMail,
    Participant,
    RawMessage,
    Technician,
    Ticket,
)
from daemon.tickets import record_event

log = logging.getLogger(__name__)
CLOSED = ("resolved", "closed")
MASK = "[anonymised]"
ERASED_ACTION = "personal_data_erased"


class ForgetError(Exception):
    """The address cannot be forgotten this way (e.g. it is a technician's)."""


@dataclass
class Contact:
    """What identifies the person in stored text: the address, names and phone numbers."""

    address: str
    pseudonym: str
    names: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)  # as written on forms, and as E.164

    def pattern(self) -> re.Pattern:
        needles = sorted({self.address, *self.names, *self.phones}, key=len, reverse=True)
        # "Jan Nowak" also as Jan_Nowak, Jan.Nowak, Jan-Nowak (file names, signatures).
        alternatives = (r"[\s_.\-]+".join(re.escape(w) for w in n.split()) for n in needles if n)
        return re.compile("|".join(alternatives), re.IGNORECASE)

    def scrub(self, text: str | None) -> str | None:
        if not text:
            return text
        pattern = self.pattern()
        return pattern.sub(lambda m: self.pseudonym if m.group(0).lower() == self.address
                           else MASK, text)


@dataclass
class ForgetReport:
    dry_run: bool
    tickets: list[dict] = field(default_factory=list)   # anonymised (or would be)
    skipped: list[dict] = field(default_factory=list)   # open tickets, with the reason
    calls: int = 0

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "tickets": self.tickets, "skipped": self.skipped,
                "calls": self.calls}


def forget(config: Config, store: Store, email: str, now: datetime, *,
           dry_run: bool = False) -> ForgetReport:
    """Anonymise EMAIL on its closed tickets in one transaction; DRY_RUN changes nothing."""
    address = email.strip().lower()
    if "@" not in address:
        raise ForgetError(f"{email!r} is not an email address")
    if config.technician(address):
        raise ForgetError(f"{address} is a technician in the configuration, not a contact")
    report = ForgetReport(dry_run)
    with store.transaction() as session:
        if session.scalar(select(Technician.id).where(Technician.email == address)):
            raise ForgetError(f"{address} has a web account: `helpdesk user disable` it first")
        contact = _contact(session, address)
        for ticket in _tickets_of(session, address):
            if ticket.status not in CLOSED:
                report.skipped.append({"ticket": ticket.number, "status": ticket.status,
                                       "reason": f"still {ticket.status}: forget it once closed"})
                continue
            changes = _anonymise_ticket(session, ticket, contact).as_counts()
            report.tickets.append({"ticket": ticket.number, "status": ticket.status,
                                   "changes": changes})
            if not dry_run:
                record_event(session, ticket, ERASED_ACTION, now, actor="forget",
                             pseudonym=contact.pseudonym, changes=changes)
        report.calls = _anonymise_calls(session, contact)
        if dry_run:
            session.rollback()  # everything above was worked out, nothing is kept
    log.info("forget: %s %d tickets, %d skipped, %d calls (pseudonym %s)",
             "would anonymise" if dry_run else "anonymised", len(report.tickets),
             len(report.skipped), report.calls, contact.pseudonym)
    return report


# -- who and where ----------------------------------------------------------------------------
def _contact(session: Session, address: str) -> Contact:
    contact = Contact(address, f"forgotten-{secrets.token_hex(5)}@invalid")
    names = [*session.scalars(select(Ticket.requester_name).where(Ticket.requester_email == address)),
             *session.scalars(select(Participant.name).where(Participant.email == address)),
             *session.scalars(select(Message.from_name).where(Message.from_email == address))]
    for form in _forms_of(session, address):
        names.append(str(form.get("name") or ""))
        phone = str(form.get("phone") or "").strip()
        if phone:
            contact.phones.add(phone)
            if number := normalise_number(phone):
                contact.phones.add(number)
    # Short fragments ("Jan") would mask unrelated words; a full name is kept to mask.
    contact.names = {n.strip() for n in names if len(n.strip()) >= 4 and n.strip().lower() != address}
    return contact


def _forms_of(session: Session, address: str) -> list[dict]:
    rows = session.scalars(select(RawMessage.envelope).where(
        RawMessage.channel == "web",
        func.lower(cast(RawMessage.envelope, Text)).like(f"%{_like(address)}%", escape="\\")))
    forms = [(envelope or {}).get("form") or {} for envelope in rows]
    return [f for f in forms if str(f.get("email") or "").strip().lower() == address]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _tickets_of(session: Session, address: str) -> list[Ticket]:
    pattern = f"%{_like(address)}%"
    mentioned = or_(Message.from_email == address,
                    func.lower(cast(Message.to, Text)).like(pattern, escape="\\"),
                    func.lower(cast(Message.cc, Text)).like(pattern, escape="\\"))
    ids = {*session.scalars(select(Ticket.id).where(Ticket.requester_email == address)),
           *session.scalars(select(Participant.ticket_id).where(Participant.email == address)),
           *session.scalars(select(Message.ticket_id).where(mentioned)),
           *session.scalars(select(RawMessage.ticket_id).where(
               RawMessage.ticket_id.is_not(None), RawMessage.channel == "web",
               func.lower(cast(RawMessage.envelope, Text)).like(pattern, escape="\\")))}
    return list(session.scalars(select(Ticket).where(Ticket.id.in_(ids)).order_by(Ticket.id)).unique())


# -- one ticket ---------------------------------------------------------------------------------
class Changes(dict):
    """Per kind of record, which records changed: {label: {record keys}}; counted as_counts()."""

    def mark(self, label: str, obj: Any) -> None:
        self.setdefault(label, set()).add((type(obj).__name__, id(obj)))

    def as_counts(self) -> dict[str, int]:
        return {label: len(records) for label, records in self.items()}


def _set(obj: Any, name: str, value: Any, changes: Changes, label: str) -> None:
    if getattr(obj, name) != value:
        setattr(obj, name, value)
        changes.mark(label, obj)


def _anonymise_ticket(session: Session, ticket: Ticket, contact: Contact) -> Changes:
    changes = Changes()
    if ticket.requester_email == contact.address:
        _set(ticket, "requester_email", contact.pseudonym, changes, "requester")
        _set(ticket, "requester_name", "", changes, "requester")
    _set(ticket, "subject", contact.scrub(ticket.subject), changes, "subject")
    _set(ticket, "rating_comment", contact.scrub(ticket.rating_comment), changes, "rating comment")
    for participant in ticket.participants:
        if participant.email == contact.address:
            _set(participant, "email", contact.pseudonym, changes, "participants")
            _set(participant, "name", "", changes, "participants")
    theirs = {a.sha256 for m in ticket.messages if m.from_email == contact.address
              for a in m.attachments}
    for message in ticket.messages:
        _anonymise_message(message, contact, theirs, changes)
    _anonymise_raw(session, ticket, changes)
    _anonymise_outbox(session, ticket, contact, changes)
    for event in ticket.events:
        _set(event, "actor", contact.scrub(event.actor), changes, "events")
        _set(event, "detail", _scrub_json(event.detail, contact), changes, "events")
    return changes


def _anonymise_message(message: Message, contact: Contact, theirs: set[str],
                       changes: Changes) -> None:
    """THEIRS: content hashes of the contact's files, also named so when relayed onwards."""
    from_them = message.from_email == contact.address
    if from_them:
        _set(message, "from_email", contact.pseudonym, changes, "message senders")
        _set(message, "from_name", "", changes, "message senders")
    for column in ("to", "cc"):
        _set(message, column, [contact.scrub(a) for a in getattr(message, column) or []],
             changes, "message recipients")
    for column in ("subject", "text", "html"):
        _set(message, column, contact.scrub(getattr(message, column)), changes, "message texts")
    for attachment in message.attachments:
        if attachment.sha256 in theirs or contact.pattern().search(attachment.filename or ""):
            _set(attachment, "filename", _neutral_name(attachment), changes, "attachment names")


def _neutral_name(attachment: Attachment) -> str:
    suffix = PurePath(attachment.filename or "").suffix[:10]
    return f"attachment-{attachment.id}{suffix}"


def _anonymise_raw(session: Session, ticket: Ticket, changes: Changes) -> None:
    """Blank the raw bytes of the ticket's mail; the row, key and hash stay, so a redelivery
    is still recognised."""
    raw_ids = {m.raw_id for m in ticket.messages if m.raw_id}
    records = session.scalars(select(RawMessage).where(
        or_(RawMessage.ticket_id == ticket.id, RawMessage.id.in_(raw_ids))))
    for record in records:
        _set(record, "raw", b"", changes, "raw mails blanked")
        _set(record, "envelope", {}, changes, "raw mails blanked")


def _anonymise_outbox(session: Session, ticket: Ticket, contact: Contact, changes: Changes) -> None:
    """The ticket's outgoing mail quotes the conversation (often encoded): its bytes are
    blanked, and mail not sent yet is withdrawn, since it cannot be sent blank."""
    for mail in session.scalars(select(OutboxMail).where(OutboxMail.ticket_id == ticket.id)):
        if mail.status == "pending":
            _set(mail, "status", "failed", changes, "unsent mails withdrawn")
            mail.last_error = "withdrawn: personal data on the ticket was erased"
        _set(mail, "recipients", [contact.scrub(r) for r in mail.recipients or []], changes,
             "outgoing mails")
        _set(mail, "subject", contact.scrub(mail.subject), changes, "outgoing mails")
        _set(mail, "raw", b"", changes, "outgoing mails")


def _scrub_json(value: Any, contact: Contact) -> Any:
    if isinstance(value, str):
        return contact.scrub(value)
    if isinstance(value, list):
        return [_scrub_json(v, contact) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_json(v, contact) for k, v in value.items()}
    return value


# -- calls ------------------------------------------------------------------------------------------
def _anonymise_calls(session: Session, contact: Contact) -> int:
    """Calls matched to the contact (by address, or by a number they gave) lose both, unless
    they belong to a ticket still open."""
    numbers = {p for p in contact.phones if is_external(p)}
    matched = [Call.contact == contact.address]
    if numbers:
        matched += [Call.caller.in_(numbers), Call.callee.in_(numbers)]
    count = 0
    for call in session.scalars(select(Call).where(or_(*matched))).unique():
        if call.ticket is not None and call.ticket.status not in CLOSED:
            continue
        call.contact = None
        call.caller = None if call.caller in numbers or call.direction == "in" else call.caller
        call.callee = None if call.callee in numbers or call.direction == "out" else call.callee
        call.raw = {}
        count += 1
    return count
