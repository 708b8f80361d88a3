"""When the engine throttles itself: a pure decision from the process's own readings.

The engine measures its own CPU (of one core, over the last check interval) and memory (RSS)
against the ``[throttle]`` limits (0: no limit). Past a limit it throttles: the fetcher claims
less and less often (infinite_scheduler/fetcher.py), so the handlers it starts fall to what the
claims let through, and the jobs it holds in memory to a tenth. It stays throttled until every
reading is below RECOVER_SHARE of its limit: a band, so that a reading hovering at the limit
does not turn the throttle on and off at every check.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Throttled, the engine recovers once every reading is below this share of its limit.
RECOVER_SHARE = 0.8


@dataclass(frozen=True, slots=True, kw_only=True)
class Readings:
    """What the process measured of itself."""

    cpu_percent: float  #: CPU time over wall time since the last check, x100 (one core: 100)
    memory_mb: float  #: resident set size


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The ``[throttle]`` limits; 0 is none."""

    cpu_percent: float = 0.0
    memory_mb: float = 0.0

    @property
    def any(self) -> bool:
        return self.cpu_percent > 0 or self.memory_mb > 0


def throttle_reason(readings: Readings, limits: Limits, *, throttled: bool) -> str | None:
    """Why the engine is to be throttled now, or None to run at full speed.

    Not throttled: throttle when a reading is over its limit. Throttled: stay so while a
    reading is at or above RECOVER_SHARE of its limit (the reason says which)."""
    share = RECOVER_SHARE if throttled else 1.0
    reasons = []
    if _over(readings.cpu_percent, limits.cpu_percent, share, throttled):
        reasons.append(
            f"cpu {readings.cpu_percent:.0f}% of one core, limit {limits.cpu_percent:g}%"
        )
    if _over(readings.memory_mb, limits.memory_mb, share, throttled):
        reasons.append(f"memory {readings.memory_mb:.0f} MB, limit {limits.memory_mb:g} MB")
    return "; ".join(reasons) or None


def _over(reading: float, limit: float, share: float, throttled: bool) -> bool:
    if limit <= 0:
        return False
    bound = limit * share
    return reading >= bound if throttled else reading > bound
