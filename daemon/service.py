"""The long-running daemon: IMAP pullers, SMTP receiver, the web, the pipeline and periodic jobs."""
from __future__ import annotations

import functools
import logging
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError

from daemon.clock import Clock
from daemon.config import Config
from daemon.conversation import send_coordinator_digest
from daemon.directory import sync_directory
from daemon.ingest.refusals import IntakeRefusals
from daemon.listeners import Listeners
from daemon.pipeline import Pipeline
from daemon.store import Store
from daemon.store.db import unreachable_reason
from daemon.store.migrate import upgrade

log = logging.getLogger(__name__)
SEND_BATCH = 10  # mails per send_pending call; a stop waits for at most one such batch
# A stop waits this long for each thread (the pipeline's record in hand, a puller's batch);
# deploy/helpdesk.service's TimeoutStopSec leaves room for it and for the jobs running.
THREAD_JOIN_SECONDS = 30


def counted(results: Counter) -> str:
    """{"sent": 2, "retry": 1} as '2 sent, 1 retry', for a job's log line."""
    return ", ".join(f"{n} {what}" for what, n in sorted(results.items()))


@dataclass(frozen=True)
class Job:
    """A periodic job: safe to run twice, and in two processes at once."""

    name: str
    every: timedelta
    run: Callable[[], object]


def prepare_store(config: Config, store: Store) -> None:
    """Migrate (under a lock) and mirror clients and technicians from configuration."""
    before, after = upgrade(store)
    if before != after:
        log.info("store: migrated from %s to %s", before or "empty", after)
    with store.transaction() as session:
        sync_directory(session, config)


