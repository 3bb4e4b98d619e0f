"""Service figures for a period of local days: volume, speed, SLA compliance, L1 rate, ratings.

Definitions (period = local days FIRST..LAST inclusive on the helpdesk's time zone, as
instants [start, end); `cutoff` = the earlier of end and now):

- opened: tickets created in the period; resolved: tickets whose resolved_at falls in it;
  backlog: tickets open at the period's end (created before it, not resolved by then).
- time to first response: business time from arrival to the first technician reply (or
  resolve, which stops that clock too), over tickets whose first clock stopped in the
  period; time to resolution: business time from arrival to resolve less the paused
  stretches (#wait, reopened), over tickets resolved in the period. Both on each ticket's
  own `sla_calendar`. Median, and 90th percentile by linear interpolation between ranks
  (numpy's default): the p90 of 1..10 h is 9.1 h.
- SLA compliance per clock: each clock counts once, in the period it was decided in:
  met when it stopped in the period on or before its due time; breached when its due time
  fell in [start, cutoff) and it had not stopped by then. share = met / (met + breached).
- L1 resolution rate: tickets resolved in the period at L1 (`resolved_tier` L1) that never
  left L1 (no `tier_changed` event from L1), over tickets resolved in the period; the
  target is 60%.
- ratings: tickets rated in the period (their latest score): count, average, 1-5 counts.
- imported history (`tickets.imported`: `ingest --archive`, a mailbox's old mail) counts
  in none of these: the helpdesk neither answered nor resolved it, and its clocks never ran.

Every figure is also given per client, tier (the ticket's current tier), channel and
technician (the assignee). The counting is grouped SQL, one query per breakdown; only the
durations and the ratings come back row by row, for percentiles and months.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.rules.calendar import BusinessCalendar
from daemon.rules.sla import STOPPED_STATUSES, clock_time, pauses_of
from daemon.rules.sla_config import SlaConfig, sla_config
from daemon.store.models import Client, Event, Technician, Ticket

L1_TARGET = 0.60
DIMENSIONS = ("client", "tier", "channel", "technician")
SCORES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Period:
    first: date
    last: date
    start: datetime
    end: datetime
    cutoff: datetime          # end, or now if the period has not ended yet

    @classmethod
    def of(cls, first: date, last: date, tz: ZoneInfo, now: datetime) -> Period:
        start = datetime.combine(first, time(0), tzinfo=tz)
        end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=tz)
        return cls(first, last, start, end, min(end, now))


def dimension_column(dimension: str):
    """The SQL expression a breakdown groups by."""
    return {"client": Client.name, "tier": Ticket.tier, "channel": Ticket.channel,
            "technician": Technician.email}[dimension]


# -- counting in SQL ------------------------------------------------------------------------------
def _between(column, start: datetime, end: datetime):
    return and_(column >= start, column < end)


def _count(condition):
    return func.sum(case((condition, 1), else_=0))


def _clock_flags(period: Period, due, stop):
    met = and_(due.is_not(None), _between(stop, period.start, period.end), stop <= due)
    breached = and_(_between(due, period.start, period.cutoff),
                    or_(stop.is_(None), stop > due))
    return met, breached


def _left_l1():
    """A tier_changed event that moved the ticket away from L1."""
    return exists().where(Event.ticket_id == Ticket.id, Event.action == "tier_changed",
                          Event.detail["previous"].as_string() == "L1")


def count_columns(period: Period) -> list:
    first_stop = func.coalesce(Ticket.first_responded_at, Ticket.resolved_at)
    fr_met, fr_breached = _clock_flags(period, Ticket.first_response_due, first_stop)
    res_met, res_breached = _clock_flags(period, Ticket.resolution_due, Ticket.resolved_at)
    resolved = _between(Ticket.resolved_at, period.start, period.end)
    still_open = or_(Ticket.resolved_at >= period.end,
                     and_(Ticket.resolved_at.is_(None), Ticket.status.not_in(STOPPED_STATUSES)))
    return [
        _count(_between(Ticket.created_at, period.start, period.end)).label("opened"),
        _count(resolved).label("resolved"),
        _count(and_(Ticket.created_at < period.end, still_open)).label("backlog"),
        _count(fr_met).label("first_response_met"),
        _count(fr_breached).label("first_response_breached"),
        _count(res_met).label("resolution_met"),
        _count(res_breached).label("resolution_breached"),
        _count(and_(resolved, Ticket.resolved_tier == "L1", ~_left_l1())).label("l1_resolved"),
    ]


def _relevant(period: Period):
    """Tickets that can count at all: created before the end, and not settled before the
    start; never imported history (nothing of it was the helpdesk's service)."""
    return and_(Ticket.imported.is_(False), Ticket.created_at < period.end,
                or_(Ticket.resolved_at.is_(None), Ticket.resolved_at >= period.start,
                    Ticket.first_response_due >= period.start,
                    Ticket.resolution_due >= period.start))


def counts(session: Session, period: Period, dimension: str | None = None) -> dict:
    """{group: {opened, resolved, backlog, *_met, *_breached, l1_resolved}} in one query."""
    query = (select(*count_columns(period)).select_from(Ticket)
             .outerjoin(Client, Client.id == Ticket.client_id)
             .outerjoin(Technician, Technician.id == Ticket.assignee_id)
             .where(_relevant(period)))
    if dimension is not None:
        key = dimension_column(dimension)
        query = query.add_columns(key.label("key")).group_by(key)
    return {getattr(row, "key", "all"): {name: int(value or 0)
                                         for name, value in row._mapping.items() if name != "key"}
            for row in session.execute(query)}


# -- durations in Python -------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * share
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: list[float]) -> dict:
    return {"count": len(values),
            "median_seconds": _seconds(statistics.median(values)) if values else None,
            "p90_seconds": _seconds(percentile(values, 0.9))}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _calendar(sla: SlaConfig, ticket) -> BusinessCalendar:
    """The ticket's clock calendar; its contract's when it has none (yet) or it was removed."""
    if ticket.sla_calendar in sla.calendars:
        return sla.calendar(ticket.sla_calendar)
    return sla.calendar(sla.contract(ticket.contract).calendar)


