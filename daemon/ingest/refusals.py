"""Remember the mail intake could not commit: when it last happened, and how often per channel.

The SMTP/LMTP receiver (it answered 451), the IMAP pullers (a fetched batch stays on the
server) and the web form (it answered 503) report here; /healthz and /metrics read it.
One recorder per process, created by whoever starts the intake and handed to each part.
It lives in memory on purpose: a refusal happens exactly when the store cannot be
written, so the store cannot be where it is kept.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

CHANNELS = ("smtp", "lmtp", "imap", "web")


@dataclass(frozen=True)
class RefusalsSeen:
    """What the recorder knew at one moment."""

    last_at: datetime | None   # the latest refusal; None: none since the process started
    counts: dict[str, int]     # mails refused per channel, every channel present


class IntakeRefusals:
    """Thread-safe: receiver threads, pullers and web requests record at once."""

    def __init__(self, now: Callable[[], datetime]):
        self._now = now
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(CHANNELS, 0)
        self._last_at: datetime | None = None

    def record(self, channel: str, mails: int = 1) -> None:
        """MAILS offered on CHANNEL could not be saved; their sender or server keeps them."""
        if channel not in self._counts:
            raise ValueError(f"unknown intake channel {channel!r}")
        at = self._now()
        with self._lock:
            self._counts[channel] += mails
            if self._last_at is None or at > self._last_at:
                self._last_at = at

    def seen(self) -> RefusalsSeen:
        with self._lock:
            return RefusalsSeen(self._last_at, dict(self._counts))
