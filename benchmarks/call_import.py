"""Call import: a 1,000,000-row Orange-style CSV through `helpdesk calls import`, time and memory.

The CSV is Windows-1250 with `;`, the columns of the example configuration's "orange"
source (helpdesk.example.toml). The real command runs in a subprocess on a fresh,
migrated store; its resident memory is sampled every 50 ms together with how far into
the file it has read (the file descriptor's position in /proc), so RSS can be shown at
10%, 50% and 100% of the rows. A 250,000-row run is measured for comparison: flat
memory means the two peaks are about the same. The command's CPU seconds (user + sys)
and the load average at its end are recorded too: on a shared machine they tell how
much of the wall time is the neighbours'.

    python -m benchmarks.call_import [--rows 1000000] [--compare 250000] [--backend sqlite|postgresql|both]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil

from benchmarks.scale_common import NOW, ROOT, pg_available, pg_store, write_result
from benchmarks.seed import make_directory

TARGET_S = 60
WORK = ROOT / "var" / "bench" / "calls"
HEADER = ["Id połączenia", "Data i godzina", "Numer dzwoniącego", "Numer wybierany",
          "Czas oczekiwania", "Czas rozmowy", "Status"]
HOTLINE = "226 000 500"


def make_csv(path: Path, rows: int, seed: int = 5) -> None:
    """ROWS calls over the last 90 days: 80% answered, 12% missed, 8% abandoned."""
    if path.exists() and path.stat().st_size > 0 and path.with_suffix(".ok").exists():
        return
    rng = random.Random(seed)
    start = NOW - timedelta(days=90)
    step = timedelta(days=90) / rows
    callers = [f"0{rng.randint(500_000_000, 799_999_999)}" for _ in range(20_000)]
    with open(path, "w", encoding="windows-1250", newline="") as out:
        out.write(";".join(HEADER) + "\r\n")
        lines = []
        for i in range(rows):
            at = (start + step * i).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            roll = rng.random()
            status = "Odebrane" if roll < 0.8 else "Nieodebrane" if roll < 0.92 else "Porzucone"
            talk = rng.randint(20, 900) if status == "Odebrane" else 0
            caller = "Zastrzeżony" if rng.random() < 0.02 else rng.choice(callers)
            lines.append(f"{1_000_000 + i};{at};{caller};{HOTLINE};{rng.randint(0, 120)};"
                         f"{talk // 60}:{talk % 60:02d};{status}\r\n")
            if len(lines) == 10_000:
                out.write("".join(lines))
                lines = []
        out.write("".join(lines))
    path.with_suffix(".ok").touch()


def config_toml(database_url: str, data_dir: Path) -> str:
    directory = make_directory(random.Random(7))
    rng = random.Random(3)
    parts = [f'[helpdesk]\ndatabase_url = "{database_url}"\ndata_dir = "{data_dir}"\n',
             '[[mailboxes]]\naddress = "sklep@jantar.pl"\n']
    for client in directory.clients:
        phones = ", ".join(f'"+48 {rng.randint(500, 799)} {rng.randint(100, 999)} '
                           f'{rng.randint(100, 999)}"' for _ in range(2))
        parts.append(f'[[clients]]\nname = "{client["name"]}"\ndomains = ["{client["domains"][0]}"]\n'
                     f'phones = [{phones}]\n')
    for person in directory.technicians:
        parts.append(f'[[technicians]]\nname = "{person["name"]}"\nemail = "{person["email"]}"\n'
                     f'tier = "{person["tier"]}"\nrole = "{person["role"]}"\n')
    parts.append("""[[pbx_sources]]
