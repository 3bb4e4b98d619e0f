"""Quarantined mail: list it, retry it after a fix, discard it, purge what was discarded.

The CLI (`helpdesk quarantine`), the web's quarantine page and the daemon's retention
job all come here, so a record moves between states the same way whoever moves it.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from daemon.pipeline import Pipeline
from daemon.store import Store
from daemon.store.models import RawBody, RawMessage

log = logging.getLogger(__name__)


def quarantined(session: Session) -> list[RawMessage]:
    return list(session.scalars(select(RawMessage).where(RawMessage.status == "quarantined")
                                .order_by(RawMessage.id)))


def retry_quarantined(pipeline: Pipeline, raw_id: int) -> str | None:
    """Put RAW_ID back to pending and process it now; its new status, None if not quarantined.

    A record of imported history goes back to history and is imported again, never
    processed as new mail (which would acknowledge an old mail).
    """
    from daemon.ingest.history import HISTORY, HistoryImporter, is_history
    with pipeline.store.transaction() as session:
        envelope = session.scalar(select(RawMessage.envelope).where(
            RawMessage.id == raw_id, RawMessage.status == "quarantined"))
        status = HISTORY if is_history(envelope) else "pending"
        changed = session.execute(update(RawMessage).where(
            RawMessage.id == raw_id, RawMessage.status == "quarantined")
            .values(status=status, reason=None)).rowcount
    if not changed:
        return None
    if status == HISTORY:
        HistoryImporter(pipeline.config, pipeline.store, pipeline.clock).import_batch([raw_id])
        with pipeline.store.transaction() as session:
            return session.scalar(select(RawMessage.status).where(RawMessage.id == raw_id))
    return pipeline.process_one(raw_id)


def discard_quarantined(session: Session, raw_id: int, *, actor: str, now: datetime) -> bool:
    """Mark RAW_ID discarded (its bytes stay until the retention purge); False if not quarantined.

    processed_at becomes the moment of discarding: the retention period counts from it.
    """
    record = session.get(RawMessage, raw_id)
    if record is None or record.status != "quarantined":
        return False
    record.status, record.processed_at = "discarded", now
    record.reason = f"discarded by {actor}: {record.reason or ''}"[:4000]
    log.info("<%s> raw record %s discarded by %s", record.message_id or "-", raw_id, actor)
    return True


def purge_discarded(store: Store, now: datetime, keep_days: int) -> int:
    """Blank the bytes of records discarded more than KEEP_DAYS ago; returns how many.

    The row stays, with its idempotency key, so the same mail delivered again is still
    recognised as already seen. Safe to run twice and in two processes at once.
    """
    with store.transaction() as session:
        discarded = select(RawMessage.id).where(
            RawMessage.status == "discarded",
            RawMessage.processed_at < now - timedelta(days=keep_days))
        purged = session.execute(update(RawBody).where(
            RawBody.raw_id.in_(discarded), func.length(RawBody.data) > 0)
            .values(data=b"")).rowcount
    if purged:
        log.info("purge discarded mail: blanked the bytes of %d records", purged)
    return purged
