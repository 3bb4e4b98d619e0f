"""Import history: mail that was there before the helpdesk (an exported archive, the old
mail of a mailbox at its first connection), filed onto closed, imported tickets with
its own dates, sending nothing.

Adapters save such mail as raw records of status "history" (daemon.ingest.intake); the
live pipeline claims only "pending" ones, so it never sees them, and nothing here
renders or queues a mail. `HistoryImporter` claims them in batches in the order they
were saved, parses them, files them (daemon.ingest.history_filing) and writes the batch
and the records' outcome (daemon.ingest.history_writes) in one transaction: killed at
any moment, a batch is either stored whole or still waiting, and the next run takes it
again. A mail that cannot be parsed is quarantined with its reason, as live mail is, and
a retry imports it as history again (daemon.quarantine).

New mail found among the history (a mailbox's unseen recent mail, daemon.ingest.imap)
is saved as "history-live": the batch that files the history saved before it hands it
to the pipeline ("pending") in its own transaction, so a live reply finds the imported
ticket of the mail it answers, and follows the reopen rules from there.
"""
from __future__ import annotations

import logging
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, null, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from daemon.clock import Clock
from daemon.config import Config
from daemon.ingest.history_filing import BatchFiling, Directory, Record
from daemon.ingest.history_writes import write_batch, write_outcomes
from daemon.ingest.history_parse import parse_all
from daemon.parse import ParsedMail
from daemon.store import Store
from daemon.store.models import RawBody, RawMessage

log = logging.getLogger(__name__)

HISTORY, HISTORY_LIVE = "history", "history-live"
BATCH = 200


def history_envelope(filed_at: datetime | None, **more) -> dict:
    """The envelope of a history record: it marks the record as history (a retry from
    quarantine imports it again, never as new mail) and keeps the date its file or
    server gave it, the last resort for its date."""
    return {"history": {"filed_at": filed_at.isoformat() if filed_at else None, **more}}


def is_history(envelope: dict | None) -> bool:
    return bool((envelope or {}).get("history"))


@dataclass(frozen=True)
class Claimed:
    """A claimed record's columns, its bytes with them."""

    id: int
    status: str
    channel: str
    mailbox: str | None
    sha256: str
    envelope: dict
    attempts: int
    data: bytes | None

    @property
    def filed_at(self) -> datetime | None:
        text = ((self.envelope or {}).get("history") or {}).get("filed_at")
        try:
            return datetime.fromisoformat(text) if text else None
        except (TypeError, ValueError):
            return None


def _claim_query(*, locking: bool, by_id: bool, with_bytes: bool = True):
    raw, body = RawMessage.__table__, RawBody.__table__
    columns = [raw.c.id, raw.c.status, raw.c.channel, raw.c.mailbox, raw.c.sha256,
               raw.c.envelope, raw.c.attempts]
    query = (select(*columns, body.c.data).select_from(
        raw.outerjoin(body, body.c.raw_id == raw.c.id)) if with_bytes
        else select(*columns, null().label("data")))
    query = query.where(raw.c.status.in_((HISTORY, HISTORY_LIVE)))
    if by_id:
        query = query.where(raw.c.id.in_(bindparam("ids", expanding=True)))
    query = query.order_by(raw.c.id).limit(bindparam("limit"))
    if locking:  # PostgreSQL: another importer skips the records this one holds
        query = query.with_for_update(skip_locked=True, of=raw)
    return query


# Built once: building a statement and its cache key costs as much as running it.
_CLAIM = {(locking, by_id): _claim_query(locking=locking, by_id=by_id)
          for locking in (False, True) for by_id in (False, True)}
# Records whose mail the caller has parsed already (daemon.ingest.archive): no bytes.
_CLAIM_PARSED = {locking: _claim_query(locking=locking, by_id=True, with_bytes=False)
                 for locking in (False, True)}


Parser = Callable[[list[bytes | None], int | None], list[ParsedMail | str]]