def duration_rows(session: Session, period: Period):
    first_stop = func.coalesce(Ticket.first_responded_at, Ticket.resolved_at)
    query = (select(Ticket.created_at, Ticket.first_responded_at, Ticket.resolved_at,
                    Ticket.sla_calendar, Ticket.sla_pauses, Ticket.contract,
                    Client.name.label("client"), Ticket.tier, Ticket.channel,
                    Technician.email.label("technician"))
             .outerjoin(Client, Client.id == Ticket.client_id)
             .outerjoin(Technician, Technician.id == Ticket.assignee_id)
             .where(Ticket.imported.is_(False),
                    or_(_between(first_stop, period.start, period.end),
                        _between(Ticket.resolved_at, period.start, period.end)))
             .execution_options(yield_per=2000))
    return session.execute(query)


def durations(session: Session, sla: SlaConfig, period: Period) -> dict:
    """{clock: {(dimension, group): [business seconds]}}, the totals under (None, "all")."""
    found = {"first_response": defaultdict(list), "resolution": defaultdict(list)}
    for row in duration_rows(session, period):
        calendar = _calendar(sla, row)
        keys = [(None, "all"), *((d, getattr(row, d)) for d in DIMENSIONS)]
        stop = row.first_responded_at or row.resolved_at
        if stop and period.start <= stop < period.end:
            seconds = calendar.business_seconds(row.created_at, stop)
            for key in keys:
                found["first_response"][key].append(seconds)
        if row.resolved_at and period.start <= row.resolved_at < period.end:
            spent = clock_time(calendar, row.created_at, row.resolved_at, pauses_of(row))
            for key in keys:
                found["resolution"][key].append(spent.total_seconds())
    return found


# -- ratings --------------------------------------------------------------------------------------
def rating_summary(scores: list[int]) -> dict:
    return {"count": len(scores),
            "average": round(statistics.fmean(scores), 2) if scores else None,
            "distribution": {str(s): scores.count(s) for s in SCORES}}


