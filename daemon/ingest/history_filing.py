"""Decide where each mail of a batch of imported history goes: nowhere (a duplicate), onto
a ticket of the store, onto a ticket an earlier mail of the batch opened, or a new ticket.

The mails are threaded by the live rules (`daemon.rules.threading.match_thread`) over
the batch and the store, in the order they were saved, so a reply finds the ticket
its parent opened a few mails earlier as it would live. What the store holds is read
with a few queries for the whole batch, not per mail; nothing is written here (see
daemon.ingest.history_writes).

History changes nothing live: a mail that threads into a ticket filed live is appended
to it as history (nothing sent, its status, clocks and people untouched); every other
mail lands on an imported, closed ticket. A tagged mail from a sender with no tie to the
ticket, which live mail would hold for the coordinator, opens an imported ticket of its
own: nobody is asked to decide about history, and nothing of it joins someone else's
conversation.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.parse import ParsedMail
from daemon.rules.classify import automatic_reason
from daemon.rules.threading import ThreadMatch, match_thread, referenced_ids, tagged_number
from daemon.store.models import Client, Message, Participant, RawMessage, Technician, Ticket
from daemon.tickets import configured_client, is_tied

# A Date this far ahead of the import is a broken clock, not the mail's date.
FUTURE_SLACK = timedelta(days=1)


@dataclass(eq=False)
class Person:
    """A participant of a ticket: what `daemon.tickets.is_tied` reads of one."""

    email: str
    name: str = ""
    role: str = "cc"


@dataclass(frozen=True)
class ClientRef:
    id: int
    name: str
    domains: tuple[str, ...]


@dataclass(eq=False)
class HistoryTicket:
    """A ticket as the batch sees it: one of the store's, or one the batch opens.

    It has what the threading rules and `is_tied` read of a Ticket (number,
    requester_email, participants, client), so the live rules judge it as they would.
    """

    id: int | None
    number: str | None
    imported: bool
    requester_email: str
    client: ClientRef | None
    participants: list[Person]
    updated_at: datetime
    created_at: datetime
    new: bool = False                       # opened by this batch
    subject: str = ""
    requester_name: str = ""
    mailbox: str | None = None
    language: str = "pl"
    added_messages: int = 0
    added_people: list[Person] = field(default_factory=list)
    event: dict = field(default_factory=dict)   # why it was opened (new tickets)

    def add_person(self, email: str, name: str = "", role: str = "cc") -> None:
        email = email.lower()
        if email and all(p.email != email for p in self.participants):
            person = Person(email, name, role)
            self.participants.append(person)
            self.added_people.append(person)

    def took(self, date: datetime) -> None:
        self.added_messages += 1
        self.updated_at = max(self.updated_at, date)
        if self.new:
            self.created_at = min(self.created_at, date)


@dataclass(frozen=True)
class Record:
    """A claimed raw record of history, parsed."""

    raw_id: int
    mailbox: str | None
    channel: str
    sha256: str
    mail: ParsedMail
    filed_at: datetime | None    # the file's or the server's date for it (fallback)


@dataclass(eq=False)
class Filed:
    """Where one record of the batch went."""

    record: Record
    ticket: HistoryTicket
    date: datetime = None           # the mail's own date: its message's created_at
    kind: str = "customer"
    via: str | None = None          # "tag", "reference", None: it opened its ticket
    duplicate: bool = False         # the store or the batch has this mail already


def mail_date(mail: ParsedMail, filed_at: datetime | None, now: datetime) -> datetime:
    """The mail's own date: its Date header, else the newest Received, else the file's
    or server's date for it, else NOW. A date more than a day ahead is not believed."""
    for moment in (mail.date, mail.received_date, filed_at):
        if moment is not None and moment.tzinfo is not None and moment <= now + FUTURE_SLACK:
            return moment
    return now


class Directory:
    """Clients and technicians as the store holds them, read once per importer."""

    def __init__(self, session: Session, config: Config) -> None:
        clients = Client.__table__
        self.config = config
        self.clients = {row.name: ClientRef(row.id, row.name, tuple(row.domains or ()))
                        for row in session.execute(
                            select(clients.c.id, clients.c.name, clients.c.domains)
                            .where(clients.c.active))}
        self.by_id = {c.id: c for c in self.clients.values()}
        technicians = Technician.__table__
        self.technicians = frozenset(session.scalars(
            select(technicians.c.email).where(technicians.c.active)))

    def client_for(self, address: str) -> ClientRef | None:
        name = configured_client(self.config, address)
        return self.clients.get(name) if name else None

    def language_for(self, client: ClientRef | None, mailbox: str | None) -> str:
        """As `daemon.tickets.open_ticket` chooses it."""
        config = self.config
        client_config = next((c for c in config.clients if client and c.name == client.name),
                             None)
        mailbox_config = config.mailbox(mailbox) if mailbox else None
        return ((client_config and client_config.language)
                or (mailbox_config and mailbox_config.language) or config.language)


