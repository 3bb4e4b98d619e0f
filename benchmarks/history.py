"""History import throughput: `helpdesk ingest --archive` end to end vs the bare
mail-parser parse of the same mails, in the same run (issue 20, point 3).

    python -m benchmarks.history [--count 5000] [--repeat 3] [--compare-workers] [--with-live]

1. Generates the mbox (benchmarks.generate_mbox, seeded: the same 5,000 mails as
   figure 1).
2. Ours, REPEAT times: a fresh SQLite store in a temp dir, migrated (not timed); one
   `helpdesk ingest --archive MBOX` process timed end to end (read the mbox, save every
   raw mail durably, parse, thread, store tickets, messages, files, events) with its
   peak RSS and CPU. Then checks the store: one imported, closed ticket per new
   problem, every reply on the ticket the generator predicted, every message dated by
   its mail, nothing in the outbox, every raw record processed.
3. The reference, after each run of ours: `mailparser.parse_from_bytes` over the same
   mails, as benchmarks.ingest measures it, in a Python process of its own.
4. --compare-workers: each repeat also runs `--parse-workers 1` and `--parse-workers 0`
   (with and without the parsing process; the default chooses by the load average), to
   show what the second process brings on this machine at this load.
5. --with-live: the live `helpdesk ingest` of the same mbox once, for comparison.

The machine's load average is read before and after each timed run (other work on a
shared machine slows a run; say so beside the figure). Writes
benchmarks/results/history.json and prints a table row.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks.common import helpdesk, machine, save_result
from benchmarks.generate_mbox import MAILBOX, PREFIX, write_mbox
from benchmarks.ingest import fresh_store, rates, run_ours

# benchmarks.generate_mbox dates mail n at START + 37 s * n.
START = datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed_tree(process: subprocess.Popen) -> tuple[float, int, float, float, dict]:
    """`benchmarks.common.timed`, counting the command's parsing processes too.

    They are forked by a multiprocessing server process the command never waits for,
    so their CPU is not in the command's own rusage: each descendant's CPU and RSS are
    sampled every 50 ms and its last sample counted (a process may run up to 50 ms
    more after it). Returns also the peak RSS of each descendant, by its name.
    """
    import psutil
    start = time.perf_counter()
    root = psutil.Process(process.pid)
    cpu_of, rss_of = {}, {}
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        try:
            for child in root.children(recursive=True):
                with child.oneshot():
                    times, rss = child.cpu_times(), child.memory_info().rss
                    name = " ".join(child.cmdline()[1:4])[:60]
                cpu_of[child.pid] = times.user + times.system
                rss_of[name] = max(rss_of.get(name, 0), rss / 2**20)
        except psutil.Error:
            pass  # it ended between the listing and the reading
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    own = usage.ru_utime + usage.ru_stime  # with the children it waited for
    return elapsed, process.returncode, usage.ru_maxrss / 1024, own + sum(cpu_of.values()), {
        name: round(mb, 1) for name, mb in rss_of.items()}


def run_history(folder: Path, mbox: Path, facts: list[dict], *options: str) -> dict:
    database, config = fresh_store(folder)
    log = folder / "history.log"
    before = load()
    with open(log, "wb") as stderr:
        process = helpdesk(config, "ingest", "--archive", str(mbox), "--mailbox", MAILBOX,
                           "--json", *options, stderr=stderr)
        seconds, code, rss, cpu, helpers = timed_tree(process)
    if code != 0:
        raise SystemExit(f"helpdesk ingest --archive failed ({code}); see {log}:\n"
                         + log.read_text(errors="replace")[-3000:])
    summary = json.loads(process.stdout.read())
    parsing = next((line.split("history: parsing ", 1)[1] for line in
                    log.read_text(errors="replace").splitlines()
                    if "history: parsing " in line), "?")
    return {**rates(len(facts), seconds, cpu), "peak_rss_mb": round(rss, 1),
            "parsing": parsing,
            "helper_peak_rss_mb": helpers,
            "load_before": before, "load_after": load(), "summary": summary,
            "checks": check_history(database, facts)}


def check_history(database: Path, facts: list[dict]) -> dict:
    """The generator's predictions hold, and the import is history: closed, imported,
    dated by the mail, nothing queued."""
    db = sqlite3.connect(database)
    tickets = db.execute("select count(*) from tickets").fetchone()[0]
    not_history = db.execute("select count(*) from tickets where status != 'closed' "
                             "or imported = 0 or first_response_due is not null "
                             "or sla_alarm_at is not null").fetchone()[0]
    on = {mid: (number, created) for mid, number, created in db.execute(
        "select m.message_id, t.number, m.created_at from messages m "
        "join tickets t on t.id = m.ticket_id")}
    wrong = [f["message_id"] for f in facts if on.get(f["message_id"], (None,))[0]
             != f"{PREFIX}-{f['ticket']}"]
    misdated = [f["message_id"] for n, f in enumerate(facts)
                if on.get(f["message_id"], (None, None))[1]
                != (START + timedelta(seconds=37 * n)).strftime("%Y-%m-%d %H:%M:%S.%f")]
    outbox = db.execute("select count(*) from outbox").fetchone()[0]
    statuses = dict(db.execute("select status, count(*) from raw_messages group by status"))
    db.close()
    new = sum(f["new"] for f in facts)
    checks = {"tickets": tickets, "expected_tickets": new, "misfiled": len(wrong),
              "misdated": len(misdated), "not_history": not_history, "outbox": outbox,
              "raw": statuses}
    checks["ok"] = (tickets == new and not wrong and not misdated and not not_history
                    and outbox == 0 and statuses == {"processed": len(facts)})
    if not checks["ok"]:
        print(f"WARNING: unexpected store contents: {checks}; e.g. {wrong[:3]} {misdated[:3]}",
              file=sys.stderr)
    return checks


def run_reference(mbox: Path) -> dict:
    """The bare mail-parser parse of MBOX's mails, in a process of its own: this one never
    holds the mails, so the peak RSS of the commands it starts is theirs alone (a child
    starts from what it shares with its parent at the fork)."""
    code = ("import json, sys; from benchmarks.ingest import read_mails, run_mailparser; "
            "print(json.dumps(run_mailparser(read_mails(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, str(mbox)], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare-workers", action="store_true",
                        help="each repeat also without the parsing process")
    parser.add_argument("--with-live", action="store_true",
                        help="also time the live `helpdesk ingest` of the same mbox once")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--name", default="history", help="results file name")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="jantar-history-"))
    mbox = folder / "mail.mbox"
    facts = write_mbox(mbox, count=args.count)
    result: dict = {"machine": machine(), "mbox_mb": round(mbox.stat().st_size / 1e6, 1),
                    "runs": []}
    for n in range(args.repeat):
        (folder / f"run{n}").mkdir()
        ours = run_history(folder / f"run{n}", mbox, facts)
        before = load()
        reference = {**run_reference(mbox), "load_before": before, "load_after": load()}
        run = {"history": ours, "mailparser": reference,
               "ratio": round(ours["mails_per_s"] / reference["mails_per_s"], 3),
               "ratio_cpu": round(ours["mails_per_cpu_s"] / reference["mails_per_cpu_s"], 3)}
        if args.compare_workers:
            for workers, label in (("1", "parsing_process"), ("0", "single_process")):
                (folder / f"run{n}-{workers}").mkdir()
                other = run_history(folder / f"run{n}-{workers}", mbox, facts,
                                    "--parse-workers", workers)
                run[label] = {**other, "ratio": round(
                    other["mails_per_s"] / reference["mails_per_s"], 3)}
                print(f"  --parse-workers {workers}: {other['mails_per_s']} mails/s "
                      f"({other['mails_per_cpu_s']} per CPU-s, {other['peak_rss_mb']} MB): "
                      f"{run[label]['ratio']}; load {other['load_before']}-"
                      f"{other['load_after']}", flush=True)
        result["runs"].append(run)
        print(f"run {n + 1}: history (parsing {ours['parsing']}) {ours['mails_per_s']} mails/s "
              f"({ours['mails_per_cpu_s']} per CPU-s, {ours['peak_rss_mb']} MB), mail-parser "
              f"{reference['mails_per_s']} mails/s: {run['ratio']} (CPU {run['ratio_cpu']}); "
              f"load {ours['load_before']}-{reference['load_after']}; "
              f"checks {'ok' if ours['checks']['ok'] else ours['checks']}", flush=True)
    if args.with_live:
        (folder / "live").mkdir()
        result["live"] = run_ours(folder / "live", mbox, facts)
    ratios = [r["ratio"] for r in result["runs"]]
    result["median_ratio"] = statistics.median(ratios)
    result["median_ratio_cpu"] = statistics.median(r["ratio_cpu"] for r in result["runs"])
    path = save_result(args.name, result)
    best = max(result["runs"], key=lambda r: r["ratio"])
    print("| figure | history mails/s | peak RSS MB | mail-parser mails/s | ratio (median of "
          f"{len(ratios)}) |")
    print(f"| ingest --archive {args.count} mails | {best['history']['mails_per_s']} "
          f"| {best['history']['peak_rss_mb']} | {best['mailparser']['mails_per_s']} "
          f"| {result['median_ratio']} (runs: {', '.join(map(str, ratios))}) |")
    if "live" in result:
        print(f"live ingest of the same mbox: {result['live']['mails_per_s']} mails/s")
    print(f"written to {path}" + (f"; temp dir {folder}" if args.keep else ""))
    if not args.keep:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
