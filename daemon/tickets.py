"""Ticket operations inside one transaction: numbers, messages, participants, audit events."""
from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import Session

from daemon.config import Config, derived
from daemon.parse import ParsedAttachment, ParsedMail
from daemon.store.models import (Attachment, Blob, Client, Event, Message, Participant,
                                 RawMessage, Technician, Ticket, TicketCounter)


def _insert_ignore(connection: Connection, model, values: dict) -> None:
    """INSERT … ON CONFLICT DO NOTHING on either backend (blob and counter rows), on the
    session's connection or one of its own."""
    # VALUES as execution parameters: a cached compiled statement keeps the statement it
    # was compiled from, and with .values() a blob's bytes with it.
    connection.execute(_insert_ignoring(connection.dialect.name, model), values)


@functools.cache
def _insert_ignoring(backend: str, model):
    """The INSERT … ON CONFLICT DO NOTHING of MODEL, built once per backend (building a
    statement and its cache key costs about as much as running it)."""
    dialect = postgresql if backend == "postgresql" else sqlite
    return dialect.insert(model.__table__).on_conflict_do_nothing()  # Core: see read_rows


@functools.cache
def _insert(table):
    """The plain INSERT into TABLE, built once: rows come as execution parameters."""
    return insert(table)


def reading(session: Session, *models: type) -> contextlib.AbstractContextManager:
    """A block that touches only MODELS' tables (reads them, or writes them with plain
    SQL), run without the autoflush when that flush could not change its outcome: nothing
    of MODELS is new or changed in SESSION, and nothing at all is marked deleted.

    Each autoflush is a unit-of-work pass, a large part of a record's ORM cost, and
    most of a record's queries come while only unrelated rows are pending (the claimed
    raw record, the new message). The flush then comes later, at the latest at commit,
    in the same transaction. A change to a row of MODELS' tables is always an object of
    MODELS in `new` or `dirty`: every one-to-many relationship here has its back-reference,
    so a child moved in or out of a collection is itself changed, and the store has no
    triggers or cascading deletes. When anything of MODELS is pending this is a plain block
    and the query flushes as before.
    """
    if _pending(session, models):
        return contextlib.nullcontext(session)
    return session.no_autoflush


def _pending(session: Session, models: tuple[type, ...]) -> bool:
    return bool(session.deleted) or any(isinstance(o, models)
                                        for o in (*session.new, *session.dirty))


def read_rows(session: Session, statement, params: dict, *models: type) -> Result:
    """Run STATEMENT, a Core statement over MODELS' tables, on SESSION's connection.

    A statement of ORM attributes goes through the ORM's compile and execute steps even
    when it asks for columns: a short lookup costs about 40 µs so, 20 as a Core statement
    through the session and 15 on its connection. Before it runs, the session flushes
    when its autoflush would (anything of MODELS pending, as for `reading`, and the
    autoflush not turned off around the caller); otherwise the pending rows wait.
    """
    if session.autoflush and _pending(session, models):
        session.flush()
    return session.connection().execute(statement, params)


_NO_TICKET = object()  # Inserts.add: a row that names no ticket (not even NULL)


