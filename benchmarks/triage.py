"""The triage list at 1,000,000 tickets: p50/p95 per request over the real HTTP path, both backends.

A seeded store (benchmarks.seed), the Flask app of `helpdesk web` (create_app) with a
coordinator signed in through /login, and four requests timed end to end through the
test client: the first page, a filtered page (tier + client + status), the page after
50 pages of keyset paging, and a text search. For each, the SQL the request ran is
captured with its own time and plan (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE), from one
more request that reads the counts and menus (the app reuses them for HEADER_MAX_AGE
seconds; "requests_reading_counts" says how many timed requests did read them).

    python -m benchmarks.triage [--tickets 1000000] [--repeat 30] [--backend sqlite|postgresql|both]
                                [--reuse]   # keep var/bench/triage-sqlite.db and the PostgreSQL
                                            # schema bench_triage_kept between runs
                                [--header-max-age 0]   # counts read on every request
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from html import unescape
from pathlib import Path

from sqlalchemy import event, select, text, update

from benchmarks.scale_common import (NOW, ROOT, Stopwatch, pg_available, pg_store, sqlite_store,
                                     timing, write_result)
from benchmarks.seed import COORDINATOR, make_directory, seed
from daemon import config as config_module
from daemon.clock import Clock
from daemon.store.models import Client, Message, Ticket
from webform import create_app
from webform.accounts import hash_password
from webform.triage import HEADER_MAX_AGE

PASSWORD = "benchmark-haslo-2026"
PAGES = 50
TARGET_MS = 50
SQLITE_PATH = ROOT / "var" / "bench" / "triage-sqlite.db"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
NEXT_RE = re.compile(r'<a rel="next" href="([^"]+)"')
ROW_RE = re.compile(r'id="row-(JAN-\d+)"')


def sign_in(client) -> None:
    page = client.get("/login")
    token = CSRF_RE.search(page.text).group(1)
    response = client.post("/login", data={"email": COORDINATOR, "password": PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 302, response.text[:500]


def scenario_urls(client, store) -> dict[str, str]:
    """The four requests; the paged one is found by following `next` links 50 times."""
    with store.transaction() as session:
        # The busiest client, and a serial number written in some tickets' first message.
        client_name = session.scalar(
            select(Client.name).join(Ticket, Ticket.client_id == Client.id)
            .where(Ticket.status == "open", Ticket.tier == "L2")
            .group_by(Client.name).order_by(text("count(*) DESC")).limit(1))
        body = session.scalar(select(Message.text).where(Message.id == 999_983)) or \
            session.scalar(select(Message.text).order_by(Message.id.desc()).limit(1))
    serial = re.search(r"PL\d{8}", body)
    term = serial.group(0) if serial else "zasilacz"
    url = "/tickets"
    for _ in range(PAGES):
        found = NEXT_RE.search(client.get(url).text)
        if found is None:       # a small store has fewer pages
            break
        url = unescape(found.group(1))
    from urllib.parse import quote
    return {"first_page": "/tickets",
            "filtered": f"/tickets?tier=L2&client={quote(client_name)}&status=open",
            "page_51": url,
            "search": f"/tickets?q={quote(term)}"}


class StatementLog:
    """The SQL one request runs, with each statement's own time."""

    def __init__(self, engine):
        self.engine, self.statements, self.active = engine, [], False
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)

    def before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = time.perf_counter()

    def after(self, conn, cursor, statement, parameters, context, executemany):
        if self.active:
            took = (time.perf_counter() - conn.info.pop("bench_started")) * 1000
            self.statements.append({"sql": statement, "params": parameters, "ms": round(took, 2)})


def explain(store, statement: str, params) -> list[str]:
    if statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT")):
        return []
    with store.engine.connect() as connection:
        raw = connection.connection.driver_connection
        cursor = raw.cursor()
        try:
            if store.backend == "sqlite":
                cursor.execute(f"EXPLAIN QUERY PLAN {statement}", params)
                return [row[3] for row in cursor.fetchall()]
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params)
            return [row[0] for row in cursor.fetchall()]
        finally:
            cursor.close()
            connection.rollback()


