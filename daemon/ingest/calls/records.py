"""One call record from the texts a source found for our fields: times, numbers, outcome.

Every source (a CSV row, an Asterisk CDR line, a JSON record) first becomes a dict
"our field -> their text"; `make_record` reads that the same way for all of them and
raises RowError, with a message an operator can act on, for a row it cannot read.

Local times without an offset are read in the source's time zone with zoneinfo. Around
the DST changes this is deterministic: a time in the hour repeated in autumn (02:30 on
25 October 2026 in Warsaw) is its first occurrence (summer time, +02:00); a time in the
hour skipped in spring (02:30 on 29 March 2026) is read with the offset in force before
the jump (+01:00), i.e. 03:30 summer time.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from daemon.ingest.calls.config import OUTCOMES, PbxSource
from daemon.ingest.calls.numbers import is_extension, normalise_number

UTC = timezone.utc
CALLBACK_OUTCOMES = ("missed", "abandoned")
# Words every source understands; a source's [pbx_sources.outcomes] adds to and overrides them.
DEFAULT_OUTCOMES = {
    **{word: word for word in OUTCOMES},
    "answer": "answered", "no answer": "missed", "noanswer": "missed", "unanswered": "missed",
    "abandon": "abandoned", "congestion": "failed", "cancel": "missed", "voice mail": "voicemail",
    "odebrane": "answered", "nieodebrane": "missed", "porzucone": "abandoned",
    "zajęte": "busy", "zajety": "busy", "nieudane": "failed", "poczta głosowa": "voicemail",
}
DEFAULT_DIRECTIONS = {
    "in": "in", "inbound": "in", "incoming": "in", "przychodzące": "in", "przychodzace": "in",
    "out": "out", "outbound": "out", "outgoing": "out", "wychodzące": "out", "wychodzace": "out",
    "internal": "internal", "wewnętrzne": "internal", "wewnetrzne": "internal",
}
DURATION_RE = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})$")


class RowError(ValueError):
    """A row that cannot be read; the message says which field and why."""


@dataclass(slots=True)   # not frozen: a frozen dataclass costs ~3 µs more per row
class CallRecord:
    call_id: str
    direction: str
    caller: str | None
    callee: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    wait_seconds: int | None
    talk_seconds: int | None
    outcome: str
    queue: str | None
    agent: str | None        # technician as the PBX names them: extension, name or address

    @property
    def external_number(self) -> str | None:
        """The customer's side: the caller of an inbound call, the callee of an outgoing one."""
        return self.callee if self.direction == "out" else self.caller

    @property
    def needs_callback_check(self) -> bool:
        return (self.direction == "in" and self.outcome in CALLBACK_OUTCOMES
                and bool(self.caller) and self.caller.startswith("+"))


def make_record(values: dict[str, str], source: PbxSource) -> CallRecord:
    """VALUES: our field -> their text (missing or "" for none). Raises RowError."""
    get = values.get
    started = parse_time(get("started_at"), source, "started_at", required=True)
    # Fields a source often lacks are skipped without a call (empty is None either way).
    answered = parse_time(text, source, "answered_at") if (text := get("answered_at")) else None
    ended = parse_time(text, source, "ended_at") if (text := get("ended_at")) else None
    talk = parse_seconds(text, "talk_seconds") if (text := get("talk_seconds")) else None
    wait = parse_seconds(text, "wait_seconds") if (text := get("wait_seconds")) else None
    duration = (parse_seconds(text, "duration_seconds") if (text := get("duration_seconds"))
                else None)
    outcome = _outcome(get("outcome"), source, answered, talk)
    talk, wait = _derived_seconds(started, answered, ended, talk, wait, duration, outcome)
    caller = normalise_number(get("caller"))
    callee = normalise_number(get("callee"))
    direction = _direction(get("direction"), source, caller, callee)
    # _call_id, _text and _agent, with their calls skipped for the fields a row lacks.
    call_id = ((text := get("call_id")) and _text(text, 200)) or _call_id(values, started,
                                                                          direction)
    queue = _text(text, 100) if (text := get("queue")) else None
    agent = (((text := get("technician")) and _text(text, 100))
             or ((text := get("extension")) and _text(text, 100)))
    if not agent:
        agent = caller if direction == "out" and is_extension(caller) else None
    return CallRecord(call_id, direction, caller, callee, started, answered, ended,
                      wait, talk, outcome, queue, agent)


# -- times --------------------------------------------------------------------------------
def parse_time(text: str | None, source: PbxSource, name: str, *,
               required: bool = False) -> datetime | None:
    """TEXT in the source's date format as an aware UTC instant (None when empty)."""
    text = text.strip() if text else ""
    if not text:
        if required:
            raise RowError(f"{name}: empty")
        return None
    try:
        moment = _parse_moment(text, source.date_format)
    except (ValueError, OverflowError, OSError):
        raise RowError(f"{name}: {text!r} is not a time in the format "
                       f"{source.date_format!r}") from None
    return local_to_utc(moment, source.tz)


def _parse_moment(text: str, date_format: str) -> datetime:
    if date_format == "iso":
        return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if date_format in ("epoch", "epoch_ms"):
        seconds = float(text) / (1000 if date_format == "epoch_ms" else 1)
        return datetime.fromtimestamp(seconds, UTC)
    return datetime.strptime(text, date_format)


