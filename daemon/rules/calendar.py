"""Business calendars: when a team works, and business time between instants.

A calendar is weekly opening hours in a time zone, minus public holidays (by country,
from the `holidays` package) and extra closed dates. Every answer is worked out on the
calendar's wall clock, day by day, and converted to UTC instants with zoneinfo, so it
stays exact across DST changes, midnight, holidays and weekends:

- a day's ranges are half-open wall-clock intervals [opens, closes); "24:00" is the next
  day's 00:00, so a "Mon-Sun 00:00-24:00" calendar runs on across midnight without a gap;
- an opening or closing time in the hour skipped in spring counts from the moment the
  clock jumps (e.g. 02:30 on 29 March 2026 in Warsaw is 03:00 CEST);
- one in the hour repeated in autumn counts at its first occurrence, so that night
  "Mon-Sun 00:00-24:00" is 25 hours long and "Mon-Sun 00:00-02:30" is 2.5 hours.

Instants given in are aware datetimes in any zone; instants handed back are UTC.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays as holidays_package

UTC = timezone.utc
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
# A calendar closed this long in a row has no hours to offer: stop looking, say so.
MAX_CLOSED_DAYS = 3660
DAYS_KEPT = 4096  # a calendar's worked-out days held at most (about 11 years of them)
SPEC_RE = re.compile(r"^(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?)\s+(?P<ranges>.+)$")
RANGE_RE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")

Interval = tuple[datetime, datetime]
WeeklyHours = tuple[tuple[tuple[int, int], ...], ...]  # per weekday (Mon=0): (open, close) minutes


class CalendarError(ValueError):
    """A calendar that cannot answer: no open hours at all, or a bad hours text."""


# -- parsing ------------------------------------------------------------------------------
def parse_hours(hours: str | Iterable[str]) -> WeeklyHours:
    """'Mon-Fri 08:00-16:00, Sat 09:00-13:00' (or a list of such) -> ranges per weekday.

    A day spec is a day or a range of days ("Fri-Mon" wraps around the week) followed by
    one or more "HH:MM-HH:MM" ranges separated by spaces. Overlapping and touching ranges
    of one day are merged. Raises CalendarError naming the part it could not read.
    """
    texts = [hours] if isinstance(hours, str) else list(hours)
    week: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    for text in texts:
        for spec in filter(None, (part.strip() for part in str(text).split(","))):
            days, ranges = _parse_spec(spec)
            for day in days:
                week[day].extend(ranges)
    return tuple(_merged(day) for day in week)


def _parse_spec(spec: str) -> tuple[list[int], list[tuple[int, int]]]:
    match = SPEC_RE.match(spec)
    if not match:
        raise CalendarError(f"expected e.g. 'Mon-Fri 08:00-16:00', got {spec!r}")
    return _parse_days(match["days"], spec), [_parse_range(r, spec)
                                              for r in match["ranges"].split()]


def _parse_days(text: str, spec: str) -> list[int]:
    names = [name.strip().lower() for name in text.split("-")]
    if any(name not in DAYS for name in names):
        raise CalendarError(f"unknown day in {spec!r}: use Mon Tue Wed Thu Fri Sat Sun")
    first, last = DAYS.index(names[0]), DAYS.index(names[-1])
    return [(first + offset) % 7 for offset in range((last - first) % 7 + 1)]


def _parse_range(text: str, spec: str) -> tuple[int, int]:
    match = RANGE_RE.match(text)
    if not match:
        raise CalendarError(f"expected a range like 08:00-16:00 in {spec!r}, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or start >= MINUTES_PER_DAY or end > MINUTES_PER_DAY or start >= end:
        raise CalendarError(f"{text!r} in {spec!r} is not a range within one day "
                            f"(00:00 to 24:00, opening before closing)")
    return start, end


def _merged(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


@functools.lru_cache(maxsize=256)
def holiday_dates(country: str, year: int) -> frozenset[date]:
    """Public holidays of COUNTRY (e.g. "PL", or "DE-BY" for a subdivision) in YEAR."""
    code, _, subdivision = country.partition("-")
    return frozenset(holidays_package.country_holidays(code, subdiv=subdivision or None,
                                                       years=year))


def check_country(country: str) -> None:
    """Raise CalendarError unless the holidays package knows COUNTRY."""
    try:
        holiday_dates(country, 2026)
    except (NotImplementedError, KeyError, ValueError) as exc:
        raise CalendarError(f"no public holidays known for {country!r}: {exc}") from None


# -- the calendar -------------------------------------------------------------------------
@dataclass(frozen=True)
class BusinessCalendar:
    name: str
    weekly: WeeklyHours
    tz: ZoneInfo
    holidays: str | None = None               # country code, e.g. "PL"
    extra_closed: frozenset[date] = field(default_factory=frozenset)
    # A day's open intervals, worked out once: every new ticket's clocks and every SLA
    # sweep walk the same few days, and each interval is two zone conversions.
    _days: dict[date, tuple[Interval, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if len(self.weekly) != 7:
            raise CalendarError(f"calendar {self.name!r}: weekly hours need 7 days")
        if not any(self.weekly):
            raise CalendarError(f"calendar {self.name!r} has no open hours at all")

    @classmethod
    def parse(cls, name: str, hours: str | Iterable[str], tz: ZoneInfo, *,
              holidays: str | None = None, extra_closed: Iterable[date] = ()) -> BusinessCalendar:
        return cls(name=name, weekly=parse_hours(hours), tz=tz, holidays=holidays or None,
                   extra_closed=frozenset(extra_closed))

    # -- questions ------------------------------------------------------------------------
    def is_closed_day(self, day: date) -> bool:
        """A holiday or an extra closed date: no hours at all that day."""
        return day in self.extra_closed or bool(
            self.holidays and day in holiday_dates(self.holidays, day.year))

    def is_open(self, at: datetime) -> bool:
        at = _utc(at)
        return any(start <= at < end for start, end in self._day(self._local_date(at)))

    def next_open(self, at: datetime) -> datetime:
        """AT itself when open, else the instant the calendar next opens."""
        at = _utc(at)
        start, _end = next(self.intervals(at))
        return max(start, at)

    def business_time(self, start: datetime, end: datetime) -> timedelta:
        """Open time between two instants (zero when END is not after START)."""
        start, end = _utc(start), _utc(end)
        total = timedelta(0)
        if end <= start:
            return total
        for opens, closes in self.intervals(start):
            if opens >= end:
                break
            total += min(closes, end) - max(opens, start)
        return total

    def business_seconds(self, start: datetime, end: datetime) -> float:
        return self.business_time(start, end).total_seconds()

    def add(self, start: datetime, duration: timedelta | float) -> datetime:
        """The earliest instant at which DURATION (a timedelta, or seconds) of open time
        has passed since START.

        It is always inside open hours or at a closing time: four business hours from
        Friday 12:00 on an 08:00-16:00 calendar is Friday 16:00, not Monday 08:00.
        """
        start = _utc(start)
        if not isinstance(duration, timedelta):
            duration = timedelta(seconds=duration)
        if duration < timedelta(0):
            raise ValueError(f"cannot add a negative duration {duration}")
        if not duration:
            return start
        left = duration
        for opens, closes in self.intervals(start):
            opens = max(opens, start)
            if closes - opens >= left:
                return opens + left
            left -= closes - opens
        raise AssertionError("unreachable: intervals() never ends")  # pragma: no cover

    # -- the intervals everything above walks ----------------------------------------------
    def intervals(self, start: datetime) -> Iterator[Interval]:
        """Open intervals (UTC) that end after START, in order, day by day without end.

        Raises CalendarError after MAX_CLOSED_DAYS closed days in a row.
        """
        start = _utc(start)
        day, closed_days = self._local_date(start), 0
        while True:
            found = False
            for opens, closes in self._day(day):
                found = True
                if closes > start:
                    yield opens, closes
            closed_days = 0 if found else closed_days + 1
            if closed_days > MAX_CLOSED_DAYS:
                raise CalendarError(f"calendar {self.name!r} has no open hours for "
                                    f"{MAX_CLOSED_DAYS} days after {start.isoformat()}")
            day += timedelta(days=1)

    def _day(self, day: date) -> tuple[Interval, ...]:
        intervals = self._days.get(day)
        if intervals is None:
            if len(self._days) >= DAYS_KEPT:
                self._days.clear()
            intervals = self._days[day] = self._work_out_day(day)
        return intervals

    def _work_out_day(self, day: date) -> tuple[Interval, ...]:
        if self.is_closed_day(day):
            return ()
        intervals = [(self._instant(day, opens), self._instant(day, closes))
                     for opens, closes in self.weekly[day.weekday()]]
        return tuple((opens, closes) for opens, closes in intervals if closes > opens)

    def _local_date(self, at: datetime) -> date:
        return at.astimezone(self.tz).date()

    def _instant(self, day: date, minute: int) -> datetime:
        """The UTC instant the wall clock shows DAY + MINUTE (see the module's DST rules)."""
        if minute >= MINUTES_PER_DAY:
            day, minute = day + timedelta(days=1), minute - MINUTES_PER_DAY
        wall = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.tz)
        instant = wall.astimezone(UTC)  # fold=0: the first occurrence of a repeated time
        if instant.astimezone(self.tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
            return instant
        return self._gap_end(wall)

    def _gap_end(self, wall: datetime) -> datetime:
        """The instant the clock jumped over WALL, a wall time that did not exist."""
        low = int(wall.replace(fold=1).timestamp())   # before the jump
        high = int(wall.replace(fold=0).timestamp())  # after it
        before = self._offset(low)
        # The offset changes once between the two: find that second by bisection.
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self._offset(middle) == before else (low, middle)
        return datetime.fromtimestamp(high, UTC)

    def _offset(self, timestamp: int) -> timedelta:
        return datetime.fromtimestamp(timestamp, UTC).astimezone(self.tz).utcoffset()


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment}: pass an aware instant")
    return moment.astimezone(UTC)
