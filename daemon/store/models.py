"""The ticket store's tables as SQLAlchemy 2.0 typed models (schema changes go through Alembic)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Text, UniqueConstraint, text)
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# BIGINT keys on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class UTCDateTime(TypeDecorator):
    """Stores aware datetimes as naive UTC and hands them back aware, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware instant")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class RawMessage(Base):
    """Bytes exactly as they arrived, saved before the source is told "done"."""

    __tablename__ = "raw_messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))          # imap, smtp, lmtp, file, web
    mailbox: Mapped[str | None] = mapped_column(String(320))  # dedicated address it came to
    origin: Mapped[str] = mapped_column(String(1000), default="")
    idempotency_key: Mapped[str] = mapped_column(String(700), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime]
    # pending -> processed | duplicate | quarantined -> (retry) pending | discarded;
    # imported history: history -> processed | duplicate | quarantined (-> retry: history),
    # and history-live -> pending (new mail found with history: daemon.ingest.history)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    envelope: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_raw_messages_status_id", "status", "id"),
                      # History read again without a Message-ID is recognised by content.
                      Index("ix_raw_messages_sha256", "sha256",
                            sqlite_where=text("message_id IS NULL"),
                            postgresql_where=text("message_id IS NULL")))

    # The bytes are a row of their own, written once and never updated: SQLite rewrites a
    # whole row on every UPDATE, so the status changes of processing copied a 30 MB mail
    # twice (the peak memory of ingesting it). `record.raw` reads and sets them as before;
    # they are loaded only when read.
    body: Mapped[RawBody] = relationship(cascade="all, delete-orphan", lazy="select")
    # Filing sets the ticket, which may not be in the store yet: the flush inserts it first.
    ticket: Mapped[Ticket | None] = relationship(lazy="select")
    raw: AssociationProxy[bytes] = association_proxy(
        "body", "data", creator=lambda data: RawBody(data=data))


class RawBody(Base):
    """The bytes of a RawMessage (see RawMessage.body)."""

    __tablename__ = "raw_bodies"
    raw_id: Mapped[int] = mapped_column(BigId, ForeignKey("raw_messages.id"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    domains: Mapped[list[str]] = mapped_column(default=list)
    phones: Mapped[list[str]] = mapped_column(default=list)
    contract: Mapped[str] = mapped_column(String(100), default="standard")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Technician(Base):
    __tablename__ = "technicians"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(4), default="L1")
    role: Mapped[str] = mapped_column(String(16), default="technician")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(300))


class TicketCounter(Base):
    """One row per prefix; numbers never repeat (daemon.tickets.next_number)."""

    __tablename__ = "ticket_counters"
    prefix: Mapped[str] = mapped_column(String(10), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    tier: Mapped[str] = mapped_column(String(4), default="L1")
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    category: Mapped[str | None] = mapped_column(String(100))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"))  # see TRIAGE_INDEXES
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("technicians.id"), index=True)
    requester_email: Mapped[str] = mapped_column(String(320), default="")  # see REQUESTER_INDEX
    requester_name: Mapped[str] = mapped_column(String(300), default="")
    channel: Mapped[str] = mapped_column(String(16), default="email")
    mailbox: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(2), default="pl")
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    linked_ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    first_responded_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_tier: Mapped[str | None] = mapped_column(String(4))
    # SLA clocks (daemon.rules.sla): due times are recomputed from the ticket's history.
    contract: Mapped[str | None] = mapped_column(String(100))
    sla_calendar: Mapped[str | None] = mapped_column(String(100))
    first_response_due: Mapped[datetime | None]
    first_response_warn_at: Mapped[datetime | None]
    first_response_warning_sent_at: Mapped[datetime | None]
    first_response_breach_sent_at: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    resolution_warn_at: Mapped[datetime | None]
    resolution_warning_sent_at: Mapped[datetime | None]
    resolution_breach_sent_at: Mapped[datetime | None]
    sla_paused_at: Mapped[datetime | None]                 # waiting for the customer since
    sla_pauses: Mapped[list[str] | None] = mapped_column(JSON)  # closed pauses: [[start, end]]
    sla_paused_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The next instant a notice is due; null when none is. The sweep's index range scan
    # reads only these, so its cost grows with due tickets, not with all tickets.
    sla_alarm_at: Mapped[datetime | None] = mapped_column(index=True)
    # The customer's rating from the resolved mail's links (daemon.ratings): 1-5, latest click.
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    rated_at: Mapped[datetime | None]
    # Filed from a mailbox's or an export's history: nothing was sent, no clock ran.
    imported: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    client: Mapped[Client | None] = relationship(lazy="joined")
    assignee: Mapped[Technician | None] = relationship(lazy="joined")
    participants: Mapped[list[Participant]] = relationship(back_populates="ticket",
                                                           order_by="Participant.id")
    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.id")
    events: Mapped[list[Event]] = relationship(back_populates="ticket", order_by="Event.id")