class Inserts:
    """Rows added with one INSERT per table (an executemany) when `write` is called.

    For rows that nothing reads back before `write`: events, queued mail and the
    ticket's copy of each mail, in bulk. An ORM object costs more to build and to flush
    than its row costs to insert: a third of an SLA notice's time, and most of a new
    ticket's flush. The caller writes before it commits, and before it does anything
    that reads these tables or orders itself after these rows.

    A row may belong to a ticket not yet in the store: its ticket's id is read when the
    rows are written, after the session's flush has inserted the ticket.

    `bound` opens a block in which `record_event` and `enqueue` add to these rows
    instead of the session (the pipeline's record transaction).
    """

    def __init__(self) -> None:
        self._rows: dict[type, list[dict]] = {}

    @classmethod
    @contextlib.contextmanager
    def bound(cls, session: Session) -> Iterator[Inserts]:
        """A block whose events and queued mail in SESSION are rows of the yielded
        Inserts, written when the block ends without an exception."""
        if _BOUND in session.info:
            raise RuntimeError("an Inserts is bound to this session already")
        rows = session.info[_BOUND] = cls()
        try:
            yield rows
            rows.write(session)
        finally:
            del session.info[_BOUND]

    def add(self, model: type, *, ticket: Ticket | None | object = _NO_TICKET,
            **values) -> dict:
        """A row of MODEL; with TICKET, its ticket_id is TICKET's id at `write` (NULL for
        None: every row of a table has the same columns, one executemany)."""
        if ticket is not _NO_TICKET:
            values[_TICKET] = ticket
        self._rows.setdefault(model, []).append(values)
        return values

    def event(self, ticket: Ticket, action: str, now: datetime, actor: str = "system",
              **detail) -> dict:
        """What `record_event` records."""
        return self.add(Event, ticket=ticket, at=now, actor=actor, action=action,
                        detail=detail)

    def message(self, ticket: Ticket, mail: ParsedMail, *, kind: str, direction: str,
                now: datetime) -> dict:
        """What `append_message` appends, for a mail without files."""
        if mail.attachments:
            raise ValueError("a message with files is appended with append_message")
        _counted(ticket, now)
        return self.add(Message, ticket=ticket,
                        **_message_values(mail, kind=kind, direction=direction, now=now))

    def incoming(self, ticket: Ticket, mail: ParsedMail, *, kind: str, now: datetime,
                 raw_id: int | None, held: bool) -> Message:
        """What `append_message` appends for an arriving mail without files: a Message
        the steps after filing read and may change (its kind, its held flag), but not an
        object of the session. Its row is read from it at `write`, so those changes are
        in it; it is not in `ticket.messages`, and its id is not read back."""
        message = Message(raw_id=raw_id, held=held,
                          **_message_values(mail, kind=kind, direction="in", now=now))
        _counted(ticket, now, held)
        self.add(Message, ticket=ticket, **{_OBJECT: message})
        return message

    def pending(self, model: type) -> list[dict]:
        """The rows of MODEL added and not yet written."""
        return self._rows.get(model, [])

    def __len__(self) -> int:
        return sum(map(len, self._rows.values()))

    def write(self, session: Session) -> None:
        if not len(self):
            return
        session.flush()  # what is pending in the session comes first, then these rows
        dialect = session.get_bind().dialect.name
        for model, rows in self._rows.items():
            rows = _uniform(model.__table__, [_resolved(row) for row in rows])
            if dialect == "postgresql" and len(rows) >= COPY_FROM:
                copy_rows(session, model.__table__, rows)
            else:  # below the ORM's bulk INSERT, whose bookkeeping these rows do not need
                session.connection().execute(_insert(model.__table__), rows)
        self._rows.clear()


_BOUND = "jantar.inserts"      # session.info key of the bound Inserts
_TICKET = "_ticket"            # a row's ticket object, whose id is read at write
_OBJECT = "_object"            # a row read from a transient ORM object at write
# Below this many rows, an executemany (one multi-row INSERT) costs PostgreSQL no more
# than a COPY, whose own statement and setup a record's handful of rows do not repay.
COPY_FROM = 50


def bound_inserts(session: Session) -> Inserts | None:
    """The Inserts of an `Inserts.bound` block open on SESSION, or None."""
    return session.info.get(_BOUND)


def _resolved(row: dict) -> dict:
    if _TICKET not in row and _OBJECT not in row:
        return row
    values = {k: v for k, v in row.items() if k not in (_TICKET, _OBJECT)}
    if _OBJECT in row:
        state = row[_OBJECT].__dict__  # the attributes set on it: columns, no relationships
        values.update((c.key, state[c.key]) for c in _columns(type(row[_OBJECT]))
                      if c.key in state)
    if _TICKET in row:
        values["ticket_id"] = row[_TICKET].id if row[_TICKET] is not None else None
    return values


@functools.cache
def _columns(model) -> tuple:
    return tuple(model.__mapper__.column_attrs)


def _uniform(table, rows: list[dict]) -> list[dict]:
    """ROWS, each with the same keys (one executemany takes its columns from the first):
    a key a row leaves out gets its column's Python-side default, or NULL."""
    keys = set(rows[0])
    if all(len(row) == len(keys) and keys.issuperset(row) for row in rows):
        return rows
    every = set().union(*rows)
    missing = {key: _missing(table.columns[key]) for key in every}
    return [row if len(row) == len(every) else {**{k: missing[k]() for k in every - set(row)},
                                                **row}
            for row in rows]


def _missing(column):
    """() -> the value an INSERT gives COLUMN when a row leaves it out."""
    default = column.default
    if default is None:
        return lambda: None
    if default.is_scalar:
        return lambda: default.arg
    if default.is_callable:
        return lambda: default.arg(None)  # wrapped: takes the (absent) execution context
    raise ValueError(f"{column}: a SQL default cannot be filled in for a row")


