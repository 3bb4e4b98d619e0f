"""The one place that knows what time it is; everything else is handed `now`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Clock:
    """Real time, or real time shifted so that it started at `--now` (replays, checks)."""

    start: datetime | None = None
    _anchor: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        if self.start is None:
            return utcnow()
        return self.start + timedelta(seconds=time.monotonic() - self._anchor)


def iso(moment: datetime | None, tz) -> str | None:
    """MOMENT as ISO 8601 in the time zone TZ, for JSON views; None stays None."""
    return moment.astimezone(tz).isoformat() if moment else None


def parse_instant(text: str) -> datetime:
    """ISO 8601 with an offset (a naive instant is ambiguous and refused)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (e.g. 2026-03-29T01:30:00+01:00)")
    return moment.astimezone(timezone.utc)
