"""Typed readers of what a request brings: query parameters, form fields and path values.

Every view reads its input through these, so a value no page of ours sends is a 400
that names the parameter in the reader's language, never an exception deeper down (a
date past 9999, an integer past 64 bits, a NUL that PostgreSQL refuses, a line break
in a header). One-line values refuse control characters; free text loses them (a
stray NUL pasted into a note is no reason to lose the note). Numbers, days, durations
and lengths have bounds the store and the calendar can hold.
"""
from __future__ import annotations

import re
from datetime import date, timedelta

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter, UnicodeConverter

from daemon.config import parse_duration
from webform.i18n import tr

# C0 and C1 controls, DEL and the Unicode line separators: never part of a one-line value.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# In free text, the same except tab and line breaks (\r\n becomes \n first).
TEXT_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
WHOLE_NUMBER_RE = re.compile(r"[0-9]{1,19}")
MAX_ID = 2 ** 63 - 1                 # BIGINT on PostgreSQL, INTEGER on SQLite
EARLIEST_DAY = date(2000, 1, 1)      # no helpdesk record is older; far enough for any report
LATEST_DAY = date(2099, 12, 31)      # and a day past this is a typo or an attack
MAX_DURATION = timedelta(days=3660)  # ten years: "older than" anything real
MAX_PATH_VALUE = 500                 # characters of a path value (rating links are ~100)


class BadParameter(BadRequest):
    """A parameter or field no page of ours sends: 400, and the page says which and why."""

    def __init__(self, name: str, pl: str, en: str, **values):
        self.parameter = name
        super().__init__(f"{name}: {tr(pl, en, **values)}")


def line(source: MultiDict, name: str, *, max_chars: int = 200, default: str = "") -> str:
    """A one-line value, trimmed; no control characters, at most MAX_CHARS."""
    raw = source.get(name)
    if raw is None:
        return default
    value = raw.strip()
    if CONTROL_RE.search(value):
        raise BadParameter(name, "zawiera znaki sterujące (np. NUL albo koniec wiersza)",
                           "contains control characters (e.g. NUL or a line break)")
    if len(value) > max_chars:
        raise BadParameter(name, "najwyżej {n} znaków", "at most {n} characters", n=max_chars)
    return value


def lines(source: MultiDict, name: str, *, max_count: int, max_chars: int = 200) -> list[str]:
    """Every value of a repeated field (checkboxes), each as `line` reads one."""
    values = source.getlist(name)
    if len(values) > max_count:
        raise BadParameter(name, "najwyżej {n} wartości", "at most {n} values", n=max_count)
    return [line(MultiDict({name: value}), name, max_chars=max_chars) for value in values]


def choice(source: MultiDict, name: str, choices: tuple[str, ...], default: str = "") -> str:
    """One of CHOICES ("" when absent or empty, unless DEFAULT says otherwise)."""
    value = line(source, name, max_chars=100, default=default)
    if value and value not in choices:
        raise BadParameter(name, "dozwolone: {choices}", "one of: {choices}",
                           choices=", ".join(c for c in choices if c))
    return value


def whole_number(source: MultiDict, name: str, *, default: int, low: int = 0,
                 high: int = MAX_ID) -> int:
    """A whole number from LOW to HIGH, written in ASCII digits."""
    value = line(source, name, max_chars=40)
    if not value:
        return default
    if not WHOLE_NUMBER_RE.fullmatch(value) or not low <= int(value) <= high:
        raise BadParameter(name, "to nie jest liczba całkowita od {low} do {high}",
                           "not a whole number from {low} to {high}", low=low, high=high)
    return int(value)


def day(source: MultiDict, name: str, default: date) -> date:
    """A day as YYYY-MM-DD between EARLIEST_DAY and LATEST_DAY."""
    value = line(source, name, max_chars=40)
    if not value:
        return default
    try:
        chosen = date.fromisoformat(value)
    except ValueError:
        chosen = None
    if chosen is None or not EARLIEST_DAY <= chosen <= LATEST_DAY:
        raise BadParameter(name, "to nie jest dzień RRRR-MM-DD od {first} do {last}",
                           "not a day YYYY-MM-DD from {first} to {last}",
                           first=EARLIEST_DAY.isoformat(), last=LATEST_DAY.isoformat())
    return chosen


def duration(source: MultiDict, name: str) -> timedelta | None:
    """A duration like "2d" or "4h 30m", up to MAX_DURATION; None when absent or empty."""
    value = line(source, name, max_chars=40)
    if not value:
        return None
    try:
        wanted = parse_duration(value)
    except (ValueError, OverflowError):
        wanted = None
    if wanted is None or wanted > MAX_DURATION:
        raise BadParameter(name, "to nie jest czas jak 30m, 4h lub 2d (najwyżej {days} d)",
                           "not a duration like 30m, 4h or 2d (at most {days} d)",
                           days=MAX_DURATION.days)
    return wanted


def text(source: MultiDict, name: str, *, max_chars: int) -> str:
    """Free text (a note, a reply): control characters but tabs and line breaks removed,
    trimmed; longer than MAX_CHARS is refused, never silently cut."""
    value = (source.get(name) or "").replace("\r\n", "\n").replace("\r", "\n")
    value = TEXT_CONTROL_RE.sub("", value).strip()
    if len(value) > max_chars:
        raise BadParameter(name, "najwyżej {n} znaków", "at most {n} characters", n=max_chars)
    return value


# -- path values ---------------------------------------------------------------------------------
class StoredInteger(IntegerConverter):
    """`<int:…>` that matches only what a 64-bit key can hold: a bigger number is a 404."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(map, fixed_digits, min, max, signed)


class PlainSegment(UnicodeConverter):
    """`<…>` without control characters and at most MAX_PATH_VALUE long; else a 404."""

    def __init__(self, map, minlength=1, maxlength=MAX_PATH_VALUE, length=None):
        super().__init__(map, minlength, maxlength, length)
        self.regex = rf"[^/\x00-\x1f\x7f-\x9f\u2028\u2029]{{{minlength},{maxlength}}}"


def bounded_converters(url_map) -> None:
    """Make every `<int:…>` and plain `<…>` of URL_MAP bounded; call before any rule is added."""
    url_map.converters.update(int=StoredInteger, default=PlainSegment, string=PlainSegment)