def copy_rows(session: Session, table, rows: list[dict]) -> None:
    """Insert ROWS into TABLE on PostgreSQL with one COPY, in the session's transaction.

    COPY costs PostgreSQL a fraction of an INSERT per row (no statement per row to
    parse, bind and execute), and psycopg writes its rows in C. Each value goes through
    its column type's own bind processing, the same as an INSERT; a column a row leaves
    out gets the column's Python-side default, or NULL. Below the ORM: the caller
    flushes first if pending objects must come before these rows.
    """
    dialect = session.get_bind().dialect
    given = set().union(*rows)
    columns = [c for c in table.columns
               if c.key in given or (c.default is not None and not c.primary_key)]
    fills = [_column_fill(c, dialect) for c in columns]
    names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor, \
            cursor.copy(f"COPY {dialect.identifier_preparer.format_table(table)} ({names}) "
                        "FROM STDIN") as copy:
        for row in rows:
            copy.write_row([fill(row) for fill in fills])


def _column_fill(column, dialect):
    """ROW -> the value COPY writes into COLUMN."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    missing = _missing(column)
    key = column.key

    def fill(row: dict):
        value = row[key] if key in row else missing()
        return process(value) if process is not None and value is not None else value
    return fill


def participants_of(session: Session, ticket: Ticket) -> list[Participant]:
    """TICKET's participants, loaded without flushing the record's other pending rows.

    Participants are only ever added through this collection (`add_participant`), so a
    pending one is already in it once loaded; loading reads only the participants table.
    """
    with reading(session, Participant):
        return ticket.participants


def _text(value: str | None, limit: int | None = None) -> str | None:
    """PostgreSQL text cannot hold NUL; mail sometimes does."""
    if value is None:
        return None
    value = value.replace("\x00", "")
    return value[:limit] if limit else value


def next_number(session: Session, prefix: str) -> str:
    """The next ticket number for PREFIX, unique across processes.

    On PostgreSQL the counter is incremented in a transaction of its own, committed at
    once: the row's lock is held for that one statement, not for the rest of the
    creating transaction (rendering and queueing the acknowledgement, the commit), which
    made every new ticket in every other process wait. The price is a skipped number
    when the creating transaction rolls back. SQLite writes one transaction at a time
    anyway: there the number stays in the creating transaction, gapless.
    """
    engine = session.get_bind()
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            value = _increment(connection, prefix)
    else:  # counter rows are never ORM objects in a session: nothing to flush first
        value = _increment(session.connection(), prefix)
    return f"{prefix}-{value}"


def reserve_numbers(session: Session, prefix: str, count: int) -> list[str]:
    """COUNT ticket numbers for PREFIX with one increment of the counter (a batch of
    imported history), committed as `next_number` commits its one."""
    if count <= 0:
        return []
    engine = session.get_bind()
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            last = _increment(connection, prefix, count)
    else:
        last = _increment(session.connection(), prefix, count)
    return [f"{prefix}-{value}" for value in range(last - count + 1, last + 1)]


def _increment(connection: Connection, prefix: str, by: int = 1) -> int:
    # The row exists after a prefix's first ticket: try the increment first, and create
    # the row (then increment it) only when it is missing.
    values = {"counter_prefix": prefix, "by": by}
    value = connection.execute(_INCREMENT, values).scalar_one_or_none()
    if value is None:
        _insert_ignore(connection, TicketCounter, {"prefix": prefix, "value": 0})
        value = connection.execute(_INCREMENT, values).scalar_one()
    return value


# The statements every record runs, built once with their parameters bound at execution:
# building a statement and its cache key costs about as much as the query itself.
_COUNTERS = TicketCounter.__table__
_INCREMENT = (update(_COUNTERS)  # "prefix" is the column's own parameter name
              .where(_COUNTERS.c.prefix == bindparam("counter_prefix"))
              .values(value=_COUNTERS.c.value + bindparam("by")).returning(_COUNTERS.c.value))
_CLIENT_NAMED = select(Client).where(Client.name == bindparam("name"), Client.active)
# Columns, not objects: the callers ask whether a row exists, or which ticket it is on,
# and loading an ORM object (its identity, its state) costs more than the query. Core
# statements of the tables' columns, run with `read_rows`.
_TECHNICIANS, _MESSAGES = Technician.__table__, Message.__table__
_TECHNICIAN = (select(_TECHNICIANS.c.id).where(_TECHNICIANS.c.email == bindparam("email"),
                                               _TECHNICIANS.c.active).limit(1))
_ADDRESSEES = select(_MESSAGES.c.to, _MESSAGES.c.cc).where(
    _MESSAGES.c.ticket_id == bindparam("ticket_id"), _MESSAGES.c.held.is_(False))
_MESSAGE_TICKET = (select(_MESSAGES.c.ticket_id)
                   .where(_MESSAGES.c.message_id == bindparam("message_id")).limit(1))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def client_for_address(session: Session, config: Config, address: str) -> Client | None:
    """The active client `configured_client` names for ADDRESS, loaded with one query.

    The store's clients are synchronised from the configuration when a process starts
    (`daemon.directory`), so the configuration says which one it is; the store is not
    read for every client's domains on each new ticket.
    """
    name = configured_client(config, address)
    if name is None:
        return None
    with reading(session, Client):
        return session.scalar(_CLIENT_NAMED, {"name": name})


def configured_client(config: Config, address: str) -> str | None:
    """The name of the configured client whose domain ADDRESS is in, or a parent domain of
    it; the most specific domain wins (a client's `sklep.example.pl` before another's
    `example.pl`), and of two clients listing one domain, the first."""
    names = _client_domains(config)
    return next((names[d] for d in _domain_and_parents(domain_of(address)) if d in names),
                None)


def _domain_and_parents(domain: str) -> Iterator[str]:
    """`a.b.pl`, `b.pl`, `pl`: DOMAIN, then each domain it is under."""
    while domain:
        yield domain
        domain = domain.partition(".")[2]


def _client_domains(config: Config) -> dict[str, str]:
    """Domain -> the name of the client it belongs to (the first listed, if two claim it)."""
    def build() -> dict[str, str]:
        names: dict[str, str] = {}
        for client in config.clients:
            for domain in client.domains:
                names.setdefault(domain, client.name)
        return names
    return derived(config, ("client domains",), build)


def is_technician(session: Session, address: str) -> bool:
    """Whether ADDRESS is an active technician's (or coordinator's)."""
    return read_rows(session, _TECHNICIAN, {"email": address.lower()},
                     Technician).scalar() is not None


def record_event(session: Session, ticket: Ticket, action: str, now: datetime,
                 actor: str = "system", **detail) -> Event | dict:
    """An audit event on TICKET: an ORM object, or a row of the session's bound Inserts."""
    rows = bound_inserts(session)
    if rows is not None:
        return rows.event(ticket, action, now, actor, **detail)
    event = Event(ticket=ticket, at=now, actor=actor, action=action, detail=detail)
    session.add(event)
    return event


