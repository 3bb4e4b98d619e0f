"""Save raw bytes as they arrived: the durability point every intake path shares.

Only after `save_raw` returns may an adapter acknowledge its source (flag the IMAP
message, answer 250, show the ticket number). Saving the same key twice is harmless.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from daemon.store import Store
from daemon.store.ids import allocate_ids
from daemon.store.models import RawBody, RawMessage

if TYPE_CHECKING:
    from daemon.ingest.files import FileMail

log = logging.getLogger(__name__)
_MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Saved:
    raw_id: int
    created: bool  # False: this key was already stored (a redelivery)


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID from the header block, cheaply and without a full parse."""
    # Found, not split: splitting copied the whole body (30 MB for a large mail).
    limit = 1_000_000
    ends = [end for end in (raw.find(b"\r\n\r\n", 0, limit + 3), raw.find(b"\n\n", 0, limit + 1))
            if end >= 0]
    head = raw[:min([*ends, limit])]
    match = _MESSAGE_ID_RE.search(head)
    if not match:
        return None
    value = re.sub(rb"[\s\x00-\x1f\x7f]+", b"", match.group(1)).decode("utf-8", "replace")
    inner = re.search(r"<([^<>]+)>", value)
    value = (inner.group(1) if inner else value).strip()
    return value[:998] or None


def content_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Added(NamedTuple):
    raw_id: int
    message_id: str | None   # from the header, as stored on the record


def add_raw(session: Session, *, channel: str, key: str, raw: bytes, now: datetime,
            mailbox: str | None = None, origin: str = "",
            envelope: dict[str, Any] | None = None, status: str = "pending") -> Added | None:
    """Add a raw record in the caller's transaction unless its key is known (then None).

    Plain INSERTs, no ORM object or flush: the saving transaction never reads the
    record again (the pipeline claims it afresh). STATUS "history" saves mail to be
    imported as history (daemon.ingest.history), which the pipeline never claims.
    """
    key = key[:700]
    connection = session.connection()
    if _known_id(connection, key) is not None:
        return None
    return _insert_raw(connection, channel=channel, key=key, raw=raw, now=now, mailbox=mailbox,
                       origin=origin, envelope=envelope, status=status)


def _known_id(connection, key: str) -> int | None:
    """The id of the record saved under KEY (already cut to the column's 700), or None."""
    return connection.scalar(_KNOWN_KEY, {"key": key})


def _insert_raw(connection, *, channel: str, key: str, raw: bytes, now: datetime,
                mailbox: str | None, origin: str, envelope: dict[str, Any] | None,
                status: str = "pending") -> Added:
    row = dict(channel=channel, mailbox=mailbox, origin=origin[:1000], idempotency_key=key,
               message_id=header_message_id(raw), sha256=hashlib.sha256(raw).hexdigest(),
               size=len(raw), received_at=now, status=status, attempts=0,
               envelope=envelope or {})
    # Values as execution parameters, not .values(): a compiled statement is cached with
    # the statement it came from, and would keep its first mail's bytes alive.
    raw_id = connection.execute(_INSERT_RAW, row).scalar_one()
    connection.execute(_INSERT_BODY, {"raw_id": raw_id, "data": raw})
    return Added(raw_id, row["message_id"])


# Built once, values bound at execution: building a statement and its cache key costs
# about as much as running it (benchmarks/statement_cost.py).
_KNOWN_KEY = select(RawMessage.__table__.c.id).where(
    RawMessage.__table__.c.idempotency_key == bindparam("key"))
_INSERT_RAW = insert(RawMessage.__table__).returning(RawMessage.__table__.c.id)
_INSERT_BODY = insert(RawBody.__table__)


def save_raw(store: Store, *, channel: str, key: str, raw: bytes, now: datetime,
             mailbox: str | None = None, origin: str = "",
             envelope: dict[str, Any] | None = None, status: str = "pending") -> Saved:
    """Commit one raw record (its own transaction); idempotent on `key`."""
    conflict: IntegrityError | None = None
    try:
        with store.transaction() as session:
            added = add_raw(session, channel=channel, key=key, raw=raw, now=now,
                            mailbox=mailbox, origin=origin, envelope=envelope, status=status)
            if added is not None:
                log.info("<%s> saved from %s (%s, %d bytes)", added.message_id or "-",
                         channel, origin or mailbox, len(raw))
                return Saved(added.raw_id, True)
    except IntegrityError as exc:
        conflict = exc  # another process saved the same key between our check and insert
    with store.transaction() as session:
        raw_id = session.scalar(select(RawMessage.id).where(RawMessage.idempotency_key == key[:700]))
    if raw_id is None:
        raise conflict or RuntimeError(f"raw record {key} vanished")  # not a duplicate key
    return Saved(raw_id, False)