class Daemon:
    def __init__(self, config: Config, store: Store, clock: Clock):
        self.config, self.store, self.clock = config, store, clock
        self.pipeline = Pipeline(config, store, clock)
        # One for the receiver, the pullers and the web: /healthz sees every refusal.
        self.intake_refusals = IntakeRefusals(clock.now)
        self.stop = threading.Event()
        self.wake = threading.Event()
        # "send" after "process" and "sla sweep", so that a run --once also sends what
        # they queued.
        self.jobs: list[Job] = [Job("process", timedelta(seconds=30), self.process_backlog),
                                Job("sla sweep", timedelta(seconds=60), self.sweep_sla),
                                Job("send", timedelta(seconds=10), self.send_outbox)]
        self.jobs.append(Job("purge discarded mail", timedelta(hours=6), self.purge_discarded))
        self.jobs.append(Job("import history", timedelta(seconds=60), self.import_history))
        if config.tickets.coordinator_digest:
            self.jobs.append(Job("coordinator digest", config.tickets.coordinator_digest,
                                 lambda: send_coordinator_digest(config, store, clock)))
        self.jobs += self.pbx_jobs()
        self._threads: list[threading.Thread] = []

    # -- pieces -----------------------------------------------------------------------
    def pullers(self):
        from daemon.ingest.imap import ImapPuller
        return [ImapPuller(self.config, mailbox, self.store, self.clock, on_saved=self.wake.set,
                           on_refused=functools.partial(self.intake_refusals.record, "imap"))
                for mailbox in self.config.mailboxes if mailbox.pulls_imap]

    def pbx_jobs(self) -> list[Job]:
        """One job per [[pbx_sources]] entry, on its own schedule: import, then callbacks."""
        from daemon.ingest.calls.config import calls_config
        return [Job(f"pbx {source.name}", source.every,
                    lambda name=source.name: self.import_calls(name))
                for source in calls_config(self.config).sources]

    def import_calls(self, name: str) -> dict:
        from daemon.ingest.calls.run import CallImportError, run_source
        try:
            return run_source(self.config, self.store, name, self.clock.now()).as_dict()
        except CallImportError as exc:  # logged with the source; the next run tries again
            return {"source": name, "error": str(exc)}

    def process_backlog(self) -> Counter:
        results = self.pipeline.process_pending(stop=self.stop)
        if results:
            log.info("process: %s", counted(results))
        return results

    def sweep_sla(self) -> Counter:
        from daemon.rules.sla_sweep import sweep_sla
        results = sweep_sla(self.config, self.store, self.clock)
        if results:
            log.info("sla sweep: %s", counted(results))
        return results

    def send_outbox(self) -> Counter:
        """Due mail in batches, so that a stop waits for the mail in hand, not the outbox."""
        from daemon.outbound.sender import send_pending
        results: Counter = Counter()
        while True:
            batch = send_pending(self.config, self.store, self.clock, limit=SEND_BATCH)
            results.update(batch)
            # A short batch: nothing more is due, or the relay is down (send_pending stops
            # at once then, so the rest keeps its attempts).
            if sum(batch.values()) < SEND_BATCH or self.stop.is_set():
                break
        if results:
            log.info("send: %s", counted(results))
        return results

    def import_history(self) -> Counter:
        """History saved and not yet imported (`ingest --archive --no-process`, a run
        killed between its save and its import): filed as history, sending nothing."""
        from daemon.ingest.history import HistoryImporter
        results = HistoryImporter(self.config, self.store, self.clock).import_pending(self.stop)
        if results:
            log.info("import history: %s", counted(results))
        return results

    def purge_discarded(self) -> int:
        from daemon.quarantine import purge_discarded
        return purge_discarded(self.store, self.clock.now(), self.config.tickets.discard_keep_days)

    # -- one pass, for cron and checks -------------------------------------------------
    def run_once(self) -> dict[str, object]:
        report: dict[str, object] = {}
        for puller in self.pullers():
            with puller:  # logs out and hands the lease back at once
                report[f"imap {puller.mailbox.address}"] = puller.poll_once()
        for job in self.jobs:
            report[job.name] = job.run()
        return report

    # -- forever -------------------------------------------------------------------------
    def _processor(self) -> None:
        while not self.stop.is_set():
            try:
                busy = bool(self.process_backlog())
            except OperationalError as exc:  # the store is unreachable: one line, not a trace
                log.error("process: pass failed, store unreachable; retrying in 5 s: %s",
                          unreachable_reason(exc))
                busy = False
            except Exception:  # noqa: BLE001 - a bug must not stop the pipeline thread
                log.exception("process: pass failed; retrying")
                busy = False
            if not busy:
                self.wake.wait(timeout=5)
                self.wake.clear()

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _handle_signal(self, signum, _frame) -> None:
        log.info("helpdesk: %s: finishing the message in hand, then exiting",
                 signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def run(self, listeners: Listeners | None = None) -> None:
        """Serve until SIGTERM or SIGINT. LISTENERS: the ports `helpdesk run` bound before
        it opened the store (daemon.listeners); without them they are bound here."""
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)
        listeners = listeners or Listeners()
        receiver = None
        if self.config.smtp_server.enabled:
            from daemon.ingest.smtp import start_receiver
            receiver = start_receiver(self.config, self.store, self.clock, on_saved=self.wake.set,
                                      refusals=self.intake_refusals, sock=listeners.smtp)
        from webform.serve import start_web
        web = start_web(self.config, self.store, self.clock, self.intake_refusals,
                        sock=listeners.web)
        for puller in self.pullers():
            self._start_thread(f"imap-{puller.mailbox.address}", lambda p=puller: p.run(self.stop))
        self._start_thread("pipeline", self._processor)
        scheduler = BackgroundScheduler(timezone="UTC")
        # Each job runs at once too, not first after its interval: a daemon restarted
        # within 10 s (a crash loop, a supervisor's quick restarts) would otherwise never send.
        started = datetime.now(UTC)
        for job in self.jobs:
            if job.run == self.process_backlog:
                # The pipeline thread does this. A second pipeline in the same process
                # would take records out of order (SKIP LOCKED passes over the one in
                # hand), and a reply processed before its parent opens a ticket of its own.
                continue
            scheduler.add_job(job.run, "interval", seconds=job.every.total_seconds(), id=job.name,
                              max_instances=1, coalesce=True, next_run_time=started)
        scheduler.start()
        log.info("helpdesk running (%s store)", self.store.backend)
        try:
            while not self.stop.wait(timeout=1):
                pass
        finally:
            scheduler.shutdown(wait=True)
            if receiver is not None:
                receiver.stop()
            if web is not None:
                web.stop()
            for thread in self._threads:
                thread.join(timeout=THREAD_JOIN_SECONDS)
            log.info("helpdesk stopped")
