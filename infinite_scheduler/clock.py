"""Where the engine's loops read the time; tests substitute a fake."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time in epoch milliseconds (UTC)."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms


def epoch_ms(at: datetime) -> int:
    """An aware datetime as the epoch milliseconds the stores keep (sub-millisecond cut)."""
    return int(at.timestamp() * 1000)


def monotonic_ms() -> int:
    """This process's monotonic clock in milliseconds: how long since something, never when.
    A node's self-fencing measures on it (a wall clock may jump)."""
    return time.monotonic_ns() // 1_000_000