def save_kept(store: Store, mails: Iterable[FileMail], *, channel: str, now: Callable[[], datetime],
              mailbox: str | None = None, rows: int = 100, size: int = 16 << 20,
              status: str = "pending",
              envelope: Callable[[FileMail], dict[str, Any]] | None = None) -> Iterator[Saved]:
    """Save MAILS in transactions of up to ROWS records or SIZE bytes; yields each one's
    Saved, in order, once its transaction has committed.

    Only for mail whose source keeps it: an mbox, a Maildir, a file (`read_mail`). The commit of each
    record is the point after which a mail received over SMTP or IMAP may be
    acknowledged; a file acknowledges nothing and still holds every mail a crash would
    take with an open transaction, and saving it again is harmless (its key). A
    commit per record was a third of the time `helpdesk ingest` spent saving.

    A batch that meets a key another process saved meanwhile is saved again one record
    at a time (`save_raw`, which settles that race). If reading MAILS fails, what was
    read before is saved first, then the error goes on. STATUS and ENVELOPE (of each
    mail) as `add_raw` takes them.
    """
    saving = _Saving(channel=channel, now=now, mailbox=mailbox, status=status,
                     envelope=envelope)
    batch: list[FileMail] = []
    held = 0
    try:
        for mail in mails:
            if batch and (len(batch) >= rows or held + len(mail.raw) > size):
                done, batch, held = batch, [], 0
                yield from _save_batch(store, done, saving)
            batch.append(mail)
            held += len(mail.raw)
    except Exception:
        if batch:  # what was read before the error, then the error
            yield from _save_batch(store, batch, saving)
        raise
    if batch:
        yield from _save_batch(store, batch, saving)


@dataclass(frozen=True)
class _Saving:
    """How `save_kept` saves each mail."""

    channel: str
    now: Callable[[], datetime]
    mailbox: str | None
    status: str
    envelope: Callable[[FileMail], dict[str, Any]] | None

    def values(self, mail: FileMail) -> dict[str, Any]:
        """`save_raw`'s arguments for MAIL."""
        return dict(channel=self.channel, raw=mail.raw, now=self.now(), mailbox=self.mailbox,
                    origin=mail.origin, status=self.status,
                    envelope=self.envelope(mail) if self.envelope else None)

    def row(self, mail: FileMail, key: str, now: datetime) -> dict[str, Any]:
        """MAIL's raw_messages row; its content key is its hash (`content_key`)."""
        return dict(channel=self.channel, mailbox=self.mailbox, origin=mail.origin[:1000],
                    idempotency_key=key, message_id=header_message_id(mail.raw),
                    sha256=mail.digest, size=len(mail.raw), received_at=now,
                    status=self.status, attempts=0,
                    envelope=(self.envelope(mail) if self.envelope else None) or {})


def _save_batch(store: Store, batch: list[FileMail], saving: _Saving) -> list[Saved]:
    """BATCH in one transaction: one lookup of the known keys, one INSERT of the new
    records and one of their bytes (a statement per mail was most of the save's CPU)."""
    try:
        with store.transaction() as session:
            saved, rows = _batch_rows(session.connection(), batch, saving)
    except IntegrityError:  # another process saved one of these keys meanwhile
        return [save_raw(store, key=mail.key, **saving.values(mail)) for mail in batch]
    for mail, row in zip(batch, rows):
        if row is not None:
            log.info("<%s> saved from %s (%s, %d bytes)", row["message_id"] or "-",
                     saving.channel, mail.origin or saving.mailbox, len(mail.raw))
    return saved


def _batch_rows(connection, batch: list[FileMail], saving: _Saving
                ) -> tuple[list[Saved], list[dict | None]]:
    """Save BATCH's new mail on CONNECTION: each mail's Saved, and its row (None: known)."""
    keys = [mail.key[:700] for mail in batch]
    known = dict(connection.execute(_KNOWN_KEYS, {"keys": sorted(set(keys))}).all())
    now = saving.now()
    rows: list[dict | None] = []
    first: dict[str, int] = {}      # a key twice in the batch: its first mail's place
    for index, (mail, key) in enumerate(zip(batch, keys)):
        new = key not in known and key not in first
        first.setdefault(key, index)
        rows.append(saving.row(mail, key, now) if new else None)
    ids = _insert_raws(connection, [row for row in rows if row is not None])
    new_ids = iter(ids)
    saved_id = {}
    for key, row in zip(keys, rows):
        if row is not None:
            saved_id[key] = next(new_ids)
    bodies = [{"raw_id": saved_id[key], "data": mail.raw}
              for mail, key, row in zip(batch, keys, rows) if row is not None]
    if bodies:
        connection.execute(_INSERT_BODY, bodies)
    saved = [Saved(saved_id[key], True) if row is not None
             else Saved(known.get(key, saved_id.get(key)), False)
             for key, row in zip(keys, rows)]
    return saved, rows


def _insert_raws(connection, rows: list[dict]) -> list[int]:
    """Insert ROWS into raw_messages (one executemany); their ids, in order."""
    if not rows:
        return []
    ids = allocate_ids(connection, RawMessage.__table__, len(rows))
    connection.execute(_INSERT_RAWS, [{**row, "id": raw_id} for row, raw_id in zip(rows, ids)])
    return ids


_KNOWN_KEYS = select(RawMessage.__table__.c.idempotency_key, RawMessage.__table__.c.id).where(
    RawMessage.__table__.c.idempotency_key.in_(bindparam("keys", expanding=True)))
_INSERT_RAWS = insert(RawMessage.__table__)