def add_participant(session: Session, ticket: Ticket, email: str, name: str = "",
                    role: str = "cc") -> bool:
    """Add EMAIL to the ticket's conversation unless it is there already."""
    email = email.lower()
    if not email or any(p.email == email for p in participants_of(session, ticket)):
        return False
    ticket.participants.append(Participant(email=email, name=name, role=role))
    return True


def is_tied(session: Session, ticket: Ticket, address: str) -> bool:
    """Whether ADDRESS may add to TICKET: requester, participant, a technician, the
    client's domain, or on To or Cc of one of the ticket's messages."""
    address = address.lower()
    if not address:
        return False
    if address == ticket.requester_email or any(p.email == address
                                                for p in participants_of(session, ticket)):
        return True
    if is_technician(session, address):
        return True
    if ticket.client and any(d in ticket.client.domains
                             for d in _domain_and_parents(domain_of(address))):
        return True
    return ticket.id is not None and _addressed_on(session, ticket, address)


def _addressed_on(session: Session, ticket: Ticket, address: str) -> bool:
    """Whether a message of TICKET named ADDRESS on To or Cc (the last and rarest check:
    it reads the addresses of all the ticket's messages). A held message does not count:
    a stranger's mail must not tie the people it copied to the ticket."""
    rows = read_rows(session, _ADDRESSEES, {"ticket_id": ticket.id}, Message)
    return any(address in (a.lower() for a in [*(to or ()), *(cc or ())]) for to, cc in rows)


def open_ticket(session: Session, config: Config, mail: ParsedMail, *, channel: str,
                mailbox: str | None, now: datetime, client: Client | None = None) -> Ticket:
    """A new ticket for MAIL; its client is CLIENT if given, else the sender's domain's."""
    client = client or client_for_address(session, config, mail.from_email)
    mailbox_config = config.mailbox(mailbox) if mailbox else None
    client_config = next((c for c in config.clients if client and c.name == client.name), None)
    language = ((client_config and client_config.language)
                or (mailbox_config and mailbox_config.language) or config.language)
    ticket = Ticket(number=next_number(session, config.ticket_prefix),
                    subject=_text(mail.subject, 2000), status="new", tier="L1", priority="normal",
                    client=client, requester_email=_text(mail.from_email, 320),
                    requester_name=_text(mail.from_name, 300),
                    channel=channel, mailbox=mailbox, language=language, held=False,
                    message_count=0, created_at=now, updated_at=now)
    session.add(ticket)
    add_participant(session, ticket, mail.from_email, mail.from_name, role="requester")
    for address in mail.cc:
        if address not in config.own_addresses:
            add_participant(session, ticket, address)
    # Not flushed here: routing still sets the ticket's tier and clocks, so its row is
    # inserted once, complete, by the record's flush (what needs its id reads it then).
    record_event(session, ticket, "created", now, actor=mail.from_email or "system",
                 channel=channel, mailbox=mailbox, client=client.name if client else None)
    return ticket


