"""Numbers, shares and dates written the reader's way: Polish (decimal comma, 7.12.2026)
or English, through Babel's locale data, for mail, pages and reports alike."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal, format_percent

LOCALES = {"pl": "pl_PL", "en": "en_GB"}  # en_GB: day before month, as Polish readers expect


def locale_of(language: str) -> str:
    return LOCALES.get(language, LOCALES["pl"])


def number(value: float | None, language: str, digits: int = 1) -> str:
    """VALUE with DIGITS decimals at most, grouped (1 234,5 / 1,234.5); none as a dash."""
    if value is None:
        return "—"
    pattern = "#,##0" + ("." + "#" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=locale_of(language))


def share(value: float | None, language: str, digits: int = 1) -> str:
    """A share 0..1 as a percentage (62,5% / 62.5%); none as a dash."""
    if value is None:
        return "—"
    pattern = "#,##0" + ("." + "#" * digits if digits else "") + "%"
    return format_percent(value, format=pattern, locale=locale_of(language))


def day(value: date | None, language: str) -> str:
    """A date the short way (7.12.2026 / 07/12/2026); none as a dash."""
    return format_date(value, format="short", locale=locale_of(language)) if value else "—"


def moment(value: datetime | None, language: str, tz: ZoneInfo) -> str:
    """An instant in TZ, date and time (7.12.2026, 10:05); none as a dash."""
    if value is None:
        return "—"
    return format_datetime(value, format="short", tzinfo=tz, locale=locale_of(language))