# The store's side of a batch, built once (see daemon/tickets.py), lists bound at execution.
_MESSAGES, _TICKETS = Message.__table__, Ticket.__table__
_PARTICIPANTS, _RAWS = Participant.__table__, RawMessage.__table__
_HELD_IDS = select(_MESSAGES.c.message_id, _MESSAGES.c.ticket_id).where(
    _MESSAGES.c.message_id.in_(bindparam("ids", expanding=True)))
_TICKET_COLUMNS = (_TICKETS.c.id, _TICKETS.c.number, _TICKETS.c.imported,
                   _TICKETS.c.requester_email, _TICKETS.c.client_id, _TICKETS.c.updated_at,
                   _TICKETS.c.created_at)
_TICKETS_BY_ID = select(*_TICKET_COLUMNS).where(
    _TICKETS.c.id.in_(bindparam("ids", expanding=True)))
_TICKETS_BY_NUMBER = select(*_TICKET_COLUMNS).where(
    _TICKETS.c.number.in_(bindparam("numbers", expanding=True)))
_PEOPLE = select(_PARTICIPANTS.c.ticket_id, _PARTICIPANTS.c.email, _PARTICIPANTS.c.name,
                 _PARTICIPANTS.c.role).where(
    _PARTICIPANTS.c.ticket_id.in_(bindparam("ids", expanding=True)))
# Mail without a Message-ID, filed before: found by its content (a folder read again).
_SAME_CONTENT = select(_RAWS.c.sha256, _RAWS.c.ticket_id).where(
    _RAWS.c.sha256.in_(bindparam("digests", expanding=True)), _RAWS.c.message_id.is_(None),
    _RAWS.c.ticket_id.is_not(None))
IN_LIST = 500   # values per IN (...): well inside every backend's limit on parameters


def _chunks(items: Sequence, size: int = IN_LIST) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class StoreSide:
    """What the store holds that a batch's mails name: their Message-IDs, the messages
    they reference, the tickets they are tagged with, and those tickets' people."""

    def __init__(self, session: Session, directory: Directory, records: list[Record],
                 prefix: str) -> None:
        self.session, self.directory = session, directory
        ids = {i for r in records for i in (r.mail.message_id, *referenced_ids(r.mail)) if i}
        self.ticket_of_id: dict[str, int] = {}
        for chunk in _chunks(sorted(ids)):
            self.ticket_of_id.update(session.execute(_HELD_IDS, {"ids": chunk}).all())
        anonymous = sorted({r.sha256 for r in records if not r.mail.message_id})
        self.ticket_of_content: dict[str, int] = {}
        for chunk in _chunks(anonymous):
            self.ticket_of_content.update(session.execute(_SAME_CONTENT,
                                                          {"digests": chunk}).all())
        numbers = sorted({n for r in records if (n := tagged_number(r.mail.subject, prefix))})
        self.tickets: dict[int, HistoryTicket] = {}
        self._load(_TICKETS_BY_ID, "ids", sorted({*self.ticket_of_id.values(),
                                                 *self.ticket_of_content.values()}))
        self._load(_TICKETS_BY_NUMBER, "numbers", numbers)
        self.by_number = {t.number: t for t in self.tickets.values()}

    def _load(self, statement, name: str, values: list) -> None:
        rows = [row for chunk in _chunks(values)
                for row in self.session.execute(statement, {name: chunk})]
        fresh = [row for row in rows if row.id not in self.tickets]
        people: dict[int, list[Person]] = {row.id: [] for row in fresh}
        for chunk in _chunks(sorted(people)):
            for ticket_id, email, name_, role in self.session.execute(_PEOPLE, {"ids": chunk}):
                people[ticket_id].append(Person(email, name_, role))
        for row in fresh:
            self.tickets[row.id] = HistoryTicket(
                id=row.id, number=row.number, imported=row.imported,
                requester_email=row.requester_email,
                client=self.directory.by_id.get(row.client_id), participants=people[row.id],
                updated_at=row.updated_at, created_at=row.created_at)

    def ticket_holding(self, message_id: str | None) -> HistoryTicket | None:
        ticket_id = self.ticket_of_id.get(message_id) if message_id else None
        return self.tickets.get(ticket_id) if ticket_id is not None else None


