"""What the ingest and multi-process benchmarks share: the configuration, running a command
with its peak RSS, and machine facts."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.generate_mbox import MAILBOX, PREFIX, client_domains, write_mbox

RESULTS = Path(__file__).resolve().parent / "results"


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_config(folder: Path, database_url: str, *, extra: str = "") -> Path:
    """A helpdesk.toml whose clients own the generator's domains, so routing and acks run.

    Outgoing mail is only queued (the sender job does not run in `helpdesk ingest`); the
    transport is a maildir in case it ever does. The per-address limit on automatic mail
    is raised: the generated mail comes at machine speed, and every new problem must be
    acknowledged, as it would be when the same mail arrives over a working day. So is
    the flood limit per address, for the same reason (some senders open over twenty of
    the 5,000 mails' tickets, which span two days); it stays on, so that its count, one
    query per new ticket, is measured.
    """
    clients = "\n".join(
        f"[[clients]]\nname = {_toml_string('Sieć ' + d.split('-')[0].title())}\n"
        f"domains = [{_toml_string(d)}]\ncontract = \"standard\"\n"
        for d in client_domains())
    text = f"""
[helpdesk]
database_url = {_toml_string(database_url)}
ticket_prefix = "{PREFIX}"
timezone = "Europe/Warsaw"
language = "pl"
web_url = "http://helpdesk.test"
data_dir = {_toml_string(str(folder / "var"))}

[smtp_server]
enabled = false

[web]
enabled = false

[tickets]
flood_per_address = 1000000

[outbound]
transport = "maildir"
maildir = {_toml_string(str(folder / "sent"))}
auto_reply_limit_per_hour = 1000000

[[mailboxes]]
address = "{MAILBOX}"

[[mailboxes]]
address = "serwis@jantar.pl"

{clients}
[[technicians]]
name = "Anna Kowalska"
email = "anna.kowalska@jantar.pl"
tier = "L1"
role = "technician"

[[technicians]]
name = "Ewa Zielińska"
email = "koordynator@jantar.pl"
tier = "L2"
role = "coordinator"
{extra}
"""
    path = folder / "helpdesk.toml"
    path.write_text(text, encoding="utf-8")
    return path


def helpdesk(config: Path, *args: str, stdout=subprocess.PIPE, stderr=None,
             env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), *args],
                            stdout=stdout, stderr=stderr, env=env)


def timed(process: subprocess.Popen) -> tuple[float, int, float, float]:
    """Wait for PROCESS; returns (seconds, return code, its peak RSS in MB, its CPU seconds).

    CPU seconds (user + system) are less noisy than wall time on a shared machine.
    """
    start = time.perf_counter()
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, process.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def saved_store(folder: Path, count: int) -> tuple[Path, Path, tuple[float, int, float, float]]:
    """The generated mbox of COUNT mails saved into a migrated SQLite store in FOLDER,
    nothing processed (`helpdesk ingest --no-process`): its database, its config, and
    `timed` of the save (the migration is not timed)."""
    database = folder / "saved.db"
    config = write_config(folder, f"sqlite:///{database}")
    mbox = folder / "mail.mbox"
    write_mbox(mbox, count=count)
    if timed(helpdesk(config, "migrate", stderr=subprocess.DEVNULL))[1] != 0:
        raise SystemExit("helpdesk migrate failed")
    save = timed(helpdesk(config, "ingest", str(mbox), "--mailbox", MAILBOX, "--no-process",
                          stderr=subprocess.DEVNULL))
    if save[1] != 0:
        raise SystemExit("helpdesk ingest --no-process failed")
    return database, config, save


def machine() -> dict:
    import sqlite3
    info = {"nproc": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in handle
                               if line.startswith("model name"))
        with open("/proc/meminfo") as handle:
            info["ram_gb"] = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version
    for package in ("mail-parser", "SQLAlchemy", "psycopg", "jinja2"):
        info[package] = version(package)
    return info


def save_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path
