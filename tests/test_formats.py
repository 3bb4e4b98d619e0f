"""daemon.formats: numbers, shares and dates the Polish or the English way."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from daemon.formats import day, moment, number, share

WARSAW = ZoneInfo("Europe/Warsaw")


def test_polish_numbers_take_a_decimal_comma_and_group_thousands_with_a_space():
    assert number(1234.56, "pl").replace("\xa0", " ") == "1 234,6"
    assert share(0.625, "pl") == "62,5%"


def test_english_numbers_take_a_point():
    assert number(1234.56, "en") == "1,234.6" and share(0.625, "en") == "62.5%"


def test_whole_numbers_carry_no_decimals_and_none_is_a_dash():
    assert number(3.0, "pl") == "3" and number(None, "pl") == share(None, "en") == "—"


def test_dates_are_written_day_first_in_both_languages():
    assert day(date(2026, 12, 7), "pl") == "7.12.2026"
    assert day(date(2026, 12, 7), "en") == "07/12/2026"


def test_an_instant_is_written_in_the_given_time_zone():
    winter = datetime(2026, 12, 7, 10, 5, tzinfo=timezone.utc)
    assert moment(winter, "pl", WARSAW) == "7.12.2026, 11:05"
