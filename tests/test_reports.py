"""`helpdesk report` and daemon.reports on a small hand-made week, on both backends.

The week of 16-22 November 2026 on the built-in "l1" calendar (Mon-Fri 08:00-16:00,
Warsaw, UTC+1 then). Every expected number below is worked out by hand in the comments.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from daemon.cli import main
from daemon.directory import sync_directory
from daemon.reports import percentile, report
from daemon.store.models import Client, Event, Technician, Ticket
from tests.conftest import NOW

WARSAW = ZoneInfo("Europe/Warsaw")
HOUR = 3600
FIRST, LAST = date(2026, 11, 16), date(2026, 11, 22)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=WARSAW)


# number: (client, tier, channel, assignee, created, first reply, resolved, resolved tier,
#          first response due, resolution due, pauses, rating, rated)
WEEK = {
    # 1 h to the first reply, 3 h to resolve; both clocks met; L1; rated 5.
    "T1": ("Sieć Bursztyn", "L1", "email", "anna", at(16, 9), at(16, 10), at(16, 12), "L1",
           at(16, 13), at(18, 9), [], 5, at(16, 13)),
    # 15:00 Mon -> 09:00 Tue is 2 business hours; resolved 12:00 Tue: 5 h less a 1 h pause.
    "T2": ("Sieć Bursztyn", "L1", "web", "anna", at(16, 15), at(17, 9), at(17, 12), "L1",
           at(17, 11), at(18, 15), [(at(17, 10), at(17, 11))], 4, at(17, 13)),
    # Escalated L1 -> L2 -> L1 and resolved at L1: not an L1 resolution. First reply
    # exactly at its due time (met); resolved 2 h after its due time (breached); 16 h.
    "T3": ("Market Kaszub", "L1", "email", "piotr", at(17, 8), at(17, 12), at(18, 16), "L1",
           at(17, 12), at(18, 14), [], 2, at(18, 17)),
    # First reply 8 h in, due after 1 h (breached); resolved at L2 after 12 h (met).
    "T4": ("Sieć Bursztyn", "L2", "email", "piotr", at(18, 8), at(18, 16), at(19, 12), "L2",
           at(18, 9), at(20, 16), [], None, None),
    # Open, never answered: its first response due time passed in the week (breached).
    "T5": ("Market Kaszub", "L1", "phone", None, at(19, 10), None, None, None,
           at(19, 11), at(30, 10), [], None, None),
    # Opened the week before and still open: backlog; resolution due passed in the week.
    "T6": ("Sieć Bursztyn", "L1", "email", "anna", at(13, 10), at(13, 11), None, None,
           at(13, 12), at(16, 10), [], None, None),
    # Opened and resolved the week before: counts nowhere (its rating is outside too).
    "T7": ("Sieć Bursztyn", "L1", "email", "anna", at(12, 10), at(12, 11), at(13, 10), "L1",
           at(12, 14), at(16, 9), [], 3, at(14, 9)),
    # Opened on Saturday, resolved after the week: opened and backlog, nothing else.
    "T8": ("Market Kaszub", "L1", "email", None, at(21, 10), None, at(23, 10), "L1",
           at(23, 12), at(25, 8), [], None, None),
}
EMAILS = {"anna": "anna.kowalska@jantar.pl", "piotr": "piotr.nowak@jantar.pl"}


def make_week(store, config) -> None:
    with store.transaction() as session:
        sync_directory(session, config)
        clients = {c.name: c for c in session.scalars(select(Client))}
        people = {t.email: t for t in session.scalars(select(Technician))}
        for number, (client, tier, channel, who, created, first, resolved, resolved_tier,
                     first_due, resolution_due, pauses, rating, rated) in WEEK.items():
            ticket = Ticket(
                number=number, subject=number, tier=tier, channel=channel,
                status="resolved" if resolved else "open", client=clients[client],
                assignee=people[EMAILS[who]] if who else None, requester_email="j@bursztyn.pl",
                created_at=created, updated_at=created, first_responded_at=first,
                resolved_at=resolved, resolved_tier=resolved_tier, contract="standard",
                sla_calendar="l1", first_response_due=first_due, resolution_due=resolution_due,
                sla_pauses=[[s.isoformat(), e.isoformat()] for s, e in pauses] or None,
                rating=rating, rated_at=rated)
            session.add(ticket)
            if number == "T3":
                session.add(Event(ticket=ticket, at=at(17, 9), action="tier_changed",
                                  detail={"previous": "L1", "tier": "L2"}))
                session.add(Event(ticket=ticket, at=at(18, 9), action="tier_changed",
                                  detail={"previous": "L2", "tier": "L1"}))


@pytest.fixture
def week(config, store):
    make_week(store, config)
    return config


def week_report(store, config) -> dict:
    with store.transaction() as session:
        return report(session, config, FIRST, LAST, NOW)


def by(result: dict, dimension: str, group) -> dict:
    return next(e for e in result[f"by_{dimension}"] if e[dimension] == group)


def test_percentile_interpolates_between_ranks():
    assert percentile([], 0.9) is None
    assert percentile([7], 0.9) == 7
    assert percentile(list(range(1, 11)), 0.9) == pytest.approx(9.1)


def test_totals_of_the_week(week, store):
    totals = week_report(store, week)["totals"]
    assert (totals["opened"], totals["resolved"], totals["backlog"]) == (6, 4, 3)
    # first replies of T1-T4: 1, 2, 4, 8 h -> median 3 h, p90 4 + 0.7 * 4 = 6.8 h
    assert totals["time_to_first_response"] == {"count": 4, "median_seconds": 3 * HOUR,
                                                "p90_seconds": 6.8 * HOUR}
    # resolutions of T1-T4: 3, 4 (5 less the pause), 16, 12 h -> median 8 h, p90 14.8 h
    assert totals["time_to_resolution"] == {"count": 4, "median_seconds": 8 * HOUR,
                                            "p90_seconds": 14.8 * HOUR}
    # first response: T1, T2, T3 met; T4 late, T5 never answered -> 3 / 5
    assert totals["sla"]["first_response"] == {"met": 3, "breached": 2, "share": 0.6}
    # resolution: T1, T2, T4 met; T3 late, T6 overdue and open -> 3 / 5
    assert totals["sla"]["resolution"] == {"met": 3, "breached": 2, "share": 0.6}
    # T1, T2 at L1; T3 was escalated, T4 solved at L2 -> 2 / 4, against the 60% target
    assert totals["l1"] == {"resolved_at_l1": 2, "resolved": 4, "rate": 0.5, "target": 0.6}


def test_breakdowns(week, store):
    result = week_report(store, week)
    bursztyn = by(result, "client", "Sieć Bursztyn")
    assert (bursztyn["opened"], bursztyn["resolved"], bursztyn["backlog"]) == (3, 3, 1)
    # 1, 2, 8 h -> median 2 h, p90 2 + 0.8 * 6 = 6.8 h
    assert bursztyn["time_to_first_response"]["median_seconds"] == 2 * HOUR
    assert bursztyn["time_to_first_response"]["p90_seconds"] == 6.8 * HOUR
    assert bursztyn["l1"]["rate"] == pytest.approx(0.6667)
    kaszub = by(result, "client", "Market Kaszub")
    assert (kaszub["opened"], kaszub["resolved"], kaszub["backlog"], kaszub["l1"]["rate"]) == (
        3, 1, 2, 0.0)
    assert by(result, "technician", "anna.kowalska@jantar.pl")["l1"]["rate"] == 1.0
    assert by(result, "technician", None)["backlog"] == 2          # T5, T8: nobody's yet
    assert by(result, "channel", "phone")["sla"]["first_response"] == {
        "met": 0, "breached": 1, "share": 0.0}
    assert by(result, "tier", "L2")["time_to_resolution"]["median_seconds"] == 12 * HOUR


def test_ratings_of_the_week(week, store):
    ratings = week_report(store, week)["ratings"]
    assert ratings["totals"] == {"count": 3, "average": 3.67,
                                 "distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}}
    assert ratings["by_technician"][0] == {
        "technician": "anna.kowalska@jantar.pl", "count": 2, "average": 4.5,
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}}
    assert [(m["month"], m["count"]) for m in ratings["by_month"]] == [("2026-11", 3)]
    assert {r["client"]: r["average"] for r in ratings["by_client"]} == {
        "Market Kaszub": 2.0, "Sieć Bursztyn": 4.5}


def test_cli_report_json_and_csv(config_file, store, make_config, db_url, capsys):
    path = config_file()
    make_week(store, make_config(db_url))
    assert main(["--config", str(path), "migrate"]) == 0
    capsys.readouterr()
    args = ["--config", str(path), "--now", NOW.isoformat(), "report", "--from", "2026-11-16",
            "--to", "2026-11-22"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["totals"]["l1"]["rate"] == 0.5
    assert result["totals"]["time_to_resolution"]["p90_seconds"] == 14.8 * HOUR
    assert main([*args, "--csv"]) == 0  # [helpdesk] language = "pl": a Polish spreadsheet's
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out), delimiter=";"))
    total = rows[0]
    assert (total["przekrój"], total["przyjęte"], total["SLA pierwszej odpowiedzi dotrzymane (%)"],
            total["rozwiązane na L1 (%)"], total["średnia ocena"]) == ("razem", "6", "60", "50",
                                                                      "3,67")
    assert {(r["przekrój"], r["grupa"]) for r in rows} >= {
        ("klient", "Sieć Bursztyn"), ("poziom", "L2"), ("kanał", "formularz"),
        ("technik", "piotr.nowak@jantar.pl"), ("miesiąc", "listopad 2026")}
    assert main(args) == 0
    assert "Razem" in capsys.readouterr().out
    assert main([*args[:-4], "--from", "2026-11-22", "--to", "2026-11-16"]) == 1
