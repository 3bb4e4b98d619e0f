"""Two `helpdesk run` processes on one PostgreSQL vs one, working off one backlog.

    python -m benchmarks.multiprocess [--count 20000] [--processes 2]

A private schema in the `test` database at 127.0.0.1:5432 (as tests/conftest.py makes
one) is migrated and filled with COUNT pending raw mails by `helpdesk ingest
--no-process` (only saved, as an SMTP receiver or IMAP puller would leave them; not
timed). A second schema gets a copy of the same backlog. Then one `helpdesk run`
works off the first and PROCESSES of them work off the second (SMTP receiver and web
disabled, no IMAP, outgoing mail to a maildir); each run is timed from start until no
record is pending. Checked on both: one ticket per new problem (per Message-ID), no
message filed twice, no outgoing mail twice (one ack and one coordinator notice per
ticket, unique Message-IDs), nothing quarantined. Writes benchmarks/results/multiprocess.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.common import helpdesk, machine, save_result, timed, write_config
from benchmarks.generate_mbox import write_mbox

PG_BASE_URL = os.environ.get("HELPDESK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def schema_url(schema: str) -> str:
    return f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"


def prepare(folder: Path, schemas: list[str], count: int, admin) -> tuple[list[Path], list[dict]]:
    with admin.connect() as connection:
        for schema in schemas:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    configs = []
    for schema in schemas:
        (folder / schema).mkdir()
        configs.append(write_config(folder / schema, schema_url(schema)))
        if timed(helpdesk(configs[-1], "migrate"))[1] != 0:
            raise SystemExit("helpdesk migrate failed")
    mbox = folder / "backlog.mbox"
    # No subject tags: with several processes, ticket numbers follow the order in which
    # records are processed, which no generator can predict; replies thread by
    # In-Reply-To and answer mail at least 500 mails older (long processed by then).
    facts = write_mbox(mbox, count=count, seed=11, tags=False, reply_gap=500)
    start = time.perf_counter()
    saving = helpdesk(configs[0], "ingest", str(mbox), "--no-process", "--json",
                      stderr=subprocess.DEVNULL)
    if timed(saving)[1] != 0:
        raise SystemExit("helpdesk ingest --no-process failed")
    print(f"backlog of {count} saved in {time.perf_counter() - start:.0f} s")
    first, *others = schemas
    with admin.begin() as connection:
        for schema in others:  # the very same backlog, byte for byte
            for table in ("raw_messages", "raw_bodies"):
                connection.execute(text(f'INSERT INTO "{schema}".{table} '
                                        f'SELECT * FROM "{first}".{table}'))
            connection.execute(text(
                f"SELECT setval(pg_get_serial_sequence('\"{schema}\".raw_messages', 'id'), "
                f'(SELECT max(id) FROM "{schema}".raw_messages))'))
    mbox.unlink()
    return configs, facts


def pending(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM raw_messages WHERE status = 'pending'")).scalar_one()


def busy_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, from /proc/stat, in clock ticks."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def postgres_cpu_seconds() -> float:
    """User and system CPU of every PostgreSQL server process on this machine."""
    import psutil
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("postgres"):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def work_off(config: Path, url: str, processes: int, log: Path) -> dict:
    engine = create_engine(url)
    total = pending(engine)
    with open(log, "wb") as stderr:
        busy_before, postgres_before = busy_jiffies(), postgres_cpu_seconds()
        start = time.perf_counter()
        runs = [helpdesk(config, "run", stdout=subprocess.DEVNULL, stderr=stderr)
                for _ in range(processes)]
        while pending(engine):
            if any(run.poll() is not None for run in runs):
                raise SystemExit(f"a helpdesk run exited early; see {log}")
            time.sleep(0.25)
        seconds = time.perf_counter() - start
        busy_after, postgres_after = busy_jiffies(), postgres_cpu_seconds()
        for run in runs:
            run.send_signal(signal.SIGTERM)
        usage = [timed(run) for run in runs]
    engine.dispose()
    return {"processes": processes, "mails": total, "seconds": round(seconds, 2),
            "mails_per_s": round(total / seconds, 1),
            "cpu_seconds": round(sum(u[3] for u in usage), 1),
            # Of the whole machine, over the timed run: how many of its cores were busy
            # (everything: the daemons, PostgreSQL, anything else running), and
            # PostgreSQL's own share (its server processes, including background ones).
            "machine_busy_cores": round((busy_after[0] - busy_before[0]) /
                                        (busy_after[1] - busy_before[1]) * (os.cpu_count() or 1), 2),
            "postgres_cpu_seconds": round(postgres_after - postgres_before, 1),
            "peak_rss_mb": [round(u[2], 1) for u in usage]}


def check(url: str, facts: list[dict]) -> dict:
    engine = create_engine(url)
    queries = {
        "tickets": "SELECT count(*) FROM tickets",
        "messages_filed_twice": "SELECT count(*) FROM (SELECT message_id FROM messages "
                                "WHERE direction = 'in' GROUP BY message_id "
                                "HAVING count(*) > 1) x",
        # each ticket's first message, if incoming: no Message-ID may open two tickets
        "tickets_per_new_message_id_above_1": (
            "SELECT count(*) FROM (SELECT f.message_id FROM (SELECT DISTINCT ON (ticket_id) "
            "message_id, direction FROM messages ORDER BY ticket_id, id) f "
            "WHERE f.direction = 'in' GROUP BY f.message_id HAVING count(*) > 1) x"),
        "outbox_twice_per_ticket_kind": (
            "SELECT count(*) FROM (SELECT ticket_id, kind FROM outbox WHERE kind IN "
            "('ack', 'coordinator_new') GROUP BY ticket_id, kind HAVING count(*) > 1) x"),
        "outbox_message_id_twice": "SELECT count(*) - count(DISTINCT message_id) FROM outbox",
        "acks": "SELECT count(*) FROM outbox WHERE kind = 'ack'",
        # a reply not on the ticket of the mail it answers
        "replies_misfiled": (
            "SELECT count(*) FROM messages r JOIN messages p ON p.message_id = r.in_reply_to "
            "AND p.direction = 'in' WHERE r.direction = 'in' AND r.ticket_id <> p.ticket_id"),
        "quarantined": "SELECT count(*) FROM raw_messages WHERE status = 'quarantined'",
    }
    with engine.connect() as connection:
        result = {name: connection.execute(text(sql)).scalar_one() for name, sql in queries.items()}
    engine.dispose()
    new = sum(f["new"] for f in facts)
    result["expected_tickets"] = new
    result["ok"] = (result["tickets"] == new == result["acks"] and not result["quarantined"]
                    and not result["messages_filed_twice"]
                    and not result["tickets_per_new_message_id_above_1"]
                    and not result["outbox_twice_per_ticket_kind"]
                    and not result["outbox_message_id_twice"]
                    and not result["replies_misfiled"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--label", default="multiprocess", help="name of the result file")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="jantar-multi-"))
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    schemas = [f"bench_one_{tag}", f"bench_many_{tag}"]
    admin = create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    try:
        configs, facts = prepare(folder, schemas, args.count, admin)
        one = work_off(configs[0], schema_url(schemas[0]), 1, folder / "one.log")
        print(f"1 process: {one}")
        many = work_off(configs[1], schema_url(schemas[1]), args.processes, folder / "many.log")
        print(f"{args.processes} processes: {many}")
        result = {"machine": machine(), "one": one, "many": many,
                  "ratio": round(many["mails_per_s"] / one["mails_per_s"], 2),
                  "checks_one": check(schema_url(schemas[0]), facts),
                  "checks_many": check(schema_url(schemas[1]), facts)}
    finally:
        with admin.connect() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    path = save_result(args.label, result)
    print("| figure | 1 process mails/s | N processes mails/s | ratio | duplicates |")
    print(f"| {args.count} backlog, PostgreSQL | {one['mails_per_s']} | {many['mails_per_s']} "
          f"({args.processes}) | {result['ratio']}x | "
          f"{'none' if result['checks_many']['ok'] else json.dumps(result['checks_many'])} |")
    print(f"checks: one {result['checks_one']}\n        many {result['checks_many']}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
