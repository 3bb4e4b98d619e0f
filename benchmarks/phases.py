"""Where a record's CPU goes, by phase, and the bound that sets on figure 1's targets.

    python -m benchmarks.phases [--count 5000] [--records N]

The generated mbox is saved into a migrated SQLite store (`helpdesk ingest
--no-process`, timed: the durable save, one process; a second over an empty mbox
gives the process's own start, subtracted). Then this process works off RECORDS of
the saved records (all of them by default) through the pipeline, as `helpdesk ingest`
does after its save, with the store's checkpoint thread, and with timers that give
each moment of the main thread's CPU (`time.thread_time`) to the innermost phase open:

- *parse*: `daemon.parse.parse_mail`, as the pipeline calls it;
- *outgoing mail*: rendering the templates (`render_mail`) and composing the mail's
  bytes (`compose`) for the acknowledgement, the coordinator's notice, the forward;
- *SQLite*: the DB-API calls SQLAlchemy makes (the dialect's execute, executemany and
  commit), i.e. the sqlite3 module and SQLite's own work;
- *SQLAlchemy*: the Session's and Connection's execute, scalar(s), get, flush and
  commit as our code calls them (and the commit that ends a record's transaction),
  less the SQLite inside them: SQLAlchemy's own Python. Lazy loads and attribute
  instrumentation are not in it (they happen inside our code's attribute reads), so
  this is a lower bound of SQLAlchemy's cost;
- *the rest*: our steps' own Python (threading, filing, routing, the SLA clocks,
  the rows of the record) and what the phases above leave out.

The timers cost about a microsecond per call, some 40 calls a record: within 1% of
a record's CPU. The bounds printed at the end are what a mail costs before the pipeline
stores anything: the durable save as it is, the parse and the outgoing mail (all three
kinds, and the acknowledgement alone); and, apart, what would be left if SQLAlchemy's
own Python cost nothing.

Writes benchmarks/results/phases.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import helpdesk, machine, save_result, saved_store, timed

PHASES = ("parse", "outgoing mail", "SQLite", "SQLAlchemy", "the rest")


class Phases:
    """CPU seconds of this thread, each moment counted to the innermost phase open."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self.by_kind: Counter = Counter()  # (phase, kind of the mail being sent)
        self.calls: Counter = Counter()
        self.kind: str | None = None
        self._open = ["the rest"]
        self._mark = time.thread_time()

    def _switch(self) -> None:
        now = time.thread_time()
        self.seconds[self._open[-1]] += now - self._mark
        if self.kind is not None:
            self.by_kind[self._open[-1], self.kind] += now - self._mark
        self._mark = now

    def sending(self, owner, name: str) -> None:
        """OWNER.NAME(..., kind=K) sends a mail of kind K: the time inside it is also
        counted by K."""
        function = getattr(owner, name)

        @functools.wraps(function)
        def of_kind(*args, **kwargs):
            self._switch()
            self.kind = kwargs.get("kind")
            try:
                return function(*args, **kwargs)
            finally:
                self._switch()
                self.kind = None
        setattr(owner, name, of_kind)

    def timed(self, phase: str, function):
        @functools.wraps(function)
        def in_phase(*args, **kwargs):
            self._switch()
            self._open.append(phase)
            self.calls[phase] += 1
            try:
                return function(*args, **kwargs)
            finally:
                self._switch()
                self._open.pop()
        return in_phase

    def wrap(self, phase: str, owner, *names: str) -> None:
        for name in names:
            setattr(owner, name, self.timed(phase, getattr(owner, name)))

    def close(self) -> dict[str, float]:
        self._switch()
        return dict(self.seconds)