name = "orange"
kind = "csv"
path = "%s/drop/*.csv"
timezone = "Europe/Warsaw"
delimiter = ";"
encoding = "windows-1250"
[pbx_sources.columns]
call_id = "Id połączenia"
started_at = "Data i godzina"
caller = "Numer dzwoniącego"
callee = "Numer wybierany"
wait_seconds = "Czas oczekiwania"
talk_seconds = "Czas rozmowy"
outcome = "Status"
[pbx_sources.outcomes]
"Odebrane" = "answered"
"Nieodebrane" = "missed"
"Porzucone" = "abandoned"
""" % data_dir)
    return "\n".join(parts)


def file_position(process: psutil.Process, path: Path) -> int | None:
    """How far PROCESS has read PATH (its descriptor's pos in /proc), or None."""
    wanted = os.path.realpath(path)   # /proc shows the file a symlink points to
    try:
        for opened in process.open_files():
            if opened.path == wanted:
                with open(f"/proc/{process.pid}/fdinfo/{opened.fd}") as info:
                    for line in info:
                        if line.startswith("pos:"):
                            return int(line.split()[1])
    except (psutil.Error, OSError):
        return None
    return None


def run_import(csv_path: Path, database_url: str, label: str) -> dict:
    data_dir = WORK / f"data-{label}"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "helpdesk.toml"
    config_path.write_text(config_toml(database_url, data_dir), encoding="utf-8")
    helpdesk = [sys.executable, "-m", "daemon.cli", "--config", str(config_path)]
    subprocess.run([*helpdesk, "migrate"], check=True, capture_output=True, cwd=ROOT)
    size = csv_path.stat().st_size
    samples = []   # (seconds, rss bytes, share of the file read)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)   # (the migration already reaped)
    started = time.perf_counter()
    # Output to files, not pipes: a pipe nobody reads while the import runs fills up
    # (the callback check logs a line per ticket it opens) and stalls the import.
    out_path, err_path = data_dir / "import.json", data_dir / "import.log"
    with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
        process = subprocess.Popen([*helpdesk, "calls", "import", str(csv_path), "--format",
                                    "csv", "--source", "orange", "--json"], cwd=ROOT,
                                   stdout=out_file, stderr=err_file)
    watched = psutil.Process(process.pid)
    last_share = 0.0
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.Error:
            break
        if rss == 0:   # exited, not yet reaped
            break
        position = file_position(watched, csv_path)
        if position is not None:
            last_share = position / size
        samples.append((time.perf_counter() - started, rss, last_share))
        time.sleep(0.05)
    process.wait()
    seconds = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (used.ru_utime - children.ru_utime) + (used.ru_stime - children.ru_stime)
    load = os.getloadavg()
    out, err = out_path.read_text(), err_path.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"import failed ({process.returncode}): {err[-2000:]}")
    result = json.loads(out)
    peak = max(rss for _, rss, _ in samples)

    def rss_at(share: float) -> float | None:
        reached = [rss for _, rss, read in samples if read >= share]
        return round(reached[0] / 2**20, 1) if reached else None

    figure = {"rows": result["read"], "imported": result["imported"],
              "malformed": result["malformed"], "seconds": round(seconds, 1),
              "rows_per_second": round(result["read"] / seconds),
              "cpu_seconds": round(cpu, 1),
              "load_average": [round(x, 2) for x in load],
              "peak_rss_mb": round(peak / 2**20, 1),
              "rss_mb_at_read_share": {"10%": rss_at(0.10), "50%": rss_at(0.50),
                                       "90%": rss_at(0.90), "last_sample": round(samples[-1][1] / 2**20, 1)},
              "samples": len(samples), "met": seconds < TARGET_S}
    print(f"  {label:28} {result['read']:>9,} rows {seconds:6.1f} s  cpu {cpu:6.1f} s  "
          f"load {load[0]:.2f}  peak {figure['peak_rss_mb']} MB "
          f"{figure['rss_mb_at_read_share']}", file=sys.stderr)
    return figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--compare", type=int, default=250_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--label", default="call_import")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    files = {}
    for rows in (args.rows, args.compare):
        files[rows] = WORK / f"calls-{rows}.csv"
        t = time.perf_counter()
        make_csv(files[rows], rows)
        print(f"  {files[rows].name}: {files[rows].stat().st_size / 2**20:.0f} MB "
              f"({time.perf_counter() - t:.0f} s to make)", file=sys.stderr)
    runs = {}
    for backend in ("sqlite", "postgresql"):
        if args.backend not in (backend, "both"):
            continue
        if backend == "postgresql" and not pg_available():
            print("PostgreSQL not reachable: skipped", file=sys.stderr)
            continue
        for rows in (args.rows, args.compare):
            label = f"{backend}-{rows}"
            if backend == "sqlite":
                db = WORK / f"{label}.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                runs[label] = run_import(files[rows], f"sqlite:///{db}", label)
            else:
                with pg_store("calls") as store:
                    runs[label] = run_import(files[rows], store.url, label)
    write_result(args.label, {"target_seconds": TARGET_S, "csv": {
        str(rows): {"path": str(path.relative_to(ROOT)), "bytes": path.stat().st_size}
        for rows, path in files.items()}, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
