"""Run one PBX source now — read what is new since its cursor, store it, check callbacks.

`run_source` is the daemon's job for a [[pbx_sources]] entry and `helpdesk calls import
--source NAME`; `import_file` is `helpdesk calls import FILE`. Calls are stored a batch
per transaction; a file's cursor is saved as soon as the file is read, so a crash costs
at most re-reading one file (whose rows are then recognised as already stored).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.ingest.calls.asterisk import QueueLog, apply_queue_facts, import_master_csv
from daemon.ingest.calls.config import CallsConfig, PbxSource, calls_config
from daemon.ingest.calls.csvsource import import_csv_stream, read_layout, resumed_layout
from daemon.ingest.calls.files import (FileCursor, FileProblem, TextLines, cursor_after,
                                       matching_files, resume_point, unchanged)
from daemon.ingest.calls.httpjson import SourceError, fetch_records, field_values
from daemon.ingest.calls.records import RowError, make_record
from daemon.ingest.calls.writer import CallWriter, ImportResult
from daemon.rules.callbacks import run_callback_check
from daemon.store import Store
from daemon.store.models import PbxSourceState

log = logging.getLogger(__name__)
FORMATS = ("csv", "asterisk")
Progress = Callable[[str, int, int], None]   # (file, bytes read, file size)


class CallImportError(Exception):
    """A source or file that cannot be run as asked (unknown name, no mapping, unreachable)."""


@dataclass
class Run:
    """One run of one source: what it needs, and where its results go."""

    config: Config
    store: Store
    source: PbxSource
    now: datetime
    writer: CallWriter
    progress: Progress | None = None

    @property
    def result(self) -> ImportResult:
        return self.writer.result


# -- entry points -------------------------------------------------------------------------
def run_source(config: Config, store: Store, name: str, now: datetime, *,
               progress: Progress | None = None) -> ImportResult:
    """Fetch source NAME from its cursor, store its calls, run the callback check."""
    calls = calls_config(config)
    run = _run(config, store, calls, name, now, progress)
    cursor = load_state(store, name).cursor or {}
    try:
        cursor = FETCHERS[run.source.kind](run, cursor)
    except (SourceError, OSError) as exc:
        save_state(store, name, now, run.result, error=str(exc))
        log.error("pbx source %s: %s", name, exc)
        raise CallImportError(f"pbx source {name}: {exc}") from None
    run.result.callbacks = dict(run_callback_check(config, store, now))
    save_state(store, name, now, run.result, cursor=cursor)
    log.info("pbx source %s: %s", name, run.result.summary())
    return run.result


def import_file(config: Config, store: Store, name: str, path: str, file_format: str,
                now: datetime, *, progress: Progress | None = None) -> ImportResult:
    """Import one file under source NAME's mapping and time zone; the cursor is not touched."""
    calls = calls_config(config)
    run = _run(config, store, calls, name, now, progress)
    if file_format == "csv" and not run.source.columns:
        raise CallImportError(f"pbx source {name} ({run.source.kind}) has no "
                              f"[pbx_sources.columns] mapping to read a CSV file with")
    if not os.path.isfile(path):
        raise CallImportError(f"{path}: no such file")
    run.result.files.append(path)
    _read_file(run, path, None, asterisk=file_format == "asterisk")
    run.result.callbacks = dict(run_callback_check(config, store, now))
    return run.result


def _run(config: Config, store: Store, calls: CallsConfig, name: str, now: datetime,
         progress: Progress | None) -> Run:
    source = calls.source(name)
    if source is None:
        known = ", ".join(s.name for s in calls.sources) or "none configured"
        raise CallImportError(f"no pbx source named {name!r} (known: {known})")
    # The batches need not each wait for the disk: the cursor's commit after them does.
    writer = CallWriter(store.transaction, source, calls.settings, now, ImportResult(name),
                        durable_batches=False)
    return Run(config, store, source, now, writer, progress)


# -- files: csv and asterisk --------------------------------------------------------------
def _fetch_files(run: Run, cursor: dict) -> dict:
    """Every file the path pattern matches, from where it was left (csv and Master.csv)."""
    files = dict(cursor.get("files") or {})
    present = matching_files(run.source.path)
    for path in present:
        entry = FileCursor.of(files.get(path))
        if unchanged(path, entry):
            continue
        run.result.files.append(path)
        done = _read_file(run, path, entry, asterisk=run.source.kind == "asterisk")
        if done is not None:
            files[path] = done.as_dict()
            save_cursor(run.store, run.source.name, {**cursor, "files": files})
    files = {path: files[path] for path in present if path in files}
    cursor = {**cursor, "files": files}
    if run.source.kind == "asterisk" and run.source.queue_log:
        cursor = _fetch_queue_log(run, cursor)
    return cursor