class BatchThreads:
    """`daemon.rules.threading.Threads` over the batch filed so far and the store."""

    def __init__(self, session: Session, store_side: StoreSide) -> None:
        self.session, self.store_side = session, store_side
        self.filed_ids: dict[str, HistoryTicket] = {}   # Message-ID -> its ticket, this batch

    def ticket_numbered(self, number: str) -> HistoryTicket | None:
        # The batch's own tickets are numbered when it is written: a tag names the store's.
        return self.store_side.by_number.get(number)

    def ticket_of_message_ids(self, ids: list[str]) -> HistoryTicket | None:
        for message_id in ids:
            ticket = self.filed_ids.get(message_id) or self.store_side.ticket_holding(message_id)
            if ticket is not None:
                return ticket
        return None

    def tied(self, ticket: HistoryTicket, address: str) -> bool:
        return is_tied(self.session, ticket, address)


class BatchFiling:
    """Files the records of one batch, in order; `filed` and `tickets` say the outcome."""

    def __init__(self, session: Session, config: Config, directory: Directory,
                 records: list[Record], now: datetime) -> None:
        self.config, self.directory, self.now = config, directory, now
        self.store_side = StoreSide(session, directory, records, config.ticket_prefix)
        self.threads = BatchThreads(session, self.store_side)
        self.contents: dict[str, HistoryTicket] = {}    # sha256 -> ticket, no Message-ID
        self.filed: list[Filed] = []
        self.new_tickets: list[HistoryTicket] = []
        for record in records:
            self.filed.append(self._file(record))

    @property
    def touched(self) -> list[HistoryTicket]:
        """The store's tickets this batch appends to."""
        return [t for t in self.store_side.tickets.values() if t.added_messages]

    def _file(self, record: Record) -> Filed:
        mail = record.mail
        known = self._known(record)
        if known is not None:
            return Filed(record, known, duplicate=True)
        filed = Filed(record, None, date=mail_date(mail, record.filed_at, self.now),
                      kind=self._kind(mail))
        match = match_thread(mail, self.config.ticket_prefix, self.threads)
        if match.ticket is None or match.held:
            filed.ticket = self._open(record, filed.date, match)
        else:
            filed.ticket, filed.via = match.ticket, match.via
            self._join(filed)
        filed.ticket.took(filed.date)
        if mail.message_id:
            self.threads.filed_ids[mail.message_id] = filed.ticket
        else:
            self.contents[record.sha256] = filed.ticket
        return filed

    def _known(self, record: Record) -> HistoryTicket | None:
        """The ticket already holding this mail (by Message-ID, or by content without one)."""
        message_id = record.mail.message_id
        if message_id:
            return (self.threads.filed_ids.get(message_id)
                    or self.store_side.ticket_holding(message_id))
        ticket_id = self.store_side.ticket_of_content.get(record.sha256)
        return self.contents.get(record.sha256) or (
            self.store_side.tickets.get(ticket_id) if ticket_id is not None else None)

    def _kind(self, mail: ParsedMail) -> str:
        if mail.from_email in self.directory.technicians:
            return "technician"
        return "auto" if automatic_reason(mail, self.config) else "customer"

    def _open(self, record: Record, date: datetime, match: ThreadMatch) -> HistoryTicket:
        """A new imported ticket for RECORD's mail, with its people as `open_ticket` adds them."""
        mail = record.mail
        client = self.directory.client_for(mail.from_email)
        ticket = HistoryTicket(
            id=None, number=None, imported=True, requester_email=mail.from_email,
            client=client, participants=[], updated_at=date, created_at=date, new=True,
            subject=mail.subject, requester_name=mail.from_name, mailbox=record.mailbox,
            language=self.directory.language_for(client, record.mailbox))
        ticket.add_person(mail.from_email, mail.from_name, role="requester")
        for address in mail.cc:
            if address not in self.config.own_addresses:
                ticket.add_person(address)
        ticket.event = {"channel": record.channel, "mailbox": record.mailbox,
                        "client": client.name if client else None, "date": date.isoformat()}
        if match.held:  # matched a ticket the sender has no tie to: not joined to it
            ticket.event["not_joined"] = match.ticket.number
        self.new_tickets.append(ticket)
        return ticket

    def _join(self, filed: Filed) -> None:
        """Someone who answered joins an imported conversation, as live; a live ticket's
        people are not changed by history (they are who its next mail goes to)."""
        if filed.kind == "customer" and filed.ticket.imported:
            filed.ticket.add_person(filed.record.mail.from_email, filed.record.mail.from_name)
