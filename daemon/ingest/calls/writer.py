"""Store call records in batches, once per source and call id, and count what happened.

Rows are inserted a batch at a time (5,000 per transaction by default) with INSERT …
ON CONFLICT DO NOTHING RETURNING, so a record seen twice — in an overlap window, in a
re-read file, by two daemons at once — is stored once, and the count of new calls is
exact on both backends. A malformed row is counted and kept (file and line) in the
result; the rest of the file goes on.

An import run (`durable_batches=False`) commits its full batches on PostgreSQL without
waiting for the WAL flush (`synchronous_commit = off`, for those transactions only).
The last batch of a file or fetch, stored by the caller's flush(), waits for it, and
its flush makes every earlier commit durable too: once the import returns (and before
the source's cursor moves past the file), all of it is on disk. A crash before that
loses whole batches, never a part of one, and the file is read again. A writer inside a
caller's transaction (mail intake) keeps that transaction's own durability.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ContextManager

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from daemon.ingest.calls.config import CallSettings, PbxSource
from daemon.ingest.calls.matching import CallDirectory
from daemon.ingest.calls.records import CallRecord
from daemon.store.models import Call

log = logging.getLogger(__name__)
CALLS = Call.__table__
BATCH_SIZE = 5000
ERRORS_KEPT = 1000   # the first ones, in the result; all are counted and logged


@dataclass
class ImportResult:
    source: str
    read: int = 0          # rows (records) read, well-formed or not
    imported: int = 0      # new calls stored
    duplicates: int = 0    # already stored (or twice in this run)
    malformed: int = 0
    queue_updates: int = 0  # stored calls queue_log told more about (asterisk)
    files: list[str] = field(default_factory=list)
    call_import_errors: list[dict[str, Any]] = field(default_factory=list)
    callbacks: dict[str, int] = field(default_factory=dict)

    def error(self, file: str, line: int, message: str) -> None:
        self.malformed += 1
        log.warning("%s:%s: %s (pbx source %s)", file, line, message, self.source)
        if len(self.call_import_errors) < ERRORS_KEPT:
            self.call_import_errors.append({"file": file, "line": line, "error": message})

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "read": self.read, "imported": self.imported,
                "duplicates": self.duplicates, "malformed": self.malformed,
                "queue_updates": self.queue_updates,
                "files": self.files, "callbacks": self.callbacks,
                "call_import_errors": self.call_import_errors}

    def summary(self) -> str:
        text = f"{self.imported} calls imported"
        if self.duplicates:
            text += f", {self.duplicates} already stored"
        if self.malformed:
            first = self.call_import_errors[0] if self.call_import_errors else None
            text += f", {self.malformed} malformed rows"
            if first:
                text += f" (first: {first['file']} line {first['line']}: {first['error']})"
        return text


Transaction = Callable[[], ContextManager[Session]]


def in_session(session: Session) -> Transaction:
    """A Transaction for a caller that already holds one (the pipeline's record)."""
    return lambda: contextlib.nullcontext(session)


class CallWriter:
    """Collects records and stores them a batch at a time, each batch its own transaction."""

    def __init__(self, transaction: Transaction, source: PbxSource, settings: CallSettings,
                 now: datetime, result: ImportResult, batch_size: int | None = None, *,
                 durable_batches: bool = True):
        self.transaction, self.source, self.settings = transaction, source, settings
        self.now, self.result = now, result
        self.batch_size = batch_size or BATCH_SIZE
        self.durable_batches = durable_batches
        self.directory: CallDirectory | None = None
        self.batch: dict[str, tuple[CallRecord, Any, str]] = {}

    def add(self, record: CallRecord, raw: Any, where: str) -> None:
        self.result.read += 1
        if record.call_id in self.batch:
            self.result.duplicates += 1
            return
        if len(self.batch) >= self.batch_size:
            # A full batch is stored before the next record joins, so the last one is
            # always left for the caller's flush(), whose commit waits for the disk.
            self.flush(durable=self.durable_batches)
        self.batch[record.call_id] = (record, raw, where)

    def directory_for(self, session: Session) -> CallDirectory:
        """Clients, contacts and technicians, loaded once per import."""
        if self.directory is None:
            self.directory = CallDirectory.load(session, self.settings)
        return self.directory

    def flush(self, durable: bool = True) -> None:
        """Store the records collected; DURABLE=False lets PostgreSQL commit them without
        waiting for the disk (a full batch of an import run: see the module's docstring)."""
        if not self.batch:
            return
        pending, self.batch = list(self.batch.values()), {}
        with self.transaction() as session:
            self.directory_for(session)
            insert = _compiled_insert(session.get_bind().dialect)
            if insert.fast:
                values = self._values(insert, pending)
            else:
                values = insert.values([self._row(*p) for p in pending])
            inserted = insert.execute(session.connection(), values,
                                      wait_for_flush=durable)
        self.result.imported += inserted
        self.result.duplicates += len(pending) - inserted

    def _values(self, insert: _CallInsert, pending: list[tuple[CallRecord, Any, str]]) -> list[tuple]:
        """The rows of `_row`, already converted and in COLUMNS order (no dict per row)."""
        directory, instant, to_json = self.directory, insert.instant, insert.json
        client_and_contact, technician = directory.client_and_contact, directory.technician
        source = self.source.name
        imported_at = instant(self.now) if self.now is not None else None
        values = []
        append = values.append
        for record, raw, where in pending:
            direction, caller, callee = record.direction, record.caller, record.callee
            client_id, contact = client_and_contact(callee if direction == "out" else caller)
            agent, answered, ended = record.agent, record.answered_at, record.ended_at
            append((source, record.call_id, direction, caller, callee, record.queue, agent,
                    technician(agent), instant(record.started_at),
                    None if answered is None else instant(answered),
                    None if ended is None else instant(ended),
                    record.wait_seconds, record.talk_seconds, record.outcome, client_id, contact,
                    None, "pending" if record.needs_callback_check else None, None, None,
                    to_json(raw if isinstance(raw, dict) else {"fields": raw}),
                    where[:1000], imported_at))
        return values

    def _row(self, record: CallRecord, raw: Any, where: str) -> dict[str, Any]:
        client_id, contact = self.directory.client_and_contact(record.external_number)
        return {
            "source": self.source.name, "call_id": record.call_id,
            "direction": record.direction, "caller": record.caller, "callee": record.callee,
            "queue": record.queue, "extension": record.agent,
            "technician_id": self.directory.technician(record.agent),
            "started_at": record.started_at, "answered_at": record.answered_at,
            "ended_at": record.ended_at, "wait_seconds": record.wait_seconds,
            "talk_seconds": record.talk_seconds, "outcome": record.outcome,
            "client_id": client_id, "contact": contact, "ticket_id": None,
            "callback": "pending" if record.needs_callback_check else None,
            "callback_due": None, "callback_at": None,
            "raw": raw if isinstance(raw, dict) else {"fields": raw},
            "source_line": where[:1000], "imported_at": self.now,
        }


# -- the INSERT ---------------------------------------------------------------------------
COLUMNS = tuple(c.name for c in CALLS.columns if c.name != "id")


def insert_calls(session: Session, rows: list[dict[str, Any]]) -> int:
    """INSERT … ON CONFLICT DO NOTHING the ROWS (dicts of COLUMNS); returns how many were new."""
    return _compiled_insert(session.get_bind().dialect).run(session.connection(), rows)


class _CallInsert:
    """INSERT … ON CONFLICT DO NOTHING for a batch of calls, below SQLAlchemy's per-row cost.

    On a large import SQLAlchemy's per-row parameter handling cost more than the
    database's own work. Here each value is converted once, by its column type's own bind
    processor (aware instants to naive UTC, dicts to JSON), so what is stored is exactly
    what an ORM insert would store; then SQLite gets the driver's executemany, PostgreSQL
    a COPY into a temporary table and one INSERT … SELECT from it (twice as fast as its
    executemany). Either way the count is of the rows actually inserted.
    """

    def __init__(self, dialect):
        self.postgresql = dialect.name == "postgresql"
        insert = (postgresql if self.postgresql else sqlite).insert
        statement = insert(CALLS).values({name: bindparam(name) for name in COLUMNS}) \
            .on_conflict_do_nothing(index_elements=["source", "call_id"])
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or COLUMNS)
        self.converters = [(i, processor) for i, name in enumerate(self.names)
                           if (processor := _bind_processor(CALLS.c[name].type, dialect))]
        # CallWriter's path: tuples built straight from the records, each value converted
        # by `instant` / `json` below, which give exactly what the column types' bind
        # processors give (checked here on samples; otherwise the general path is used).
        self.instant = _instant_converter(dialect)
        self.json = _json_converter(dialect)
        converted = {self.names[i] for i, _ in self.converters}
        self.fast = (self.names == COLUMNS and self.instant is not None
                     and self.json is not None and converted <= INSTANT_COLUMNS | {"raw"})

    def run(self, connection, rows: list[dict[str, Any]]) -> int:
        return self.execute(connection, self.values(rows))

    def execute(self, connection, values: list[tuple], wait_for_flush: bool = True) -> int:
        if self.postgresql:
            return self._copy(connection, values, wait_for_flush)
        return connection.exec_driver_sql(self.sql, values).rowcount

    def values(self, rows: list[dict[str, Any]]) -> list[tuple]:
        converted = []
        seen: dict[int, tuple[Any, Any]] = {}   # column -> (last value, converted): imported_at
        for row in rows:
            values = [row[name] for name in self.names]
            for index, convert in self.converters:
                value = values[index]
                if value is None:
                    continue
                last = seen.get(index)
                if last is not None and last[0] is value:
                    values[index] = last[1]
                else:
                    values[index] = convert(value)
                    seen[index] = (value, values[index])
            converted.append(tuple(values))
        return converted

    def _copy(self, connection, values: list[tuple], wait_for_flush: bool) -> int:
        columns = ", ".join(self.names)
        cursor = connection.connection.cursor()   # the driver's, in this transaction
        try:
            if not wait_for_flush:
                cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS calls_incoming ON COMMIT DELETE ROWS "
                           f"AS SELECT {columns} FROM calls WITH NO DATA")
            with cursor.copy(f"COPY calls_incoming ({columns}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)
            cursor.execute(f"INSERT INTO calls ({columns}) SELECT {columns} FROM calls_incoming "
                           f"ON CONFLICT (source, call_id) DO NOTHING")
            inserted = cursor.rowcount
            cursor.execute("TRUNCATE calls_incoming")
            return inserted
        finally:
            cursor.close()


def _bind_processor(column_type, dialect):
    """What SQLAlchemy does to a value of COLUMN_TYPE before DIALECT's driver sees it."""
    return column_type.dialect_impl(dialect).bind_processor(dialect)


INSTANT_COLUMNS = frozenset(c.name for c in CALLS.columns
                            if c.name in ("started_at", "answered_at", "ended_at", "callback_due",
                                          "callback_at", "imported_at"))
_UTC = timezone.utc
_SAMPLE_INSTANTS = [datetime(2026, 10, 25, 0, 30, 5, 0, _UTC), datetime(2026, 3, 29, 1, 0, 0, 7, _UTC),
                    datetime(1, 1, 1, 0, 0, tzinfo=_UTC), datetime(999, 12, 31, 23, 59, 59, 999999, _UTC),
                    datetime(9999, 12, 31, 23, 59, 59, 999999, _UTC),
                    datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
                    datetime(2026, 6, 1, 12, 0, 0, 1, timezone(timedelta(hours=-5, minutes=-30)))]
_SAMPLE_RAWS = [{}, {"Id połączenia": "1000000", "Status": "Zajęte"},
                {"a": "", "\"q\"\\": "tab\tnew\nline\x00\x1f\u2028 ąę 😀", "x": "1"},
                {"fields": ["a", "b"]}, {"n": 1, "m": None}, {1: "int key"}]


def _instant_converter(dialect):
    """UTCDateTime's bind processing for DIALECT with a shortcut for instants already in UTC
    (all of a record's): SQLite's default storage format is isoformat's with microseconds."""
    processor = _bind_processor(CALLS.c.started_at.type, dialect)
    if processor is None:
        return None
    if dialect.name == "sqlite":
        def instant(value):
            if value.tzinfo is _UTC:
                return value.isoformat(" ", "microseconds")[:26]
            return processor(value)
    else:
        impl = _bind_processor(CALLS.c.started_at.type.impl, dialect)
        if impl is not None:
            return processor

        def instant(value):
            if value.tzinfo is _UTC:
                return datetime.combine(value, value.time())   # naive, as .replace(tzinfo=None)
            return processor(value)
    same = all(type(instant(v)) is type(processor(v)) and instant(v) == processor(v)
               for v in _SAMPLE_INSTANTS)
    return instant if same else processor


def _json_converter(dialect):
    """JSON's bind processing for DIALECT, as the text json.dumps writes when that is what
    the processor stores: SQLite's is json.dumps of the value; psycopg's wraps the value in
    its Json, sent as json.dumps' text (and COPY takes the text as it is). One JSONEncoder
    with json.dumps' defaults, reused, writes it for less per row than either (checked on
    samples). An engine's own serializer is left to the processor."""
    processor = _bind_processor(CALLS.c.raw.type, dialect)
    if processor is None:
        return lambda value: value
    if dialect._json_serializer is not None:
        return processor
    encode = json.JSONEncoder().encode
    sent = _psycopg_text if dialect.driver == "psycopg" else (lambda value: value)
    same = all(sent(processor(v)) == encode(v) for v in _SAMPLE_RAWS)
    return encode if same else processor


def _psycopg_text(value) -> str:
    """The text psycopg sends for VALUE (a parameter or a COPY cell)."""
    from psycopg.adapt import PyFormat, Transformer
    return bytes(Transformer().get_dumper(value, PyFormat.TEXT).dump(value)).decode()


@functools.lru_cache(maxsize=4)
def _compiled_insert(dialect) -> _CallInsert:
    return _CallInsert(dialect)