def _read_file(run: Run, path: str, entry: FileCursor | None, *,
               asterisk: bool) -> FileCursor | None:
    """Read PATH from ENTRY (or the start) into the writer; the file's new cursor, or None
    when the file as a whole could not be read (reported in the result)."""
    encoding = run.source.encoding
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            resume = resume_point(handle, size, entry)
            handle.seek(resume.offset if resume else 0)
            lines = TextLines(handle, encoding, offset=resume.offset if resume else 0,
                              line=resume.line if resume else 0)
            progress = (lambda done: run.progress(path, done, size)) if run.progress else None
            if asterisk:
                import_master_csv(lines, run.source, run.writer, path, progress)
                extra = {}
            else:
                layout = resumed_layout(resume.extra, run.source, resume.line) if resume \
                    else read_layout(lines, run.source)
                import_csv_stream(lines, layout, run.source, run.writer, path, progress)
                extra = layout.as_dict()
            run.writer.flush()
            if run.progress:
                run.progress(path, size, size)
            return cursor_after(handle, path, lines, extra)
    except FileProblem as exc:
        run.writer.flush()
        run.result.error(path, exc.line, str(exc))
        return None


def _fetch_queue_log(run: Run, cursor: dict) -> dict:
    """queue_log's new lines: queue waits, abandons and agents onto the stored calls."""
    path = run.source.queue_log
    queue_log = QueueLog.carried(cursor.get("queue_pending"))
    entry = FileCursor.of(cursor.get("queue_log"))
    writer = run.writer

    def apply() -> None:
        run.result.queue_updates += apply_queue_facts(run.store.transaction, run.source,
                                                      queue_log, writer.directory_for)

    if os.path.isfile(path) and not unchanged(path, entry):
        with open(path, "rb") as handle:
            resume = resume_point(handle, os.fstat(handle.fileno()).st_size, entry)
            handle.seek(resume.offset if resume else 0)
            lines = TextLines(handle, run.source.encoding,
                              offset=resume.offset if resume else 0,
                              line=resume.line if resume else 0)
            for _ in queue_log.read(lines):
                apply()
            entry = cursor_after(handle, path, lines, {})
    apply()
    return {**cursor, "queue_log": entry.as_dict() if entry else None,
            "queue_pending": queue_log.keep(run.now)}


# -- http-json ----------------------------------------------------------------------------
def _fetch_http(run: Run, cursor: dict) -> dict:
    """Records since the cursor less the overlap; the cursor moves to the newest start seen."""
    since = datetime.fromisoformat(cursor["since"]) if cursor.get("since") else None
    newest = since
    asked = since - run.source.overlap if since else None
    for url, index, record in fetch_records(run.source, asked):
        if index == 1:
            run.result.files.append(url)
        try:
            call = make_record(field_values(record, run.source), run.source)
        except RowError as exc:
            run.result.read += 1
            run.result.error(url, index, str(exc))
            continue
        run.writer.add(call, record if isinstance(record, dict) else {"value": record},
                       f"{url}#{index}")
        newest = max(newest, call.started_at) if newest else call.started_at
    run.writer.flush()
    return {**cursor, "since": newest.isoformat() if newest else None}


def _fetch_mail(run: Run, cursor: dict) -> dict:
    """Mail sources are fed by the pipeline (daemon.ingest.calls.mail); the job only checks
    callbacks."""
    return cursor


FETCHERS = {"csv": _fetch_files, "asterisk": _fetch_files, "http-json": _fetch_http,
            "mail": _fetch_mail}


# -- state --------------------------------------------------------------------------------
def state_row(session: Session, name: str) -> PbxSourceState:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(PbxSourceState).values(name=name, cursor={}, last_result={})
                    .on_conflict_do_nothing())
    return session.scalars(select(PbxSourceState).where(PbxSourceState.name == name)).one()


def load_state(store: Store, name: str) -> PbxSourceState:
    with store.transaction() as session:
        return state_row(session, name)


def save_cursor(store: Store, name: str, cursor: dict) -> None:
    with store.transaction() as session:
        state_row(session, name).cursor = cursor


def save_state(store: Store, name: str, now: datetime, result: ImportResult, *,
               cursor: dict | None = None, error: str | None = None) -> None:
    with store.transaction() as session:
        record_run(session, name, now, result, cursor=cursor, error=error)


def record_run(session: Session, name: str, now: datetime, result: ImportResult, *,
               cursor: dict | None = None, error: str | None = None) -> None:
    state = state_row(session, name)
    if cursor is not None:
        state.cursor = cursor
    state.last_run_at, state.last_error = now, error
    if error is None:
        state.last_success_at = now
    summary = result.as_dict()
    summary["call_import_errors"] = summary["call_import_errors"][:20]
    summary["files"] = summary["files"][:50]
    state.last_result = summary