class HistoryImporter:
    """Claims history records in batches and files them; safe in several processes."""

    def __init__(self, config: Config, store: Store, clock: Clock, *, batch: int = BATCH,
                 parser: Parser = parse_all) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.batch, self.parser = batch, parser
        self._directory: Directory | None = None

    def import_pending(self, stop: threading.Event | None = None,
                       between: Callable[[], object] | None = None) -> Counter:
        """Import every history record waiting; BETWEEN is called after each batch."""
        results: Counter = Counter()
        while stop is None or not stop.is_set():
            done = self.import_batch()
            if done is None:
                break
            results.update(done)
            if between is not None:
                between()
        return results

    def import_batch(self, ids: list[int] | None = None,
                     parsed: dict[int, ParsedMail | str] | None = None) -> Counter | None:
        """One batch (of IDS, if given); its counts, or None when nothing was waiting.

        PARSED: the mail of IDS parsed already, as `parse_all` gives it (by raw id).
        """
        for attempt in (1, 2):
            claimed: list[int] = []
            try:
                return self._import(ids, claimed, parsed if attempt == 1 else None)
            except IntegrityError as exc:
                # Another process filed one of these Message-IDs meanwhile: run again, the
                # mail then reads as a duplicate.
                if attempt == 2:
                    return self._one_by_one(claimed, exc)
            except OperationalError:
                raise  # the store is unreachable: the records wait, try later
            except Exception as exc:  # noqa: BLE001 - a bug on one mail must not stop the rest
                if not claimed:
                    raise
                if len(claimed) > 1:
                    log.exception("import history: a batch of %d records failed; importing "
                                  "them one by one", len(claimed))
                return self._one_by_one(claimed, exc)
        return None

    def _one_by_one(self, ids: list[int], exc: BaseException) -> Counter:
        if len(ids) == 1:
            return self._quarantine(ids[0], describe(exc))
        results: Counter = Counter()
        for raw_id in ids:
            results.update(self.import_batch([raw_id]) or Counter())
        return results

    def _quarantine(self, raw_id: int, reason: str) -> Counter:
        """A record that fails alone: kept with its reason, as the pipeline keeps one."""
        raw = RawMessage.__table__
        with self.store.transaction() as session:
            session.execute(update(raw).where(raw.c.id == raw_id, raw.c.status == HISTORY)
                            .values(status="quarantined", reason=reason[:4000],
                                    processed_at=self.clock.now(), attempts=raw.c.attempts + 1))
        log.warning("import history: raw record %s quarantined: %s", raw_id, reason)
        return Counter(quarantined=1)

    def _import(self, ids: list[int] | None, claimed: list[int],
                parsed: dict[int, ParsedMail | str] | None) -> Counter | None:
        with self.store.transaction() as session:
            records = self._claim(session, ids, parsed is not None)
            if not records:
                return None
            claimed.extend(r.id for r in records)
            now = self.clock.now()
            return self._file(session, records, now, parsed)

    def _claim(self, session: Session, ids: list[int] | None, parsed: bool) -> list[Claimed]:
        locking = self.store.backend == "postgresql"
        query = _CLAIM_PARSED[locking] if parsed else _CLAIM[locking, ids is not None]
        params = {"limit": len(ids) if ids else self.batch, **({"ids": ids} if ids else {})}
        return [Claimed(*row) for row in session.connection().execute(query, params)]

    def _file(self, session: Session, records: list[Claimed], now: datetime,
              parsed: dict[int, ParsedMail | str] | None) -> Counter:
        to_pipeline = self._to_pipeline(records)
        live = [r.id for r in records if r.id in to_pipeline]
        history = [r for r in records if r.id not in to_pipeline]
        mails = ([parsed[r.id] for r in history] if parsed is not None else
                 self.parser([r.data for r in history], self.config.limits.attachment_max_bytes))
        outcomes, good = [], []
        for record, mail in zip(history, mails):
            if isinstance(mail, str):
                outcomes.append(_outcome(record.id, "quarantined", None, now,
                                         record.attempts, reason=mail))
                log.warning("import history: raw record %s quarantined: %s", record.id, mail)
            else:
                good.append(Record(record.id, record.mailbox, record.channel, record.sha256,
                                   mail, record.filed_at))
        filing = BatchFiling(session, self.config, self._directory_of(session), good, now)
        write_batch(session, filing, self.config.ticket_prefix, now)
        attempts = {r.id: r.attempts for r in history}
        outcomes += [_outcome(f.record.raw_id, "duplicate" if f.duplicate else "processed",
                              f.ticket.id, now, attempts[f.record.raw_id])
                     for f in filing.filed]
        write_outcomes(session, outcomes, live)
        return self._counted(filing, outcomes, live)

    def _to_pipeline(self, records: list[Claimed]) -> set[int]:
        """The records the pipeline takes: new mail found with the history, and mail to a
        PBX source's mailbox, a call report rather than a conversation (the pipeline
        files its calls and opens no ticket; a call too old to call back is only kept)."""
        ids = {r.id for r in records if r.status == HISTORY_LIVE}
        if self.config.extra.get("pbx_sources"):  # without any, no mailbox gets reports
            from daemon.ingest.calls.mail import is_report_mail
            ids |= {r.id for r in records if is_report_mail(self.config, r)}
        return ids

    def _directory_of(self, session: Session) -> Directory:
        if self._directory is None:
            self._directory = Directory(session, self.config)
        return self._directory

    def _counted(self, filing: BatchFiling, outcomes: list[dict], live: list[int]) -> Counter:
        counts = Counter(o["status"] for o in outcomes)
        counts = Counter({"imported" if k == "processed" else k: n for k, n in counts.items()})
        counts["tickets"] = len(filing.new_tickets)
        counts["new mail"] = len(live)
        counts += Counter()  # drop the zeros
        log.info("history: %d records: %s", len(outcomes) + len(live),
                 ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        for ticket in filing.new_tickets:
            log.debug("%s imported, from %s", ticket.number, ticket.requester_email)
        return counts


def describe(exc: BaseException) -> str:
    """A quarantine reason for EXC: its type, text and where it was raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _outcome(raw_id: int, status: str, ticket_id: int | None, now: datetime,
             attempts: int | None, reason: str | None = None) -> dict:
    values = {"raw_id": raw_id, "status": status, "ticket_id": ticket_id, "processed_at": now,
              "reason": reason}
    if attempts is not None:
        values["attempts"] = attempts + 1
    return values
