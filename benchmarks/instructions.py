"""Instructions per record of the pipeline, counted by valgrind's callgrind.

    python -m benchmarks.instructions [--records 300] [--count 5000] [--against PATH]

Wall-clock and CPU seconds on these shared hosts move with the neighbours: in one
session the same code processed the same records at 77 and 118 per CPU-second in
adjacent runs, and the bare mail-parser parse ran at 704 and 465 mails/s an hour apart.
An instruction count does not move with them (the same total twice, whatever else the
machine is doing), so it tells a change of a few percent from the noise.

The generated mbox is saved into a migrated SQLite store (`helpdesk ingest
--no-process`, not counted). Then two processes run under callgrind, each on its own
copy of that store: one opens it and processes nothing, one processes RECORDS pending
records, oldest first (the mbox's first RECORDS mails: new problems, replies, files in
the generator's mix). The difference over RECORDS is the instructions per record,
without the interpreter's start and the imports; string hashing is seeded alike in
every run (PYTHONHASHSEED=0), so sets and dicts iterate alike. `--against PATH` counts another
checkout of the code (a `git worktree` of an older commit, say) on the same store, the
runs two at a time on the two cores. Under callgrind a record takes about 60 times
its native time: about four minutes for the default.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import machine, save_result, saved_store

ROOT = Path(__file__).resolve().parent.parent

# Run with the checkout to count first on sys.path: SRC DATABASE CONFIG RECORDS.
CHILD = """
import dataclasses, logging, sys
sys.path.insert(0, sys.argv[1])
from daemon import config as config_module
from daemon.clock import Clock
from daemon.pipeline import Pipeline
from daemon.store import Store
logging.disable(logging.INFO)
config = dataclasses.replace(config_module.load(sys.argv[3], env={}),
                             database_url="sqlite:///" + sys.argv[2])
store = Store(config.database_url)
done = Pipeline(config, store, Clock()).process_pending(limit=int(sys.argv[4]))
print(dict(done))
"""


def counted(src: Path, database: Path, config: Path, records: int, out: Path) -> int:
    """Instructions of one child process under callgrind."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
         CHILD, str(src), str(database), str(config), str(records)],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({run.returncode}):\n{run.stderr[-2000:]}")
    if records and f"'processed': {records}" not in run.stdout:
        raise SystemExit(f"not every record processed: {run.stdout.strip()}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--count", type=int, default=5000, help="mails in the mbox")
    parser.add_argument("--against", type=Path, help="another checkout to count as well")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="jantar-instructions-"))
    try:
        saved, config, _save = saved_store(folder, args.count)
        checkouts = {"this": ROOT}
        if args.against:
            checkouts["against"] = args.against.resolve()
        jobs = {}
        for name, src in checkouts.items():
            for records in (0, args.records):
                database = folder / f"{name}-{records}.db"
                shutil.copy(saved, database)
                jobs[name, records] = (src, database, config, records,
                                       folder / f"{name}-{records}.callgrind")
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            futures = {key: pool.submit(counted, *job) for key, job in jobs.items()}
            totals = {key: future.result() for key, future in futures.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"machine": machine(), "records": args.records, "runs": {}}
    for name, src in checkouts.items():
        start, end = totals[name, 0], totals[name, args.records]
        result["runs"][name] = {
            "checkout": str(src), "commit": _commit(src), "start_instructions": start,
            "instructions_per_record": round((end - start) / args.records)}
    if args.against:
        this, other = (result["runs"][n]["instructions_per_record"] for n in ("this", "against"))
        result["this_vs_against"] = round(this / other, 4)
    path = save_result("instructions", result)
    for name, run in result["runs"].items():
        print(f"{name:8} {run['commit'] or '?':12} "
              f"{run['instructions_per_record'] / 1e6:8.2f} M instructions per record")
    if args.against:
        print(f"this / against: {result['this_vs_against']:.3f}")
    print(f"written to {path}")
    return 0


def _commit(src: Path) -> str | None:
    run = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "daemon"],
                           capture_output=True, text=True).stdout.strip()
    return (run.stdout.strip() + ("+changes" if dirty else "")) if run.returncode == 0 else None


if __name__ == "__main__":
    raise SystemExit(main())