_OFFSETS: dict[tuple, timedelta] = {}   # (tz, year, month, day, hour) -> its UTC offset
_OFFSETS_KEPT = 16384                   # hours: almost two years of them, then emptied


def local_to_utc(moment: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in TZ (fold=0: see the module docstring) as UTC."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    # Looking the offset up in the zone costs more than the rest of a row's time; it is
    # the same for a whole local hour (fold=0) unless a change falls inside the hour,
    # which _hour_offset sees, and such an hour is converted the long way.
    key = (tz, moment.year, moment.month, moment.day, moment.hour)
    offset = _OFFSETS.get(key)
    if offset is None:
        offset = _hour_offset(moment, tz)
        if offset is None:
            return moment.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if len(_OFFSETS) >= _OFFSETS_KEPT:
            _OFFSETS.clear()
        _OFFSETS[key] = offset
    return datetime.combine(moment, moment.time(), UTC) - offset   # (faster than .replace)


def _hour_offset(moment: datetime, tz: ZoneInfo) -> timedelta | None:
    """TZ's offset (fold=0) for all of MOMENT's local hour, or None when it is not one."""
    if not 1 < moment.year < 9999:   # near the ends of datetime's range: the long way
        return None
    start = moment.replace(minute=0, second=0, microsecond=0, tzinfo=tz, fold=0)
    end = start.replace(minute=59, second=59, microsecond=999999)
    offset = start.utcoffset()
    return offset if offset is not None and offset == end.utcoffset() else None


_SECONDS: dict[str, int] = {}   # text -> seconds, for the texts not plain digits ('5:23')
_SECONDS_KEPT = 4096


def parse_seconds(text: str | None, name: str) -> int | None:
    """'75', '75.4', '01:15', '1:02:03' -> whole seconds; None when empty."""
    if text is None:
        return None
    if text.isdigit():   # the usual case, first
        return int(text)
    known = _SECONDS.get(text) if type(text) is str else None
    if known is not None:
        return known
    value = _parse_seconds(text, name)
    if value is not None and type(text) is str:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        _SECONDS[text] = value
    return value


def _parse_seconds(text: str, name: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    clock = DURATION_RE.match(text)
    try:
        if clock:
            hours, minutes, seconds = (int(g or 0) for g in clock.groups())
            value = hours * 3600 + minutes * 60 + seconds
        else:
            value = round(float(text.replace(",", ".")))
    except (ValueError, OverflowError):
        raise RowError(f"{name}: {text!r} is not a number of seconds or H:MM:SS") from None
    if value < 0:
        raise RowError(f"{name}: {text!r} is negative")
    return value


def _derived_seconds(started: datetime, answered: datetime | None, ended: datetime | None,
                     talk: int | None, wait: int | None, duration: int | None,
                     outcome: str) -> tuple[int | None, int | None]:
    """Wait and talk from the times the PBX gave when it did not give them directly."""
    if talk is None and answered and ended:
        talk = max(int((ended - answered).total_seconds()), 0)
    if talk is None and outcome != "answered":
        talk = 0
    if wait is None and answered:
        wait = max(int((answered - started).total_seconds()), 0)
    if wait is None and duration is not None and talk is not None:
        wait = max(duration - talk, 0)
    if wait is None and outcome != "answered" and ended:
        wait = max(int((ended - started).total_seconds()), 0)
    return talk, wait


# -- words --------------------------------------------------------------------------------
def _outcome(text: str | None, source: PbxSource, answered: datetime | None,
             talk: int | None) -> str:
    word = (text or "").strip().lower()
    if not word:
        return "answered" if answered or talk else "missed"
    outcome = source.outcomes.get(word) or DEFAULT_OUTCOMES.get(word)
    if outcome is None:
        raise RowError(f"outcome: {text.strip()!r} is not mapped to one of {', '.join(OUTCOMES)} "
                       f"(add it to [pbx_sources.outcomes])")
    return outcome


def _direction(text: str | None, source: PbxSource, caller: str | None,
               callee: str | None) -> str:
    word = (text or "").strip().lower()
    if word:
        direction = source.directions.get(word) or DEFAULT_DIRECTIONS.get(word)
        if direction is None:
            raise RowError(f"direction: {text.strip()!r} is not in, out or internal "
                           f"(add it to [pbx_sources.directions])")
        return direction
    # Without a direction column: a call from an extension is ours going out.
    if is_extension(caller):
        return "internal" if is_extension(callee) else "out"
    return "in"


def _agent(values: dict[str, str], direction: str, caller: str | None) -> str | None:
    """Who took (or made) the call, in the PBX's words: technician, else extension.

    Without either, a call out names its maker by the extension it came from; the number
    an inbound call dialled says nothing of who answered (it is often a queue's).
    """
    agent = _text(values.get("technician"), 100) or _text(values.get("extension"), 100)
    if agent:
        return agent
    return caller if direction == "out" and is_extension(caller) else None


def _call_id(values: dict[str, str], started: datetime, direction: str) -> str:
    """The PBX's id; for exports without one, a stable hash of what identifies the call."""
    given = _text(values.get("call_id"), 200)
    if given:
        return given
    key = "|".join((started.isoformat(), direction, (values.get("caller") or "").strip(),
                    (values.get("callee") or "").strip()))
    return "h:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _text(value: str | None, limit: int) -> str | None:
    if not value:
        return None
    value = value.replace("\x00", "").strip()
    return value[:limit] or None
