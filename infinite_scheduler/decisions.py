"""Misfire and retry as pure decisions: the loops ask, these answer, nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class MisfirePolicy(StrEnum):
    """What to do with a job found overdue (engine down, node crashed, overload)."""

    FIRE_ONCE_NOW = "fire_once_now"  #: fire it once, immediately (Quartz's default for one-shots)
    DO_NOTHING = "do_nothing"  #: past the threshold, mark it MISSED and never fire it


class Verdict(Enum):
    """What becomes of a claimed row, given its due time and now."""

    WAIT = "wait"  #: not due yet: it waits in the wheel
    FIRE_NOW = "fire_now"  #: due, or overdue and fired once, now
    MISSED = "missed"  #: overdue past the threshold under do_nothing: MISSED, never fired


def misfire_verdict(due_ms: int, now_ms: int, policy: MisfirePolicy, threshold_ms: int) -> Verdict:
    """The one place the misfire policy is read: a row due at `due_ms`, claimed at `now_ms`,
    misfired when later than `threshold_ms`."""
    if due_ms > now_ms:
        return Verdict.WAIT
    if policy is MisfirePolicy.DO_NOTHING and now_ms - due_ms > threshold_ms:
        return Verdict.MISSED
    return Verdict.FIRE_NOW


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Run the job again at `at_ms`."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No attempts left: the job becomes FAILED."""

    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff: base, 2*base, 4*base, ... capped at max_s, for max_attempts tries."""

    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0

    def next_attempt(self, attempts: int, now_ms: int) -> RetryAt | GiveUp:
        """Decide after attempt number `attempts` (1 = the first) has failed at `now_ms`."""
        if attempts >= self.max_attempts:
            return GiveUp(attempts)
        delay_s = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempts - 1))
        return RetryAt(now_ms + int(delay_s * 1000))