def ratings(session: Session, period: Period, tz: ZoneInfo) -> dict:
    """Average and distribution overall and per technician, tier, client and month."""
    rows = session.execute(
        select(Ticket.rating, Ticket.rated_at, Client.name.label("client"), Ticket.tier,
               Technician.email.label("technician"))
        .outerjoin(Client, Client.id == Ticket.client_id)
        .outerjoin(Technician, Technician.id == Ticket.assignee_id)
        .where(Ticket.rating.is_not(None), Ticket.imported.is_(False),
               _between(Ticket.rated_at, period.start, period.end)))
    groups: dict[str, dict] = {d: defaultdict(list) for d in ("technician", "tier", "client",
                                                              "month")}
    every = []
    for row in rows:
        every.append(row.rating)
        month = row.rated_at.astimezone(tz).strftime("%Y-%m")
        for dimension, value in (("technician", row.technician), ("tier", row.tier),
                                 ("client", row.client), ("month", month)):
            groups[dimension][value].append(row.rating)
    return {"totals": rating_summary(every),
            **{f"by_{d}": [{d: value, **rating_summary(scores)}
                           for value, scores in sorted(found.items(), key=_order)]
               for d, found in groups.items()}}


def _order(item) -> str:
    return "~" if item[0] is None else str(item[0])  # the unknown group last


# -- the report -----------------------------------------------------------------------------------
def figures(tally: dict, times: dict, key: tuple) -> dict:
    """One group's figures from its counts and durations."""
    result = {name: tally.get(name, 0) for name in ("opened", "resolved", "backlog")}
    result["time_to_first_response"] = spread(times["first_response"].get(key, []))
    result["time_to_resolution"] = spread(times["resolution"].get(key, []))
    result["sla"] = {clock: _compliance(tally.get(f"{clock}_met", 0),
                                        tally.get(f"{clock}_breached", 0))
                     for clock in ("first_response", "resolution")}
    resolved, at_l1 = tally.get("resolved", 0), tally.get("l1_resolved", 0)
    result["l1"] = {"resolved_at_l1": at_l1, "resolved": resolved, "target": L1_TARGET,
                    "rate": _share(at_l1, resolved)}
    return result


def _compliance(met: int, breached: int) -> dict:
    return {"met": met, "breached": breached, "share": _share(met, met + breached)}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def report(session: Session, config: Config, first: date, last: date, now: datetime, *,
           with_calls: bool = True) -> dict:
    """Every figure for local days FIRST..LAST (inclusive), as a JSON-ready dict."""
    tz = config.tz
    period = Period.of(first, last, tz, now)
    times = durations(session, sla_config(config), period)
    result = {"from": first.isoformat(), "to": last.isoformat(), "timezone": tz.key,
              "l1_target": L1_TARGET,
              "totals": figures(counts(session, period).get("all", {}), times, (None, "all"))}
    for dimension in DIMENSIONS:
        tallies = counts(session, period, dimension)
        timed = {key[1] for clock in times.values() for key in clock if key[0] == dimension}
        groups = set(tallies) | timed
        result[f"by_{dimension}"] = [
            {dimension: group, **figures(tallies.get(group, {}), times, (dimension, group))}
            for group in sorted(groups, key=lambda g: "~" if g is None else str(g))]
    result["ratings"] = ratings(session, period, tz)
    if with_calls:
        calls = call_figures_of(session, config, first, last)
        if calls is not None:
            result["calls"] = calls
    return result


def call_figures_of(session: Session, config: Config, first: date, last: date) -> dict | None:
    """The hotline's figures for the period, with the configured service-level threshold."""
    from daemon.call_figures import call_figures
    from daemon.ingest.calls.config import calls_config
    threshold = calls_config(config).settings.service_level_seconds
    return call_figures(session, first, last, config.tz, threshold)


def weekly(session: Session, config: Config, first: date, last: date, now: datetime) -> list[dict]:
    """Per week (Monday to Sunday, clipped to FIRST..LAST): the counted figures, for charts."""
    today = now.astimezone(config.tz).date()
    weeks, monday = [], first - timedelta(days=first.weekday())
    while monday <= last:
        start, end = max(monday, first), min(monday + timedelta(days=6), last)
        if start > today:
            break  # weeks wholly in the future have nothing to show
        tally = counts(session, Period.of(start, end, config.tz, now)).get("all", {})
        weeks.append({"week": monday, "from": start, "to": end,
                      **figures(tally, {"first_response": {}, "resolution": {}}, (None, "all"))})
        monday += timedelta(days=7)
    return weeks


# -- for the web's dashboard (webform/triage.py); the command line's words are in
# daemon/report_output.py ------------------------------------------------------------------------
def hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:.1f} h"


def percent(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.0f}%"
