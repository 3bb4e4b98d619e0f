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
from daemon.store.models import RawBody, RawMessage

if TYPE_CHECKING:  # files.py imports content_key from here
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
            envelope: dict[str, Any] | None = None) -> Added | None:
    """Add a raw record in the caller's transaction unless its key is known (then None).

    Plain INSERTs, no ORM object or flush: the saving transaction never reads the
    record again (the pipeline claims it afresh).
    """
    key = key[:700]
    connection = session.connection()
    if _known_id(connection, key) is not None:
        return None
    return _insert_raw(connection, channel=channel, key=key, raw=raw, now=now, mailbox=mailbox,
                       origin=origin, envelope=envelope)


def _known_id(connection, key: str) -> int | None:
    """The id of the record saved under KEY (already cut to the column's 700), or None."""
    return connection.scalar(_KNOWN_KEY, {"key": key})


def _insert_raw(connection, *, channel: str, key: str, raw: bytes, now: datetime,
                mailbox: str | None, origin: str, envelope: dict[str, Any] | None) -> Added:
    row = dict(channel=channel, mailbox=mailbox, origin=origin[:1000], idempotency_key=key,
               message_id=header_message_id(raw), sha256=hashlib.sha256(raw).hexdigest(),
               size=len(raw), received_at=now, status="pending", attempts=0,
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
             envelope: dict[str, Any] | None = None) -> Saved:
    """Commit one raw record (its own transaction); idempotent on `key`."""
    conflict: IntegrityError | None = None
    try:
        with store.transaction() as session:
            added = add_raw(session, channel=channel, key=key, raw=raw, now=now,
                            mailbox=mailbox, origin=origin, envelope=envelope)
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
              mailbox: str | None = None, rows: int = 100,
              size: int = 16 << 20) -> Iterator[Saved]:
    """Save MAILS in transactions of up to ROWS records or SIZE bytes; yields each one's
    Saved, in order, once its transaction has committed.

    Only for mail whose source keeps it: an mbox, a Maildir, a file (`read_mail`). The commit of each
    record is the point after which a mail received over SMTP or IMAP may be
    acknowledged; a file acknowledges nothing and still holds every mail a crash would
    take with an open transaction, and saving it again is harmless (its key). A
    commit per record was a third of the time `helpdesk ingest` spent saving.

    A batch that meets a key another process saved meanwhile is saved again one record
    at a time (`save_raw`, which settles that race). If reading MAILS fails, what was
    read before is saved first, then the error goes on.
    """
    batch: list[FileMail] = []
    held = 0
    try:
        for mail in mails:
            if batch and (len(batch) >= rows or held + len(mail.raw) > size):
                done, batch, held = batch, [], 0
                yield from _save_batch(store, done, channel=channel, now=now, mailbox=mailbox)
            batch.append(mail)
            held += len(mail.raw)
    except Exception:
        if batch:  # what was read before the error, then the error
            yield from _save_batch(store, batch, channel=channel, now=now, mailbox=mailbox)
        raise
    if batch:
        yield from _save_batch(store, batch, channel=channel, now=now, mailbox=mailbox)


def _save_batch(store: Store, batch: list[FileMail], *, channel: str,
                now: Callable[[], datetime], mailbox: str | None) -> list[Saved]:
    try:
        with store.transaction() as session:
            connection = session.connection()
            added: list[Added | None] = []
            saved = []
            for mail in batch:
                key = mail.key[:700]
                known = _known_id(connection, key)
                added.append(None if known is not None else _insert_raw(
                    connection, channel=channel, key=key, raw=mail.raw, now=now(),
                    mailbox=mailbox, origin=mail.origin, envelope=None))
                saved.append(Saved(known, False) if known is not None
                             else Saved(added[-1].raw_id, True))
    except IntegrityError:  # another process saved one of these keys meanwhile
        return [save_raw(store, channel=channel, key=mail.key, raw=mail.raw, now=now(),
                         mailbox=mailbox, origin=mail.origin) for mail in batch]
    for mail, a in zip(batch, added):
        if a is not None:
            log.info("<%s> saved from %s (%s, %d bytes)", a.message_id or "-", channel,
                     mail.origin or mailbox, len(mail.raw))
    return saved