# The triage list at a million tickets (migration 0006): its order and counts read only the
# active tickets, from partial indexes. The WHERE clauses and the SLA due expression are
# written exactly as webform.queries renders them (literal statuses), or no planner uses them.
ACTIVE_SQL = "status IN ('new', 'open', 'waiting')"
SLA_DUE_SQL = ("CASE WHEN (status IN ('resolved', 'closed')) THEN NULL "
               "WHEN (sla_paused_at IS NOT NULL) THEN NULL "
               "WHEN (first_responded_at IS NULL AND first_response_due IS NOT NULL) "
               "THEN first_response_due ELSE resolution_due END")
TRIAGE_INDEXES = (
    Index("ix_tickets_client_id_status", Ticket.client_id, Ticket.status),
    Index("ix_tickets_triage_due", text(f"(({SLA_DUE_SQL}) IS NULL)"), text(f"({SLA_DUE_SQL})"),
          Ticket.id, sqlite_where=text(ACTIVE_SQL), postgresql_where=text(ACTIVE_SQL)),
    Index("ix_tickets_active_counts", Ticket.status, Ticket.tier, Ticket.assignee_id,
          Ticket.sla_paused_at, Ticket.first_responded_at, Ticket.first_response_due,
          Ticket.resolution_due, sqlite_where=text(ACTIVE_SQL), postgresql_where=text(ACTIVE_SQL)),
    Index("ix_tickets_held", Ticket.id, sqlite_where=text("held IS 1"),
          postgresql_where=text("held IS true")),
)


# A sender's tickets of the last hour (the flood limit, daemon.rules.flood), and a
# requester's tickets: one index, migration 0011.
REQUESTER_INDEX = Index("ix_tickets_requester_email_created_at", Ticket.requester_email,
                        Ticket.created_at)


class Participant(Base):
    """A person on a ticket's conversation: its requester or someone on CC."""

    __tablename__ = "participants"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(300), default="")
    role: Mapped[str] = mapped_column(String(16), default="cc")   # requester, cc
    ticket: Mapped[Ticket] = relationship(back_populates="participants")
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"))
    direction: Mapped[str] = mapped_column(String(3))       # in, out
    kind: Mapped[str] = mapped_column(String(16))           # customer, technician, internal, auto, system
    from_email: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(300), default="")
    to: Mapped[list[str]] = mapped_column(default=list)
    cc: Mapped[list[str]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    # Unique: the same mail delivered to two mailboxes (or twice) is one message.
    message_id: Mapped[str | None] = mapped_column(String(998), unique=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[list[str]] = mapped_column(default=list)
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)          # sanitised, safe to display
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    sent_at: Mapped[datetime | None]                         # the Date header
    created_at: Mapped[datetime]
    ticket: Mapped[Ticket] = relationship(back_populates="messages")
    attachments: Mapped[list[Attachment]] = relationship(back_populates="message",
                                                         order_by="Attachment.id")


# The triage list's search (ILIKE '%…%' on message text) on PostgreSQL: a trigram index,
# made by migration 0006 where the pg_trgm extension can be installed, over what people
# wrote: the daemon's own notices (kind 'system') are not searched (migration 0008).
Index("ix_messages_text_trgm", Message.text, postgresql_using="gin",
      postgresql_ops={"text": "gin_trgm_ops"},
      postgresql_where=text("kind <> 'system'")).ddl_if(dialect="postgresql")


class Blob(Base):
    """Attachment content, stored once per distinct content (sha256)."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(200), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Null when the content was over the size cap: the raw mail still holds it.
    blob_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[Message] = relationship(back_populates="attachments")


class Event(Base):
    """The audit trail: who changed what on a ticket, and when."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320), default="system")
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ticket: Mapped[Ticket] = relationship(back_populates="events")


class MailboxCursor(Base):
    """Where an IMAP folder was read up to, and which process holds its lease."""

    __tablename__ = "mailbox_cursors"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    # The highest UID when the folder was first read (or read again under a new
    # UIDVALIDITY), and the rule the mail up to it falls under: archive, process, skip.
    existing_through: Mapped[int | None] = mapped_column(BigInteger)
    existing_mail: Mapped[str | None] = mapped_column(String(16))
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)


