"""Business calendars at hand-picked instants (DST, holidays, midnight) and by properties."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.rules.calendar import BusinessCalendar, CalendarError, holiday_dates, parse_hours
from daemon.rules.sla import deadline

WARSAW = ZoneInfo("Europe/Warsaw")
L1 = BusinessCalendar.parse("l1", "Mon-Fri 08:00-16:00", WARSAW, holidays="PL")
ALWAYS = BusinessCalendar.parse("24x7", "Mon-Sun 00:00-24:00", WARSAW)
ODD = BusinessCalendar.parse("odd", ["Mon-Fri 07:30-12:00 13:00-17:15", "Sat 02:30-05:00",
                                     "Sun 00:00-03:30"], WARSAW, holidays="PL",
                             extra_closed=[date(2026, 12, 31)])


def at(*args) -> datetime:
    """A Warsaw wall-clock time (fold=0: the first of a repeated time)."""
    return datetime(*args, tzinfo=WARSAW)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


# -- hours text -----------------------------------------------------------------------------------
def test_hours_are_read_from_text_and_lists():
    week = parse_hours("Mon-Fri 08:00-16:00, Sat 09:00-13:00")
    assert week[0] == week[4] == ((480, 960),) and week[5] == ((540, 780),) and week[6] == ()
    assert parse_hours(["Mon-Fri 08:00-16:00", "Sat 09:00-13:00"]) == week
    assert parse_hours("Fri-Mon 10:00-11:00")[5:] == (((600, 660),),) * 2  # wraps round the week
    assert parse_hours("Mon 08:00-12:00 11:00-16:00")[0] == ((480, 960),)  # merged
    assert parse_hours("Mon-Sun 00:00-24:00")[3] == ((0, 1440),)


@pytest.mark.parametrize("text", ["Mon-Fri 8-16", "Xyz 08:00-09:00", "Mon 16:00-08:00",
                                  "Mon 00:00-24:01", "Mon 08:60-09:00", "08:00-16:00"])
def test_bad_hours_are_refused(text):
    with pytest.raises(CalendarError):
        parse_hours(text)


def test_a_calendar_without_hours_is_refused():
    with pytest.raises(CalendarError, match="no open hours"):
        BusinessCalendar.parse("never", [], WARSAW)


def test_a_calendar_closed_for_ten_years_says_so_instead_of_looping():
    mondays = [date(2026, 1, 5) + timedelta(weeks=n) for n in range(53 * 11)]
    calendar = BusinessCalendar.parse("mondays", "Mon 08:00-09:00", WARSAW, extra_closed=mondays)
    with pytest.raises(CalendarError, match="no open hours for"):
        calendar.next_open(at(2026, 1, 1, 12))


# -- Polish holidays ------------------------------------------------------------------------------
def test_polish_holidays_include_christmas_eve_from_2025_and_the_movable_feasts():
    assert date(2025, 12, 24) in holiday_dates("PL", 2025)
    assert date(2024, 12, 24) not in holiday_dates("PL", 2024)
    days = holiday_dates("PL", 2026)
    for day in (date(2026, 4, 5), date(2026, 4, 6), date(2026, 5, 24), date(2026, 6, 4),
                date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26)):
        assert day in days  # Easter, Easter Monday, Pentecost, Corpus Christi, Christmas


def test_23_to_28_december_2026():
    assert L1.is_open(at(2026, 12, 23, 15, 59))
    for day in (24, 25, 26, 27):
        assert not L1.is_open(at(2026, 12, day, 10))
    assert L1.next_open(at(2026, 12, 23, 16)) == at(2026, 12, 28, 8)
    assert L1.add(at(2026, 12, 23, 15), hours(4)) == at(2026, 12, 28, 11)
    assert L1.business_time(at(2026, 12, 23, 8), at(2026, 12, 29, 8)) == hours(16)
    assert L1.is_open(at(2024, 12, 24, 10))  # before the law changed, a working day


def test_easter_monday_and_corpus_christi_2026():
    assert not L1.is_open(at(2026, 4, 6, 10))
    assert L1.add(at(2026, 4, 3, 15), hours(2)) == at(2026, 4, 7, 9)
    assert not L1.is_open(at(2026, 6, 4, 10))
    assert L1.add(at(2026, 6, 3, 15), hours(2)) == at(2026, 6, 5, 9)
    assert L1.business_time(at(2026, 6, 3, 12), at(2026, 6, 5, 12)) == hours(8)


def test_extra_closed_days():
    assert ODD.is_open(at(2026, 12, 30, 9)) and not ODD.is_open(at(2026, 12, 31, 9))


# -- DST ------------------------------------------------------------------------------------------
def test_march_2026_the_night_has_23_hours():
    assert ALWAYS.business_time(at(2026, 3, 28, 12), at(2026, 3, 29, 12)) == hours(23)
    assert ALWAYS.add(at(2026, 3, 29, 1, 30), hours(2)) == at(2026, 3, 29, 4, 30)
    # L1: Friday 15:00 CET + 4h lands on Monday in CEST, counted on the wall clock.
    assert L1.add(at(2026, 3, 27, 15), hours(4)) == at(2026, 3, 30, 11)
    assert L1.add(at(2026, 3, 27, 15), hours(4)).utcoffset() is not None
    assert L1.business_time(at(2026, 3, 27, 15), at(2026, 3, 30, 9)) == hours(2)


def test_march_2026_times_in_the_skipped_hour_count_from_the_jump():
    night = BusinessCalendar.parse("night", "Sun 02:30-05:00", WARSAW)
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)  # 02:00 CET becomes 03:00 CEST
    assert night.next_open(at(2026, 3, 29, 0, 0)) == jump
    assert night.business_time(at(2026, 3, 28, 12), at(2026, 3, 30, 12)) == hours(2)
    assert night.is_open(at(2026, 3, 29, 3, 30)) and not night.is_open(at(2026, 3, 29, 1, 59))
    across = BusinessCalendar.parse("across", "Sun 01:00-04:00", WARSAW)
    assert across.business_time(at(2026, 3, 29, 0), at(2026, 3, 29, 6)) == hours(2)


def test_october_2026_the_night_has_25_hours():
    assert ALWAYS.business_time(at(2026, 10, 24, 12), at(2026, 10, 25, 12)) == hours(25)
    first = at(2026, 10, 25, 1, 30)                      # 01:30 CEST
    second_half_past_two = datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)  # 02:30 CET
    assert ALWAYS.add(first, hours(2)) == second_half_past_two
    assert L1.add(at(2026, 10, 23, 15), hours(4)) == at(2026, 10, 26, 11)
    across = BusinessCalendar.parse("across", "Sun 01:00-04:00", WARSAW)
    assert across.business_time(at(2026, 10, 25, 0), at(2026, 10, 25, 6)) == hours(4)


def test_24x7_runs_on_across_midnight():
    late = at(2026, 11, 24, 23, 59)
    assert ALWAYS.add(late, timedelta(minutes=1)) == at(2026, 11, 25, 0, 0)
    assert ALWAYS.add(late, timedelta(minutes=2)) == at(2026, 11, 25, 0, 1)
    assert ALWAYS.business_time(late, at(2026, 11, 25, 0, 1)) == timedelta(minutes=2)
    assert ALWAYS.is_open(at(2026, 11, 25, 0, 0)) and ALWAYS.next_open(at(2026, 11, 25)) == at(2026, 11, 25)
    assert ALWAYS.add(at(2026, 12, 31, 23, 30), hours(1)) == at(2027, 1, 1, 0, 30)


def test_add_ends_at_a_closing_time_rather_than_the_next_opening():
    assert L1.add(at(2026, 11, 27, 12), hours(4)) == at(2026, 11, 27, 16)   # Friday
    assert L1.add(at(2026, 11, 28, 12), hours(0)) == at(2026, 11, 28, 12)   # nothing to add
    assert L1.add(at(2026, 11, 28, 12), timedelta(seconds=1)) == at(2026, 11, 30, 8, 0, 1)


def test_days_are_worked_out_once_and_the_kept_ones_are_bounded(monkeypatch):
    """A calendar keeps the days it has worked out (the same answers as working them out
    again, DST nights and holidays included), and never more than DAYS_KEPT of them."""
    import daemon.rules.calendar as calendar_module
    monkeypatch.setattr(calendar_module, "DAYS_KEPT", 40)
    calendar = BusinessCalendar.parse("l1", "Mon-Fri 08:00-16:00", WARSAW, holidays="PL")
    first = calendar.business_time(at(2026, 3, 1, 0, 0), at(2026, 5, 1, 0, 0))  # 61 days
    assert 0 < len(calendar._days) <= 40
    assert calendar.business_time(at(2026, 3, 1, 0, 0), at(2026, 5, 1, 0, 0)) == first
    assert first == L1.business_time(at(2026, 3, 1, 0, 0), at(2026, 5, 1, 0, 0))
    for day, intervals in calendar._days.items():
        assert intervals == calendar._work_out_day(day)
    assert calendar._day(date(2026, 4, 6)) == ()  # Easter Monday
    assert calendar._day(date(2026, 3, 30)) == ((at(2026, 3, 30, 8, 0), at(2026, 3, 30, 16, 0)),)
    assert calendar == BusinessCalendar.parse("l1", "Mon-Fri 08:00-16:00", WARSAW,
                                              holidays="PL")  # what it keeps is no part of it


def test_naive_instants_are_refused():
    with pytest.raises(ValueError):
        L1.is_open(datetime(2026, 11, 25, 10))


# -- properties -----------------------------------------------------------------------------------
CALENDARS = st.sampled_from([L1, ALWAYS, ODD])
# 2025-2027: three years of holidays and six DST changes, to the second.
INSTANTS = st.integers(int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()),
                       int(datetime(2027, 12, 31, tzinfo=timezone.utc).timestamp())).map(
    lambda s: datetime.fromtimestamp(s, timezone.utc))
DURATIONS = st.integers(0, 120 * 3600).map(lambda s: timedelta(seconds=s))
PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(CALENDARS, st.lists(INSTANTS, min_size=3, max_size=3).map(sorted))
def test_business_time_adds_up(calendar, instants):
    a, b, c = instants
    assert calendar.business_time(a, b) + calendar.business_time(b, c) == calendar.business_time(a, c)


@PROPERTY
@given(CALENDARS, INSTANTS, DURATIONS)
def test_add_gives_exactly_the_business_time_asked_for(calendar, start, duration):
    end = calendar.add(start, duration)
    assert end >= start
    assert calendar.business_time(start, end) == duration


@PROPERTY
@given(CALENDARS, INSTANTS, DURATIONS, DURATIONS)
def test_due_times_never_decrease_as_work_is_added(calendar, start, work, more):
    assert calendar.add(start, work + more) >= calendar.add(start, work)


@PROPERTY
@given(CALENDARS, st.lists(INSTANTS, min_size=2, max_size=2).map(sorted))
def test_add_of_the_business_time_lands_at_the_last_open_instant_before_the_end(calendar, pair):
    start, end = pair
    worked = calendar.business_time(start, end)
    landed = calendar.add(start, calendar.business_seconds(start, end))
    assert start <= landed <= end
    assert calendar.business_time(landed, end) == timedelta(0)   # nothing open in between
    if calendar.is_open(end) and landed > start:
        assert landed == end or not calendar.is_open(end - timedelta(seconds=1))


@PROPERTY
@given(CALENDARS, INSTANTS)
def test_next_open_is_open_and_nothing_opens_before_it(calendar, moment):
    opens = calendar.next_open(moment)
    assert opens >= moment and calendar.is_open(opens)
    assert calendar.business_time(moment, opens) == timedelta(0)
    assert calendar.is_open(moment) == (calendar.business_time(moment, moment + timedelta(seconds=1))
                                        == timedelta(seconds=1))


PAUSES = st.lists(st.tuples(INSTANTS, st.integers(1, 5 * 86400)), max_size=4).map(
    lambda items: _disjoint([(s, s + timedelta(seconds=n)) for s, n in items]))


def _disjoint(intervals):
    chosen = []
    for start, end in sorted(intervals):
        if not chosen or start >= chosen[-1][1]:
            chosen.append((start, end))
    return tuple(chosen)


@PROPERTY
@given(CALENDARS, INSTANTS, DURATIONS, PAUSES)
def test_pauses_never_shorten_a_clock(calendar, start, target, pauses):
    assert deadline(calendar, start, target, pauses) >= deadline(calendar, start, target)


@PROPERTY
@given(CALENDARS, INSTANTS, DURATIONS, DURATIONS, PAUSES)
def test_due_times_with_pauses_never_decrease_as_work_is_added(calendar, start, work, more,
                                                               pauses):
    assert deadline(calendar, start, work + more, pauses) >= deadline(calendar, start, work, pauses)


@PROPERTY
@given(CALENDARS, INSTANTS, DURATIONS, PAUSES)
def test_a_paused_clock_runs_exactly_its_target_outside_the_pauses(calendar, start, target,
                                                                   pauses):
    from daemon.rules.sla import clock_time
    due = deadline(calendar, start, target, pauses)
    assert clock_time(calendar, start, due, pauses) == target
