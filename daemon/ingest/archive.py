"""`helpdesk ingest --archive`: the mail of exported archives (mbox, Maildir, .eml) saved
and imported as history, the parsing done by a second process beside the saving.

Each batch of mail is saved durably first (status "history", daemon.ingest.intake), then
parsed by the worker while the next batch is read and saved, and imported
(daemon.ingest.history) once parsed, in the order it was saved. The parse is the
largest part of an import and needs nothing of the store, so where a second core is
idle it runs beside the rest (BENCHMARKS.md, figure 7). Killed anywhere, what was saved
and not yet imported waits as history and is imported first by the next run; what was
not saved is read from the files again.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from daemon.clock import Clock
from daemon.config import Config
from daemon.ingest.files import FileMail, read_mail
from daemon.ingest.history import HISTORY, HistoryImporter, history_envelope
from daemon.ingest.history_parse import parse_all
from daemon.ingest.intake import save_kept
from daemon.store import Store

log = logging.getLogger(__name__)

IN_FLIGHT = 2   # batches parsed ahead of the import: the worker is never idle, memory bounded


def parallel_parsing() -> bool:
    """Whether a second process should parse: this process may run on two CPUs or more.

    The parsing process costs a third more CPU in all (the mail goes to it and back), and
    an import is a one-off: what counts is how long the operator waits. Measured, it was
    never slower by the clock, 4% faster with both cores busy with other work and about
    15% faster with one idle (BENCHMARKS.md, figure 7); a load-average rule counted the
    import's own earlier minutes as load and chose the slower way.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus > 1


@dataclass
class ArchiveResult:
    saved: Counter = field(default_factory=Counter)      # saved / already stored
    imported: Counter = field(default_factory=Counter)   # the importer's counts


class ArchiveImport:
    """Saves the mail of PATHS as history and imports it (unless IMPORTING is False)."""

    def __init__(self, config: Config, store: Store, clock: Clock, *, mailbox: str,
                 importing: bool = True, workers: int | None = None) -> None:
        self.config, self.store, self.clock, self.mailbox = config, store, clock, mailbox
        self.importing = importing
        self.importer = HistoryImporter(config, store, clock)
        self.workers = workers if workers is not None else int(parallel_parsing())
        log.info("history: parsing %s", f"in {self.workers} process(es) of its own"
                 if self.workers else "in this process")
        self.result = ArchiveResult()
        self._pool: ProcessPoolExecutor | None = None
        self._parsing: deque[tuple[list[int], Future | list[bytes]]] = deque()

    def run(self, paths: Iterable[Path]) -> ArchiveResult:
        """Import what an earlier run left, then the mail of PATHS; raises NotMail for a
        path that holds no mail (what came before it is imported)."""
        if self.importing:  # first, in the order it was saved
            self.result.imported.update(self.importer.import_pending())
        try:
            for path in paths:
                self._save_and_import(read_mail(Path(path)))
        finally:
            self._drain()
        return self.result

    def _save_and_import(self, mails: Iterator[FileMail]) -> None:
        kept: deque[FileMail] = deque()
        batch: list[tuple[int, bytes]] = []
        for saved in save_kept(self.store, _remembered(mails, kept), channel="file",
                               now=self.clock.now, mailbox=self.mailbox, status=HISTORY,
                               envelope=lambda mail: history_envelope(mail.filed_at)):
            mail = kept.popleft()
            self.result.saved["saved" if saved.created else "already stored"] += 1
            if saved.created and self.importing:
                batch.append((saved.raw_id, mail.raw))
                if len(batch) >= self.importer.batch:
                    self._parse(batch)
                    batch = []
        if batch:
            self._parse(batch)

    def _parse(self, batch: list[tuple[int, bytes]]) -> None:
        """Hand BATCH to the worker; import the batches parsed before it meanwhile."""
        ids, raws = [raw_id for raw_id, _ in batch], [raw for _, raw in batch]
        limit = self.config.limits.attachment_max_bytes
        pool = self._worker()
        self._parsing.append((ids, pool.submit(parse_all, raws, limit) if pool else raws))
        while len(self._parsing) > (IN_FLIGHT if pool else 0):
            self._import_next()

    def _import_next(self) -> None:
        """Import the oldest batch handed out. Should its parse fail (a bug, the worker
        gone), the importer parses it again itself, where a failure is quarantined mail
        by mail."""
        ids, parsing = self._parsing.popleft()
        parsed = None
        try:
            mails = (parsing.result() if isinstance(parsing, Future)
                     else parse_all(parsing, self.config.limits.attachment_max_bytes))
            parsed = dict(zip(ids, mails))
        except BrokenProcessPool:  # the worker died (memory?): this process parses from now
            log.warning("history: the parsing process died; parsing in this process")
            self._pool, self.workers = None, 0
        except Exception:  # noqa: BLE001 - parsed again by the importer, mail by mail
            log.exception("history: parsing a batch failed")
        self.result.imported.update(self.importer.import_batch(ids, parsed) or Counter())

    def _worker(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.workers > 0:
            # A fork of this process would copy its open store connections and threads,
            # and a spawned process imports the command's whole module first: the workers
            # are forked from a fresh server process that has imported the parser alone.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["daemon.ingest.history_parse"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self._pool

    def _drain(self) -> None:
        try:
            while self._parsing:
                self._import_next()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
        if self.importing:  # anything saved by another process meanwhile, or left over
            self.result.imported.update(self.importer.import_pending())


def _remembered(mails: Iterator[FileMail], kept: deque[FileMail]) -> Iterator[FileMail]:
    """MAILS, each also put into KEPT, so the one a save result is about can be taken out."""
    for mail in mails:
        kept.append(mail)
        yield mail
