"""The SLA sweep: one sweep's time at 100,000 open tickets with 1% due, and how it scales.

One store per backend holds three groups of due tickets at different instants, so each
sweep (the daemon's own `sweep_sla`, at a chosen instant) finds exactly one group due:

    100,000 open tickets,  1,000 due in the next minute   (the target: under 1 s)
    100,000 open tickets,  4,000 due                      (4x the due tickets)
    400,000 open tickets,  1,000 due                      (4x all tickets, same due)

plus a sweep with nothing due. Each due ticket gets a first-response warning: the mail to
the assignee and the coordinator rendered and queued, an event, the next alarm set.

    python -m benchmarks.sla_sweep [--backend sqlite|postgresql|both] [--base 100000]
"""
from __future__ import annotations

import argparse
import random
import sys
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from benchmarks.scale_common import (NOW, ROOT, Stopwatch, pg_available, pg_store, sqlite_store,
                                     write_result)
from benchmarks.seed import (PostgresWriter, SqliteWriter, TicketMaker, make_directory)
from daemon import config as config_module
from daemon.clock import Clock
from daemon.rules.sla_sweep import sweep_sla
from daemon.store.models import OutboxMail, Ticket

TARGET_S = 1.0
COLUMNS = ("id", "number", "subject", "status", "tier", "priority", "client_id", "assignee_id",
           "requester_email", "requester_name", "channel", "mailbox", "language", "held",
           "message_count", "created_at", "updated_at", "contract", "sla_calendar",
           "first_response_due", "first_response_warn_at", "resolution_due",
           "resolution_warn_at", "sla_paused_seconds", "sla_alarm_at")


def naive(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


class OpenTickets:
    """Open, unanswered tickets whose next alarm (the first-response warning) is AT."""

    def __init__(self, directory, rng: random.Random):
        self.directory, self.rng, self.next_id = directory, rng, 1
        self.subjects = TicketMaker(rng, directory, 1, NOW).pools()[0]

    def rows(self, count: int, alarm_from: datetime, alarm_span: timedelta):
        rng, rows = self.rng, []
        l1 = [t for t in self.directory.technicians if t["tier"] == "L1"]
        for _ in range(count):
            ticket_id, self.next_id = self.next_id, self.next_id + 1
            alarm = naive(alarm_from) + alarm_span * rng.random()
            client = rng.randrange(len(self.directory.clients))
            email, name = rng.choice(self.directory.requesters[client])
            # warning at the alarm, breach 8 h later, resolution far off: one notice per sweep
            rows.append((ticket_id, f"JAN-{ticket_id}", rng.choice(self.subjects), "open", "L1",
                         "low", client + 1, rng.choice(l1)["id"], email, name, "email",
                         "sklep@jantar.pl", "pl", False, 1, alarm - timedelta(hours=6),
                         alarm - timedelta(hours=6), "standard", "l1",
                         alarm + timedelta(hours=8), alarm, alarm + timedelta(days=10),
                         alarm + timedelta(days=7), 0, alarm))
        return rows


def fill(store, maker: OpenTickets, groups) -> None:
    writer = SqliteWriter(store) if store.backend == "sqlite" else PostgresWriter(store)
    if maker.next_id == 1:
        writer.rows("clients", ("id", "name", "domains", "phones", "contract", "active"),
                    [(c["id"], c["name"], f'["{c["domains"][0]}"]', "[]", c["contract"], True)
                     for c in maker.directory.clients])
        writer.rows("technicians", ("id", "email", "name", "tier", "role", "active"),
                    [(t["id"], t["email"], t["name"], t["tier"], t["role"], True)
                     for t in maker.directory.technicians])
    for count, alarm_from, span in groups:
        for start in range(0, count, 20_000):
            writer.rows("tickets", COLUMNS, maker.rows(min(20_000, count - start), alarm_from, span))
            writer.checkpoint()
    writer.close()     # sequences past the ids written, ANALYZE


def one_sweep(config, store, at: datetime) -> dict:
    with store.transaction() as session:
        open_tickets = session.scalar(select(func.count()).select_from(Ticket)
                                      .where(Ticket.status == "open"))
        due = session.scalar(select(func.count()).select_from(Ticket)
                             .where(Ticket.sla_alarm_at <= at))
        outbox_before = session.scalar(select(func.count()).select_from(OutboxMail))
    with Stopwatch() as watch:
        sent = sweep_sla(config, store, Clock(start=at))
    with store.transaction() as session:
        queued = session.scalar(select(func.count()).select_from(OutboxMail)) - outbox_before
    figure = {"open_tickets": open_tickets, "due": due, "seconds": round(watch.seconds, 3),
              "ms_per_due_ticket": round(watch.ms / due, 3) if due else None,
              "notices": dict(sent), "mails_queued": queued}
    print(f"  {store.backend:10} open {open_tickets:>7,}  due {due:>5,}  "
          f"{watch.seconds:7.3f} s  {dict(sent)}", file=sys.stderr)
    return figure


def measure_backend(store, base: int) -> dict:
    directory = make_directory(random.Random(7))
    config = config_module.from_dict(directory.config_sections(
        store.url, str(ROOT / "var" / "bench" / "data")), env={})
    maker = OpenTickets(directory, random.Random(11))
    minute, far = timedelta(minutes=1), timedelta(days=20)
    due_a, due_b, due_c = NOW, NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    small, big = base // 100, base // 25
    later = NOW + timedelta(days=3)
    with Stopwatch() as watch:
        fill(store, maker, [(small, due_a, minute), (big, due_b, minute),
                            (base - small - big, later, far)])
    result = {"backend": store.backend, "fill_seconds": round(watch.seconds, 1), "sweeps": {}}
    sweeps = result["sweeps"]
    sweeps["nothing_due"] = one_sweep(config, store, NOW - timedelta(minutes=1))
    sweeps["base_1pct_due"] = one_sweep(config, store, due_a + minute)
    sweeps["base_4x_due"] = one_sweep(config, store, due_b + minute)
    fill(store, maker, [(small, due_c, minute), (3 * base - small, later, far)])
    sweeps["4x_total_same_due"] = one_sweep(config, store, due_c + minute)
    sweeps["4x_total_nothing_due"] = one_sweep(config, store, due_c + 2 * minute)
    a, b, c = sweeps["base_1pct_due"], sweeps["base_4x_due"], sweeps["4x_total_same_due"]
    result["ratios"] = {"4x_due_over_base": round(b["seconds"] / a["seconds"], 2),
                        "4x_total_over_base": round(c["seconds"] / a["seconds"], 2)}
    result["met"] = a["seconds"] < TARGET_S
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--base", type=int, default=100_000)
    parser.add_argument("--label", default="sla_sweep")
    args = parser.parse_args(argv)
    results = []
    if args.backend in ("sqlite", "both"):
        with sqlite_store(ROOT / "var" / "bench" / "sla-sqlite.db") as store:
            results.append(measure_backend(store, args.base))
    if args.backend in ("postgresql", "both"):
        if pg_available():
            with pg_store("sla") as store:
                results.append(measure_backend(store, args.base))
        else:
            print("PostgreSQL not reachable: skipped", file=sys.stderr)
    write_result(args.label, {"target_seconds": TARGET_S, "backends": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
