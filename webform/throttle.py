"""In-memory brakes against guessing and flooding: sign-in failures and form submissions.

Sign-in failures are counted per (address, client IP) and per client IP across addresses
(two LoginThrottles), so neither one password guessed many times nor many addresses
tried once each from one machine go unchecked. They live in the web process's memory
(shared by its threads, under a lock): a restart forgives, and each process of a
multi-process deployment counts on its own. That is enough to make password guessing
and form flooding slow, which is their job.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta

# Forget idle keys once this many are tracked, so a scan of many addresses cannot fill memory.
MAX_KEYS = 10_000


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """After `attempts` failures for a key, refuse it for `pause`, doubled per further failure.

    With `forget_after`, a key's failures are forgotten once that long has passed since
    the last one (and any pause is over); without, only a success forgets them.
    """

    def __init__(self, attempts: int, pause: timedelta, pause_max: timedelta,
                 now: Callable[[], float] = time.monotonic,
                 forget_after: timedelta | None = None):
        self.attempts, self.now = attempts, now
        self.pause, self.pause_max = pause.total_seconds(), pause_max.total_seconds()
        self.forget_after = forget_after.total_seconds() if forget_after else None
        self._lock = threading.Lock()
        self._failures: dict[Hashable, _Failures] = {}

    def retry_after(self, key: Hashable) -> int:
        """Seconds until KEY may try again; 0 when it may try now."""
        with self._lock:
            entry = self._failures.get(key)
            wait = entry.locked_until - self.now() if entry else 0
            return max(0, math.ceil(wait))

    def failed(self, key: Hashable) -> int:
        """Count a failure; returns the seconds KEY now has to wait (0: not yet)."""
        with self._lock:
            now = self.now()
            self._forget_idle(now)
            entry = self._failures.setdefault(key, _Failures())
            if self._forgotten(entry, now):
                entry.count, entry.locked_until = 0, 0.0
            entry.count, entry.last = entry.count + 1, now
            over = entry.count - self.attempts
            if over >= 0:
                entry.locked_until = now + min(self.pause * 2 ** min(over, 30), self.pause_max)
            return max(0, math.ceil(entry.locked_until - now))

    def succeeded(self, key: Hashable) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _forgotten(self, entry: _Failures, now: float) -> bool:
        return self.forget_after is not None and now >= entry.locked_until \
            and now - entry.last >= self.forget_after

    def _forget_idle(self, now: float) -> None:
        if len(self._failures) < MAX_KEYS:
            return
        horizon = now - self.pause_max
        for key in [k for k, e in self._failures.items() if max(e.last, e.locked_until) < horizon]:
            del self._failures[key]


class RateLimit:
    """At most `limit` events per key within a sliding `window` (a limit of 0: no limit)."""

    def __init__(self, limit: int, window: timedelta, now: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.now = limit, window.total_seconds(), now
        self._lock = threading.Lock()
        self._events: dict[Hashable, deque[float]] = {}

    def retry_after(self, *keys: Hashable) -> int:
        """Seconds until every one of KEYS is under its limit again; 0 when all are."""
        with self._lock:
            now = self.now()
            waits = [self._wait(key, now) for key in keys]
            return max(waits, default=0)

    def record(self, *keys: Hashable) -> None:
        with self._lock:
            now = self.now()
            if len(self._events) >= MAX_KEYS:
                self._events = {k: q for k, q in self._events.items()
                                if q and q[-1] > now - self.window}
            for key in keys:
                self._events.setdefault(key, deque()).append(now)

    def _wait(self, key: Hashable, now: float) -> int:
        events = self._events.get(key)
        if not events or self.limit <= 0:
            return 0
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.limit:
            return 0
        return max(1, math.ceil(events[len(events) - self.limit] + self.window - now))