def process_timed(database: Path, config_path: Path, records: int) -> dict:
    """Work off RECORDS pending records in this process, the phases timed."""
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, SessionTransaction

    import daemon.conversation
    import daemon.outbound.outbox
    import daemon.pipeline
    from daemon import config as config_module
    from daemon.clock import Clock
    from daemon.pipeline import Pipeline
    from daemon.store import Store

    logging.disable(logging.INFO)  # `helpdesk ingest` logs a line a record: not a phase
    config = dataclasses.replace(config_module.load(str(config_path), env={}),
                                 database_url=f"sqlite:///{database}")
    store = Store(config.database_url, checkpoint_thread=True)
    phases = Phases()
    phases.wrap("parse", daemon.pipeline, "parse_mail")
    phases.wrap("outgoing mail", daemon.conversation, "render_mail")
    phases.wrap("outgoing mail", daemon.outbound.outbox, "compose")
    phases.sending(daemon.conversation, "send_template")
    phases.wrap("SQLite", store.engine.dialect, "do_execute", "do_executemany",
                "do_execute_no_params", "do_commit")
    phases.wrap("SQLAlchemy", Session, "execute", "scalar", "scalars", "get", "flush",
                "commit")
    phases.wrap("SQLAlchemy", Connection, "execute", "scalar", "commit")
    phases.wrap("SQLAlchemy", SessionTransaction, "commit")
    pipeline = Pipeline(config, store, Clock())
    process_before, thread_before = time.process_time(), time.thread_time()
    done = pipeline.process_pending(limit=records)
    process_cpu = time.process_time() - process_before
    thread_cpu = time.thread_time() - thread_before
    seconds = phases.close()
    checkpoints = store.checkpointer.checkpoints if store.checkpointer else 0
    store.dispose()
    if sum(done.values()) != records or set(done) != {"processed"}:
        raise SystemExit(f"expected {records} records processed, got {dict(done)}")
    return {"records": records, "thread_cpu_seconds": round(thread_cpu, 3),
            "checkpoint_thread_cpu_seconds": round(process_cpu - thread_cpu, 3),
            "checkpoints": checkpoints,
            "phases_seconds": {p: round(seconds.get(p, 0.0), 3) for p in PHASES},
            "outgoing_mail_seconds_by_kind": {
                kind: round(t, 3) for (phase, kind), t in sorted(phases.by_kind.items())
                if phase == "outgoing mail"},
            "calls_per_record": {p: round(n / records, 2) for p, n in phases.calls.items()}}


def process_start(folder: Path, config: Path) -> float:
    """CPU seconds of a `helpdesk ingest --no-process` over an empty mbox: its start."""
    empty = folder / "empty.mbox"
    empty.write_bytes(b"")
    _seconds, code, _rss, cpu = timed(helpdesk(config, "ingest", str(empty), "--no-process",
                                               stderr=subprocess.DEVNULL))
    if code != 0:
        raise SystemExit("helpdesk ingest of an empty mbox failed")
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="mails in the mbox")
    parser.add_argument("--records", type=int, help="records to process (default: all)")
    args = parser.parse_args(argv)
    records = args.records or args.count
    folder = Path(tempfile.mkdtemp(prefix="jantar-phases-"))
    try:
        database, config, save = saved_store(folder, args.count)
        start_cpu = process_start(folder, config)
        run = process_timed(database, config, records)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_record = {p: 1000 * s / records for p, s in run["phases_seconds"].items()}
    save_ms = 1000 * (save[3] - start_cpu) / args.count
    needed = save_ms + per_record["parse"] + per_record["outgoing mail"]
    ack_ms = 1000 * run["outgoing_mail_seconds_by_kind"].get("ack", 0.0) / records
    needed_ack_only = save_ms + per_record["parse"] + ack_ms
    without_sqlalchemy = save_ms + sum(per_record.values()) - per_record["SQLAlchemy"]
    result = {
        "machine": machine(), "mails": args.count, **run,
        "save": {"cpu_seconds": round(save[3], 3), "process_start_cpu_seconds":
                 round(start_cpu, 3), "ms_per_mail": round(save_ms, 3)},
        "ms_per_record": {p: round(v, 3) for p, v in per_record.items()},
        "bound": {"save_parse_outgoing_ms": round(needed, 3),
                  "mails_per_cpu_s_at_most": round(1000 / needed, 1),
                  "save_parse_ack_ms": round(needed_ack_only, 3),
                  "ack_only_mails_per_cpu_s_at_most": round(1000 / needed_ack_only, 1),
                  "without_sqlalchemy_ms": round(without_sqlalchemy, 3),
                  "without_sqlalchemy_mails_per_cpu_s": round(1000 / without_sqlalchemy, 1)},
    }
    path = save_result("phases", result)
    total = sum(per_record.values())
    print(f"{records} records, ms of CPU a record (main thread), {total:.3f} in all:")
    for phase, ms in per_record.items():
        print(f"  {phase:14} {ms:6.3f}  {100 * ms / total:5.1f}%")
    print(f"  checkpoint thread {1000 * run['checkpoint_thread_cpu_seconds'] / records:.3f} "
          f"({run['checkpoints']} checkpoints)")
    print(f"durable save: {save_ms:.3f} ms a mail (process start subtracted)")
    print(f"save + parse + outgoing mail: {needed:.3f} ms a mail, at most "
          f"{1000 / needed:.0f} mails per CPU-second before a ticket is stored")
    for kind, seconds in run["outgoing_mail_seconds_by_kind"].items():
        print(f"  outgoing mail, {kind:16} {1000 * seconds / records:6.3f} ms a record")
    print(f"save + parse + the acknowledgement alone: {needed_ack_only:.3f} ms a mail, at most "
          f"{1000 / needed_ack_only:.0f} mails per CPU-second")
    print(f"all but SQLAlchemy's own Python: {without_sqlalchemy:.3f} ms a mail, "
          f"{1000 / without_sqlalchemy:.0f} mails per CPU-second")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
