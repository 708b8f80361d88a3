"""Misfire and retry as pure decisions: the loops ask, these answer, nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MisfirePolicy(StrEnum):
    """What to do with a job found overdue (engine down, node crashed, overload)."""

    FIRE_ONCE_NOW = "fire_once_now"  #: fire it once, immediately (Quartz's default for one-shots)
    DO_NOTHING = "do_nothing"  #: mark it MISSED and never fire it
    FIRE_ALL = "fire_all"  #: fire every missed occurrence; a one-shot job has exactly one


@dataclass(frozen=True, slots=True)
class Fire:
    """Fire the job; `late_ms` says how overdue it was when found (0 when on time)."""

    late_ms: int


@dataclass(frozen=True, slots=True)
class Skip:
    """Do not fire: the job misfired and the policy says to drop it (status MISSED)."""

    late_ms: int


def decide_misfire(
    due_ms: int, now_ms: int, policy: MisfirePolicy, threshold_ms: int
) -> Fire | Skip:
    """A job due at `due_ms`, found at `now_ms`, misfired when later than `threshold_ms`."""
    late_ms = max(0, now_ms - due_ms)
    if late_ms > threshold_ms and policy is MisfirePolicy.DO_NOTHING:
        return Skip(late_ms)
    return Fire(late_ms)


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
