"""Hotline figures for a period: offered, answered, missed, abandoned, rates, speed, service level.

Definitions (inbound calls only, except `outgoing`):

- offered: every inbound call; answered, missed, abandoned by outcome; `other` the rest
  (busy, failed, voicemail);
- answer rate = answered / offered; abandonment rate = abandoned / offered;
- average speed of answer: mean wait of answered calls (those with a known wait);
- service level = answered within `service_level_seconds` / offered;
- callbacks: missed and abandoned calls whose callback window has passed (`needed`),
  how many saw contact again (`made`: a call out to the number or an answered call from
  it) and how many by `callback_due` (`within_target`); calls that joined an open
  callback ticket count once, with the call that opened it.

Per day and per hour of day on the helpdesk's time zone, and per technician (answered,
talk time, outgoing). Rates are None when nothing was offered. `missed_by_weekday_hour`
counts the missed and abandoned inbound calls per weekday (Monday first) and local hour,
for the dashboard's chart of when L1 is short of hands.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.store.models import Call, Technician

OTHER_OUTCOMES = ("busy", "failed", "voicemail")
UNANSWERED = ("missed", "abandoned")


@dataclass
class Tally:
    offered: int = 0
    answered: int = 0
    missed: int = 0
    abandoned: int = 0
    other: int = 0
    outgoing: int = 0
    waits: int = 0              # answered calls with a known wait
    wait_total: int = 0
    in_service: int = 0
    talk_total: int = 0
    callbacks_needed: int = 0
    callbacks_made: int = 0
    callbacks_within_target: int = 0

    def add(self, call, threshold: int) -> None:
        if call.direction == "out":
            self.outgoing += 1
            return
        if call.direction != "in":
            return
        self.offered += 1
        if call.outcome == "answered":
            self._answered(call, threshold)
        elif call.outcome in UNANSWERED:
            setattr(self, call.outcome, getattr(self, call.outcome) + 1)
        else:
            self.other += 1
        self._callback(call)

    def _answered(self, call, threshold: int) -> None:
        self.answered += 1
        self.talk_total += call.talk_seconds or 0
        if call.wait_seconds is not None:
            self.waits += 1
            self.wait_total += call.wait_seconds
            self.in_service += call.wait_seconds <= threshold

    def _callback(self, call) -> None:
        if call.callback not in ("followed", "opened"):
            return
        self.callbacks_needed += 1
        if call.callback_at is not None:
            self.callbacks_made += 1
            self.callbacks_within_target += bool(call.callback_due
                                                 and call.callback_at <= call.callback_due)

    def as_dict(self) -> dict:
        return {
            "offered": self.offered, "answered": self.answered, "missed": self.missed,
            "abandoned": self.abandoned, "other": self.other, "outgoing": self.outgoing,
            "answer_rate": _share(self.answered, self.offered),
            "abandonment_rate": _share(self.abandoned, self.offered),
            "average_speed_of_answer": round(self.wait_total / self.waits, 1) if self.waits
            else None,
            "answered_within_threshold": self.in_service,
            "service_level": _share(self.in_service, self.offered),
            "callbacks": {"needed": self.callbacks_needed, "made": self.callbacks_made,
                          "within_target": self.callbacks_within_target},
        }

    def technician_dict(self) -> dict:
        return {"answered": self.answered, "talk_seconds": self.talk_total,
                "average_talk_seconds": round(self.talk_total / self.answered, 1)
                if self.answered else None,
                "average_speed_of_answer": round(self.wait_total / self.waits, 1)
                if self.waits else None,
                "outgoing": self.outgoing}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def period(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Local days FIRST..LAST (inclusive) as instants [start, end)."""
    return (datetime.combine(first, time(0), tzinfo=tz),
            datetime.combine(last + timedelta(days=1), time(0), tzinfo=tz))


def call_figures(session: Session, first: date, last: date, tz: ZoneInfo,
                 service_level_seconds: int = 20) -> dict:
    """The figures of the calls that started on local days FIRST..LAST."""
    start, end = period(first, last, tz)
    total, days, hours = Tally(), defaultdict(Tally), defaultdict(Tally)
    technicians: dict[str | None, Tally] = defaultdict(Tally)
    missed = MissedGrid()
    rows = session.execute(
        select(Call.direction, Call.outcome, Call.started_at, Call.wait_seconds,
               Call.talk_seconds, Call.callback, Call.callback_due, Call.callback_at,
               Technician.email)
        .outerjoin(Technician, Technician.id == Call.technician_id)
        .where(Call.started_at >= start, Call.started_at < end)
        .execution_options(yield_per=5000))
    for call in rows:
        local = call.started_at.astimezone(tz)
        for tally in (total, days[local.date()], hours[local.hour]):
            tally.add(call, service_level_seconds)
        missed.add(call, local)
        if call.email or call.direction == "in" and call.outcome == "answered":
            technicians[call.email].add(call, service_level_seconds)
    return {
        "from": first.isoformat(), "to": last.isoformat(), "timezone": tz.key,
        "service_level_seconds": service_level_seconds,
        "totals": total.as_dict(),
        "per_day": [{"date": day.isoformat(), **days[day].as_dict()}
                    for day in _days(first, last)],
        "per_hour": [{"hour": hour, **hours[hour].as_dict()} for hour in range(24)],
        "per_technician": [{"technician": email, **tally.technician_dict()}
                           for email, tally in sorted(technicians.items(),
                                                      key=lambda item: item[0] or "~")],
        "missed_by_weekday_hour": missed.counts,
    }


class MissedGrid:
    """Missed and abandoned inbound calls per weekday (0 = Monday) and local hour: 7 × 24."""

    def __init__(self) -> None:
        self.counts = [[0] * 24 for _ in range(7)]

    def add(self, call, local: datetime) -> None:
        if call.direction == "in" and call.outcome in UNANSWERED:
            self.counts[local.weekday()][local.hour] += 1


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