class OutboxMail(Base):
    """A mail to send, written in the same transaction as the ticket change that caused it.

    `raw` holds the complete rendered message, so every attempt sends identical bytes
    with the same Message-ID.
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    # ack, form_invite, coordinator_new, assigned, relay, forward, command_error, resolved, ...
    kind: Mapped[str] = mapped_column(String(32))
    mail_from: Mapped[str] = mapped_column(String(320))        # envelope sender
    recipients: Mapped[list[str]] = mapped_column(default=list)  # envelope recipients
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),)


class Flood(Base):
    """A sender opening more new tickets an hour than the limit: the rest of their mail
    goes into one held ticket (the bundle) and the coordinator hears of it once."""

    __tablename__ = "floods"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sender: Mapped[str] = mapped_column(String(330))    # an address, or "@domain"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    started_at: Mapped[datetime]
    last_at: Mapped[datetime]
    mails: Mapped[int] = mapped_column(Integer, default=0)
    ticket: Mapped[Ticket] = relationship()
    __table_args__ = (Index("ix_floods_sender_last_at", "sender", "last_at"),)


class WebSession(Base):
    """A signed-in web session: the cookie holds a random token, the store its hash, so
    signing out, a password change or a disabled account ends it on the server."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    technician_id: Mapped[int] = mapped_column(ForeignKey("technicians.id"), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(32))  # signed_out, password, disabled, ...
    client_ip: Mapped[str] = mapped_column(String(64), default="")


class AutoReplyLog(Base):
    """Automatic mails sent per address, for the per-hour limit that stops mail loops."""

    __tablename__ = "auto_reply_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(320))
    sent_at: Mapped[datetime]
    __table_args__ = (Index("ix_auto_reply_log_address_sent_at", "address", "sent_at"),)


def _partial_index(table: str, column: str, *more: str, where: str | None = None) -> Index:
    """An index of the rows where COLUMN is set (queries on COLUMN = x can use it), or of
    the rows WHERE says."""
    condition = text(where or f"{column} IS NOT NULL")
    return Index(f"ix_{table}_{'_'.join((column, *more))}", column, *more,
                 sqlite_where=condition, postgresql_where=condition)


class Call(Base):
    """One attempt to reach the hotline (or a call out of it), as the PBX recorded it.

    Numbers are E.164 (``+48611002030``), an internal extension (``"101"``), or null for a
    withheld caller. `callback` follows a missed inbound call: pending (not yet decided),
    followed (contact made without a ticket), opened (it opened a callback ticket),
    joined (it was added to an open one) or stale (too old when first seen to call back).
    """

    __tablename__ = "calls"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))           # [[pbx_sources]] name
    call_id: Mapped[str] = mapped_column(String(200))          # the PBX's id, unique per source
    direction: Mapped[str] = mapped_column(String(8))          # in, out, internal
    caller: Mapped[str | None] = mapped_column(String(40))
    callee: Mapped[str | None] = mapped_column(String(40))
    queue: Mapped[str | None] = mapped_column(String(100))
    extension: Mapped[str | None] = mapped_column(String(100))  # the technician as the PBX named them
    technician_id: Mapped[int | None] = mapped_column(ForeignKey("technicians.id"))
    started_at: Mapped[datetime] = mapped_column(index=True)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    wait_seconds: Mapped[int | None] = mapped_column(Integer)
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))           # answered, missed, abandoned, busy, failed, voicemail
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"))
    contact: Mapped[str | None] = mapped_column(String(320))   # the caller's address, when known
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    callback: Mapped[str | None] = mapped_column(String(16))
    callback_due: Mapped[datetime | None]                      # business target for calling back
    callback_at: Mapped[datetime | None]                       # when contact was made again
    raw: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the row as the PBX gave it
    source_line: Mapped[str] = mapped_column(String(1000), default="")  # file:line it came from
    imported_at: Mapped[datetime]

    client: Mapped[Client | None] = relationship(lazy="joined")
    technician: Mapped[Technician | None] = relationship(lazy="joined")
    ticket: Mapped[Ticket | None] = relationship(lazy="joined")

    # Indexes cost a large import dearly, an index on random callers most of all, so they
    # are few and mostly partial: most calls have no ticket, callback state or known
    # contact. Calls from a number are found within a time range (started_at); calls out
    # to a number, which close callbacks whenever they come, by the callee of calls out.
    __table_args__ = (UniqueConstraint("source", "call_id"),
                      _partial_index("calls", "callee", "started_at", where="direction = 'out'"),
                      _partial_index("calls", "client_id", "started_at"),
                      _partial_index("calls", "contact", "started_at"),
                      _partial_index("calls", "ticket_id"),
                      _partial_index("calls", "callback"))


class PbxSourceState(Base):
    """Where a [[pbx_sources]] entry was read up to, and how its last run went."""

    __tablename__ = "pbx_source_states"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per kind: files' offsets, API time
    last_run_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_result: Mapped[dict[str, Any]] = mapped_column(default=dict)
