"""Ingest throughput: `helpdesk ingest` end to end vs the bare mail-parser parse vs Roundup.

    python -m benchmarks.ingest [--count 5000] [--roundup-count 500] [--no-roundup]

1. Generates the mbox (benchmarks.generate_mbox, seeded) and its `[issueN]` twin.
2. Ours: a fresh SQLite store in a temp dir, migrated (`helpdesk migrate`, not timed),
   clients owning the generated domains, outgoing mail queued (the sender job does not
   run). Times one `helpdesk ingest MBOX` process end to end (read the mbox, save every
   raw mail, parse, classify, thread, route, store, queue the acknowledgement and the
   coordinator notice) and its peak RSS. Then checks the result: one ticket per new
   problem, every reply on the ticket the generator predicted, one ack per ticket.
3. Ceiling: `mailparser.parse_from_bytes` over the same mails, in this process. Floors,
   the least any end-to-end ingest of these mails costs on this machine: the standard
   library's MIME tree alone (mail-parser's own base), our parse step alone
   (`daemon.parse.parse_mail`), and the durable save alone (`helpdesk ingest --no-process`).
4. Roundup: its own venv (~/.cache/jantar-bench/roundup-venv, `pip install roundup`),
   `roundup-admin install classic sqlite`, anonymous email access (the gateway creates
   a user per unknown sender), outgoing mail to a debug file, `roundup-mailgw` over
   the first N mails of the `[issueN]` mbox (N=500 by default: Roundup's rate makes
   5,000 take half an hour here).

Writes benchmarks/results/ingest.json and prints a table row.
"""
from __future__ import annotations

import argparse
import json
import mailbox
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import helpdesk, machine, save_result, timed, write_config
from benchmarks.generate_mbox import write_mbox

ROUNDUP_VENV = Path(os.environ.get("ROUNDUP_VENV",
                                   Path.home() / ".cache" / "jantar-bench" / "roundup-venv"))


