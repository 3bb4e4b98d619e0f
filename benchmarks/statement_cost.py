"""What one statement costs in the data layer the client fixed, against the ingest budget.

    python -m benchmarks.statement_cost [--records 300] [--repeat 2000]

At 1,000 mails a second one process has 1 ms of CPU a mail for everything: reading,
parsing, threading, routing, storing and queueing. This measures, on a fresh migrated
SQLite store (WAL, as the daemon opens it), the CPU of:

1. one lookup (the technician by address, a record's commonest query), executed as an
   ORM statement built at each call, an ORM statement built once (bindparam), a Core
   statement built once, and a plain DB-API `execute` on the same connection;
2. one small row written (an auto-reply entry): an ORM object flushed, a Core INSERT
   built once, a DB-API `execute`;
3. one write transaction (a row and its commit) through `Store.transaction()` and
   through the DB-API;
4. the pipeline itself over the first RECORDS generated mails (`benchmarks.generate_mbox`,
   seed 7): statements and commits per record, and CPU per record.

Each figure is the best of three runs of REPEAT executions (CPU time of this process),
so a busy neighbour inflates it less. Writes benchmarks/results/statement_cost.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import bindparam, event, insert, select

from benchmarks.common import machine, save_result, write_config
from benchmarks.generate_mbox import MAILBOX, generate

BUDGET_US = 1000.0  # CPU per mail at 1,000 mails a second in one process
ADDRESS = "anna.kowalska@jantar.pl"


def cpu_us(run, repeat: int) -> float:
    """Best of three: microseconds of CPU per call of RUN."""
    run()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(repeat):
            run()
        best = min(best, time.process_time() - start)
    return round(best / repeat * 1e6, 1)


def lookups(store, repeat: int) -> dict:
    from daemon.store.models import Technician
    table = Technician.__table__
    orm_once = select(Technician).where(Technician.email == bindparam("email"), Technician.active)
    core_once = select(table).where(table.c.email == bindparam("email"), table.c.active)
    with store.transaction() as session:
        connection = session.connection()
        dbapi = connection.connection.dbapi_connection
        return {
            "orm_built_each_call": cpu_us(lambda: session.scalar(
                select(Technician).where(Technician.email == ADDRESS, Technician.active)), repeat),
            "orm_built_once": cpu_us(lambda: session.scalar(orm_once, {"email": ADDRESS}), repeat),
            "core_built_once": cpu_us(lambda: connection.execute(
                core_once, {"email": ADDRESS}).first(), repeat),
            "dbapi": cpu_us(lambda: dbapi.execute(
                "SELECT * FROM technicians WHERE email = ? AND active = 1", (ADDRESS,)).fetchone(),
                repeat),
        }


def writes(store, repeat: int) -> dict:
    from daemon.store.models import AutoReplyLog
    now = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    table = AutoReplyLog.__table__
    statement = insert(table)
    with store.transaction() as session:
        connection = session.connection()
        dbapi = connection.connection.dbapi_connection

        def orm():
            session.add(AutoReplyLog(address=ADDRESS, sent_at=now))
            session.flush()
        figures = {
            "orm_object_flushed": cpu_us(orm, repeat),
            "core_built_once": cpu_us(lambda: connection.execute(
                statement, {"address": ADDRESS, "sent_at": now}), repeat),
            "dbapi": cpu_us(lambda: dbapi.execute(
                "INSERT INTO auto_reply_log (address, sent_at) VALUES (?, ?)",
                (ADDRESS, "2026-03-02 08:00:00.000000")), repeat),
        }
        session.rollback()
    return figures


def transactions(store, repeat: int) -> dict:
    from daemon.store.models import AutoReplyLog
    now = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    statement = insert(AutoReplyLog.__table__)

    def ours():
        with store.transaction() as session:
            session.connection().execute(statement, {"address": ADDRESS, "sent_at": now})
    raw = store.engine.raw_connection()
    dbapi = raw.driver_connection

    def plain():
        dbapi.execute("BEGIN IMMEDIATE")
        dbapi.execute("INSERT INTO auto_reply_log (address, sent_at) VALUES (?, ?)",
                      (ADDRESS, "2026-03-02 08:00:00.000000"))
        dbapi.execute("COMMIT")
    try:
        isolation, dbapi.isolation_level = dbapi.isolation_level, None  # explicit BEGIN
        figures = {"store_transaction": cpu_us(ours, repeat // 4),
                   "dbapi": cpu_us(plain, repeat // 4)}
        dbapi.isolation_level = isolation
    finally:
        raw.close()
    return figures


def pipeline(config, store, records: int) -> dict:
    from daemon.clock import Clock
    from daemon.ingest.intake import content_key, save_raw
    from daemon.pipeline import Pipeline
    now = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    mails = [raw for _sender, _date, raw, _facts in generate(count=records, seed=7)]
    for raw in mails:
        save_raw(store, channel="file", key=content_key(raw), raw=raw, now=now, mailbox=MAILBOX)
    counts = {"statements": 0, "commits": 0}

    def statement(*_args):
        counts["statements"] += 1

    def commit(_connection):
        counts["commits"] += 1
    event.listen(store.engine, "before_cursor_execute", statement)
    event.listen(store.engine, "commit", commit)
    work = Pipeline(config, store, Clock())
    start = time.process_time()
    done = sum(work.process_pending().values())
    cpu = time.process_time() - start
    event.remove(store.engine, "before_cursor_execute", statement)
    event.remove(store.engine, "commit", commit)
    return {"records": done,
            "statements_per_record": round(counts["statements"] / done, 1),
            "commits_per_record": round(counts["commits"] / done, 2),
            "cpu_us_per_record": round(cpu / done * 1e6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args(argv)
    from daemon.config import load
    from daemon.service import prepare_store
    from daemon.store import Store
    with tempfile.TemporaryDirectory(prefix="jantar-statements-") as folder:
        config = load(write_config(Path(folder), f"sqlite:///{folder}/helpdesk.db"))
        store = Store(config.database_url)
        prepare_store(config, store)
        result = {"machine": machine(), "budget_us_per_mail": BUDGET_US,
                  "lookup_us": lookups(store, args.repeat),
                  "write_us": writes(store, args.repeat),
                  "transaction_us": transactions(store, args.repeat),
                  "pipeline": pipeline(config, store, args.records)}
        store.dispose()
    statements = result["pipeline"]["statements_per_record"]
    result["statements_alone_us_per_record"] = {
        way: round(statements * cost, 1) for way, cost in result["lookup_us"].items()}
    path = save_result("statement_cost", result)
    lookup, write, txn = result["lookup_us"], result["write_us"], result["transaction_us"]
    print("| way | lookup us | row written us | transaction us |")
    print("|---|---|---|---|")
    print(f"| ORM, built at each call | {lookup['orm_built_each_call']} | "
          f"{write['orm_object_flushed']} | - |")
    print(f"| ORM, built once | {lookup['orm_built_once']} | - | - |")
    print(f"| Core, built once | {lookup['core_built_once']} | {write['core_built_once']} | "
          f"{txn['store_transaction']} |")
    print(f"| DB-API | {lookup['dbapi']} | {write['dbapi']} | {txn['dbapi']} |")
    p = result["pipeline"]
    print(f"pipeline: {p['statements_per_record']} statements and {p['commits_per_record']} "
          f"commits a record, {p['cpu_us_per_record']} us of CPU a record "
          f"(budget {BUDGET_US:.0f} us a mail)")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