def _store_blob(session: Session, attachment: ParsedAttachment) -> str:
    digest = hashlib.sha256(attachment.data).hexdigest()
    # Blob rows are only written here, never as ORM objects: nothing to flush first.
    _insert_ignore(session.connection(), Blob, {"sha256": digest, "size": len(attachment.data),
                                                "data": attachment.data})
    return digest


def _attachment_row(session: Session, attachment: ParsedAttachment) -> Attachment:
    size = getattr(attachment, "size", None) or len(attachment.data)
    truncated = getattr(attachment, "truncated", False)
    blob = None if truncated else _store_blob(session, attachment)
    return Attachment(filename=_text(attachment.filename, 500),
                      content_type=_text(attachment.content_type, 200),
                      size=size, sha256=blob or "", blob_sha256=blob,
                      content_id=attachment.content_id, inline=attachment.inline)


def append_message(session: Session, ticket: Ticket, mail: ParsedMail, *, kind: str,
                   direction: str, now: datetime, raw: RawMessage | None = None,
                   held: bool = False) -> Message:
    rows = bound_inserts(session)
    if rows is not None and direction == "in" and not mail.attachments:
        return rows.incoming(ticket, mail, kind=kind, now=now,
                             raw_id=raw.id if raw else None, held=held)
    attachments = [_attachment_row(session, a) for a in mail.attachments]  # flushes blobs
    message = Message(ticket=ticket, raw_id=raw.id if raw else None, held=held,
                      **_message_values(mail, kind=kind, direction=direction, now=now))
    message.attachments = attachments
    session.add(message)
    _counted(ticket, now, held)
    return message


def _message_values(mail: ParsedMail, *, kind: str, direction: str, now: datetime) -> dict:
    return dict(
        direction=direction, kind=kind,
        from_email=_text(mail.from_email, 320), from_name=_text(mail.from_name, 300),
        to=[_text(a, 320) for a in mail.to], cc=[_text(a, 320) for a in mail.cc],
        subject=_text(mail.subject), message_id=_text(mail.message_id, 998),
        in_reply_to=_text((mail.in_reply_to or [None])[0], 998),
        references=[_text(r, 998) for r in mail.references[-50:]],
        text=_text(mail.text), html=_text(mail.html), sent_at=mail.date, created_at=now)


def _counted(ticket: Ticket, now: datetime, held: bool = False) -> None:
    """The ticket's side of a message appended to it."""
    ticket.message_count = (ticket.message_count or 0) + 1
    ticket.updated_at = now
    if held:
        ticket.held = True


def ticket_of_message_id(session: Session, message_id: str | None) -> Ticket | None:
    """The ticket a message of MESSAGE_ID is on, if the store holds one."""
    if not message_id:
        return None
    ticket_id = read_rows(session, _MESSAGE_TICKET, {"message_id": message_id},
                          Message).scalar()
    return session.get(Ticket, ticket_id) if ticket_id is not None else None


def count_tickets(session: Session) -> int:
    return session.scalar(select(func.count(Ticket.id))) or 0


def held_causes(ticket: Ticket) -> dict[str, str]:
    """Message-ID -> why that message of TICKET was held: "stranger", "staff_unproven"
    or "flood", as its `held` event recorded it (older events name no message)."""
    return {e.detail["message_id"]: e.detail.get("cause", "stranger") for e in ticket.events
            if e.action == "held" and (e.detail or {}).get("message_id")}


def refresh_held(ticket: Ticket) -> None:
    """A ticket is held while any of its messages waits for the coordinator."""
    ticket.held = any(m.held for m in ticket.messages)


def move_message(session: Session, message: Message, target: Ticket, now: datetime) -> Ticket:
    """Move MESSAGE (with its files) onto TARGET; returns the ticket it came from."""
    source = message.ticket
    message.ticket = target
    source.message_count = max((source.message_count or 1) - 1, 0)
    target.message_count = (target.message_count or 0) + 1
    source.updated_at = target.updated_at = now
    if message.raw_id is not None:
        session.get(RawMessage, message.raw_id).ticket = target  # target may be unflushed
    refresh_held(source)
    return source