def measure_backend(store, tickets: int, repeat: int, seed_needed: bool,
                    header_max_age: float | None = None) -> dict:
    result: dict = {"backend": store.backend, "tickets": tickets}
    load_before = os.getloadavg()
    password_hash = hash_password(PASSWORD)
    if seed_needed:
        with Stopwatch() as clock:
            seed(store, tickets, password_hash=password_hash,
                 progress=lambda done, s: print(f"\r  seeded {done:,} in {s:.0f} s", end="",
                                                file=sys.stderr, flush=True))
        print(file=sys.stderr)
        result["seed_seconds"] = round(clock.seconds, 1)
    with store.transaction() as session:
        session.execute(update(Ticket.metadata.tables["technicians"])
                        .where(text("email = :e")).values(password_hash=password_hash),
                        {"e": COORDINATOR})
        result["tickets_in_store"] = session.scalar(select(text("count(*)")).select_from(Ticket))
        result["active_tickets"] = session.scalar(select(text("count(*)")).select_from(Ticket)
                                                  .where(Ticket.status.in_(("new", "open",
                                                                            "waiting"))))
    directory = make_directory(__import__("random").Random(7))
    config = config_module.from_dict(directory.config_sections(
        store.url, str(ROOT / "var" / "bench" / "data")), env={})
    app = create_app(config, store=store, clock=Clock(start=NOW), testing=True)
    if header_max_age is not None:      # 0: the counts and menus read on every request
        app.config["TRIAGE_HEADER_MAX_AGE"] = header_max_age
    result["header_max_age_s"] = app.config.get("TRIAGE_HEADER_MAX_AGE", HEADER_MAX_AGE)
    client = app.test_client()
    sign_in(client)
    urls = scenario_urls(client, store)
    result["urls"] = urls
    log = StatementLog(store.engine)
    figures = {}
    for name, url in urls.items():
        for _ in range(3):                      # warm the caches and the statement cache
            assert client.get(url).status_code == 200
        samples, header_reads = [], 0
        for _ in range(repeat):
            header = app.extensions.get("triage_header", {}).get("counts")
            with Stopwatch() as watch:
                response = client.get(url)
            assert response.status_code == 200, response.status_code
            samples.append(watch.ms)
            header_reads += app.extensions.get("triage_header", {}).get("counts") is not header
        log.statements, log.active = [], True
        app.extensions.pop("triage_header", None)   # so that the log has the counts' plans
        response = client.get(url)
        log.active = False
        figures[name] = {**timing(samples), "rows": len(ROW_RE.findall(response.text)),
                         "requests_reading_counts": header_reads,
                         "met": timing(samples)["p95_ms"] < TARGET_MS,
                         "sql": [{**s, "plan": explain(store, s["sql"], s["params"])}
                                 for s in log.statements if s["ms"] >= 1]}
        print(f"  {store.backend:10} {name:11} p50 {figures[name]['p50_ms']:8.1f} ms  "
              f"p95 {figures[name]['p95_ms']:8.1f} ms  rows {figures[name]['rows']}  "
              f"counts read by {header_reads} of {repeat}", file=sys.stderr)
        for s in figures[name]["sql"]:
            print(f"      {s['ms']:8.1f} ms  {s['sql'][:110]!r}", file=sys.stderr)
    result["requests"] = figures
    # Other benchmarks share this machine's two cores: the load says how far to trust p95.
    result["load_average_1_5_15"] = {"before": [round(x, 2) for x in load_before],
                                     "after": [round(x, 2) for x in os.getloadavg()]}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--reuse", action="store_true",
                        help="use the SQLite file (--sqlite) and the PostgreSQL schema "
                             "bench_triage_kept if they are already seeded (and keep them)")
    parser.add_argument("--sqlite", type=Path, default=SQLITE_PATH, help="the SQLite file")
    parser.add_argument("--label", default="triage", help="name of the result file")
    parser.add_argument("--header-max-age", type=float, default=None,
                        help="seconds the counts and menus are reused (default: the app's "
                             "HEADER_MAX_AGE; 0 reads them on every request)")
    args = parser.parse_args(argv)
    results = []
    if args.backend in ("sqlite", "both"):
        reuse = args.reuse and args.sqlite.exists()
        with sqlite_store(args.sqlite, fresh=not reuse) as store:
            results.append(measure_backend(store, args.tickets, args.repeat, not reuse,
                                          args.header_max_age))
    if args.backend in ("postgresql", "both"):
        if pg_available():
            with pg_store("triage", keep=args.reuse) as store:
                with store.engine.connect() as connection:
                    seeded = connection.scalar(text("SELECT count(*) FROM tickets")) > 0
                results.append(measure_backend(store, args.tickets, args.repeat, not seeded,
                                              args.header_max_age))
        else:
            print("PostgreSQL not reachable: skipped", file=sys.stderr)
    write_result(args.label, {"target_p95_ms": TARGET_MS, "repeat": args.repeat,
                              "backends": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