def read_mails(path: Path) -> list[bytes]:
    box = mailbox.mbox(str(path), factory=None, create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


# -- ours ------------------------------------------------------------------------------------
def fresh_store(folder: Path) -> tuple[Path, Path]:
    """A migrated SQLite store in FOLDER (not timed): its database and config paths."""
    database = folder / "helpdesk.db"
    config = write_config(folder, f"sqlite:///{database}")
    if timed(helpdesk(config, "migrate"))[1] != 0:
        raise SystemExit("helpdesk migrate failed")
    return database, config


def rates(mails: int, seconds: float, cpu: float) -> dict:
    return {"mails": mails, "seconds": round(seconds, 2),
            "mails_per_s": round(mails / seconds, 1), "cpu_seconds": round(cpu, 2),
            "mails_per_cpu_s": round(mails / cpu, 1)}


def run_ours(folder: Path, mbox: Path, facts: list[dict]) -> dict:
    database, config = fresh_store(folder)
    log = folder / "ingest.log"
    with open(log, "wb") as stderr:
        process = helpdesk(config, "ingest", str(mbox), "--mailbox", "sklep@jantar.pl", "--json",
                           stderr=stderr)
        seconds, code, rss, cpu = timed(process)
    if code != 0:
        raise SystemExit(f"helpdesk ingest failed ({code}); see {log}:\n"
                         + log.read_text(errors="replace")[-3000:])
    summary = json.loads(process.stdout.read())
    result = {**rates(len(facts), seconds, cpu), "peak_rss_mb": round(rss, 1),
              "summary": summary, "checks": check_store(database, facts)}
    return result


def check_store(database: Path, facts: list[dict]) -> dict:
    """The generator's predictions hold: tickets, replies on their tickets, one ack each."""
    db = sqlite3.connect(database)
    tickets = db.execute("select count(*) from tickets").fetchone()[0]
    on = dict(db.execute("select m.message_id, t.number from messages m "
                         "join tickets t on t.id = m.ticket_id where m.direction = 'in'"))
    wrong = [f["message_id"] for f in facts if on.get(f["message_id"]) != f"JNT-{f['ticket']}"]
    outbox = dict(db.execute("select kind, count(*) from outbox group by kind").fetchall())
    # One ack and one coordinator notice per ticket; a forward per reply (its own Message-ID).
    twice = db.execute("select count(*) from (select ticket_id, kind from outbox "
                       "where kind in ('ack', 'coordinator_new') "
                       "group by ticket_id, kind having count(*) > 1)").fetchone()[0]
    twice += db.execute("select count(*) - count(distinct message_id) from outbox").fetchone()[0]
    statuses = dict(db.execute("select status, count(*) from raw_messages group by status"))
    db.close()
    new = sum(f["new"] for f in facts)
    checks = {"tickets": tickets, "expected_tickets": new, "misfiled": len(wrong),
              "outbox": outbox, "outbox_twice_per_ticket_kind": twice, "raw": statuses}
    problems = []
    if tickets != new or wrong or twice or outbox.get("ack") != new:
        problems.append(f"unexpected store contents: {checks}; misfiled e.g. {wrong[:3]}")
    checks["ok"] = not problems
    if problems:
        print("WARNING:", *problems, file=sys.stderr)
    return checks


# -- the ceiling and the floors -------------------------------------------------------------
def timed_parse(parse_one, mails: list[bytes]) -> dict:
    """PARSE_ONE over every mail in this process: wall and CPU time."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for raw in mails:
        parse_one(raw)
    return rates(len(mails), time.perf_counter() - start, time.process_time() - cpu_start)


def run_mailparser(mails: list[bytes]) -> dict:
    """The ceiling the issue names: a full mail-parser object per mail."""
    import mailparser
    return timed_parse(mailparser.parse_from_bytes, mails)


def run_stdlib_tree(mails: list[bytes]) -> dict:
    """A floor: the standard library's MIME tree alone, no part decoded, no header read.
    mail-parser is built on this parser; no parse of these mails on this stack costs less."""
    from email.feedparser import BytesFeedParser
    from email.policy import compat32

    def tree(raw: bytes):
        parser = BytesFeedParser(policy=compat32)
        parser.feed(raw)
        return parser.close()
    return timed_parse(tree, mails)


def run_our_parse(mails: list[bytes]) -> dict:
    """Our pipeline's parse step alone (daemon.parse.parse_mail): headers, text, safe HTML,
    attachments."""
    from daemon.parse import parse_mail
    return timed_parse(parse_mail, mails)


def run_save_only(folder: Path, mbox: Path, facts: list[dict]) -> dict:
    """A floor: `helpdesk ingest --no-process`, every raw mail saved in its own commit (the
    durability point) and nothing else."""
    _database, config = fresh_store(folder)
    process = helpdesk(config, "ingest", str(mbox), "--mailbox", "sklep@jantar.pl",
                       "--no-process", "--json", stderr=subprocess.DEVNULL)
    seconds, code, rss, cpu = timed(process)
    if code != 0:
        raise SystemExit(f"helpdesk ingest --no-process failed ({code})")
    return {**rates(len(facts), seconds, cpu), "peak_rss_mb": round(rss, 1)}


# -- Roundup ---------------------------------------------------------------------------------
def roundup_venv() -> Path:
    bin_dir = ROUNDUP_VENV / "bin"
    if not (bin_dir / "roundup-mailgw").exists():
        subprocess.run([sys.executable, "-m", "venv", str(ROUNDUP_VENV)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", "roundup"], check=True)
    return bin_dir


def roundup_tracker(bin_dir: Path, home: Path) -> None:
    subprocess.run([str(bin_dir / "roundup-admin"), "-i", str(home), "install", "classic",
                    "sqlite"], check=True, stdout=subprocess.DEVNULL)
    schema = home / "schema.py"
    # Unknown senders: the gateway registers them (the classic template's own switch).
    schema.write_text(schema.read_text().replace(
        "#db.security.addPermissionToRole('Anonymous', 'Email Access')",
        "db.security.addPermissionToRole('Anonymous', 'Email Access')"))
    config = home / "config.ini"
    text = config.read_text()
    text = text.replace("#domain = NO DEFAULT", "domain = jantar.pl", 1)
    text = text.replace("#host = NO DEFAULT", "host = localhost", 1)
    # [mail] debug: outgoing mail (nosy messages) goes to a file, not to an SMTP server.
    head, mail, rest = text.partition("\n[mail]\n")
    mail_section, mailgw, tail = rest.partition("\n[mailgw]\n")
    mail_section = re.sub(r"(?m)^debug = *$", f"debug = {home / 'sent.txt'}", mail_section)
    config.write_text(head + mail + mail_section + mailgw + tail)
    subprocess.run([str(bin_dir / "roundup-admin"), "-i", str(home), "initialise", "secret"],
                   input=b"y\n", check=True, stdout=subprocess.DEVNULL)


def run_roundup(folder: Path, mbox: Path, facts: list[dict]) -> dict:
    bin_dir = roundup_venv()
    home = folder / "tracker"
    roundup_tracker(bin_dir, home)
    version = subprocess.run([str(bin_dir / "python"), "-c",
                              "import roundup; print(roundup.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    with open(folder / "roundup.log", "wb") as log:
        process = subprocess.Popen([str(bin_dir / "roundup-mailgw"), str(home), "mailbox",
                                    str(mbox)], stdout=log, stderr=log)
        seconds, code, rss, cpu = timed(process)
    issues = subprocess.run([str(bin_dir / "roundup-admin"), "-i", str(home), "list", "issue"],
                            capture_output=True, text=True).stdout.count("\n")
    messages = subprocess.run([str(bin_dir / "roundup-admin"), "-i", str(home), "list", "msg"],
                              capture_output=True, text=True).stdout.count("\n")
    return {"version": version, "mails": len(facts), "seconds": round(seconds, 2),
            "mails_per_s": round(len(facts) / seconds, 2), "peak_rss_mb": round(rss, 1),
            "cpu_seconds": round(cpu, 2), "exit_code": code, "issues": issues, "expected_issues": sum(f["new"] for f in facts),
            "messages": messages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--roundup-count", type=int, default=500)
    parser.add_argument("--no-roundup", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="jantar-ingest-"))
    mbox = folder / "mail.mbox"
    facts = write_mbox(mbox, count=args.count)
    result = {"machine": machine(), "mbox_mb": round(mbox.stat().st_size / 1e6, 1)}
    # Every subprocess runs before this process reads the mails into memory: a child's
    # peak RSS (ru_maxrss) starts from what it shared with its parent at the fork.
    (folder / "ours").mkdir()
    result["ours"] = run_ours(folder / "ours", mbox, facts)
    (folder / "save-only").mkdir()
    result["floors"] = {"save_only": run_save_only(folder / "save-only", mbox, facts)}
    if not args.no_roundup:
        roundup_mbox = folder / "roundup.mbox"
        roundup_facts = write_mbox(roundup_mbox, count=min(args.roundup_count, args.count),
                                   roundup=True)
        result["roundup"] = run_roundup(folder, roundup_mbox, roundup_facts)
        result["roundup_ratio"] = round(result["ours"]["mails_per_s"]
                                        / result["roundup"]["mails_per_s"], 1)
        roundup_per_cpu_s = result["roundup"]["mails"] / result["roundup"]["cpu_seconds"]
        result["roundup"]["mails_per_cpu_s"] = round(roundup_per_cpu_s, 2)
        result["roundup_ratio_cpu"] = round(result["ours"]["mails_per_cpu_s"]
                                            / roundup_per_cpu_s, 1)
    mails = read_mails(mbox)
    result["mailparser"] = run_mailparser(mails)
    result["floors"].update(stdlib_mime_tree=run_stdlib_tree(mails),
                            our_parse=run_our_parse(mails))
    del mails
    result["ceiling_ratio"] = round(result["ours"]["mails_per_s"]
                                    / result["mailparser"]["mails_per_s"], 3)
    # CPU seconds: less disturbed by other work on a shared machine than wall time.
    result["ceiling_ratio_cpu"] = round(result["ours"]["mails_per_cpu_s"]
                                        / result["mailparser"]["mails_per_cpu_s"], 3)
    path = save_result("ingest", result)
    ours, ceiling = result["ours"], result["mailparser"]
    print("| figure | ours mails/s | peak RSS MB | mail-parser mails/s | ours/ceiling "
          "| Roundup mails/s (N) | ours/Roundup |")
    print(f"| ingest {args.count} mails | {ours['mails_per_s']} | {ours['peak_rss_mb']} "
          f"| {ceiling['mails_per_s']} | {result['ceiling_ratio']} | "
          + (f"{result['roundup']['mails_per_s']} ({result['roundup']['mails']}) | "
             f"{result['roundup_ratio']}x |" if "roundup" in result else "- | - |"))
    print("floors (mails per CPU-second): " + ", ".join(
        f"{name} {floor['mails_per_cpu_s']}" for name, floor in result["floors"].items()))
    print(f"checks: {ours['checks']}")
    print(f"written to {path}" + (f"; temp dir {folder}" if args.keep else ""))
    if not args.keep:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
