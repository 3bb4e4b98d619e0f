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
from datetime import datetime, timezone
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
    started = parse_time(values.get("started_at"), source, "started_at", required=True)
    answered = parse_time(values.get("answered_at"), source, "answered_at")
    ended = parse_time(values.get("ended_at"), source, "ended_at")
    talk = parse_seconds(values.get("talk_seconds"), "talk_seconds")
    wait = parse_seconds(values.get("wait_seconds"), "wait_seconds")
    duration = parse_seconds(values.get("duration_seconds"), "duration_seconds")
    outcome = _outcome(values.get("outcome"), source, answered, talk)
    talk, wait = _derived_seconds(started, answered, ended, talk, wait, duration, outcome)
    caller = normalise_number(values.get("caller"))
    callee = normalise_number(values.get("callee"))
    direction = _direction(values.get("direction"), source, caller, callee)
    return CallRecord(
        call_id=_call_id(values, started, direction), direction=direction,
        caller=caller, callee=callee, started_at=started, answered_at=answered, ended_at=ended,
        wait_seconds=wait, talk_seconds=talk, outcome=outcome,
        queue=_text(values.get("queue"), 100), agent=_agent(values, direction, caller))


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


def local_to_utc(moment: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in TZ (fold=0: see the module docstring) as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz, fold=0)
    return moment.astimezone(UTC)


def parse_seconds(text: str | None, name: str) -> int | None:
    """'75', '75.4', '01:15', '1:02:03' -> whole seconds; None when empty."""
    if text is None:
        return None
    if text.isdigit():   # the usual case, first
        return int(text)
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
