"""Misfire and retry decisions: pure functions, exact answers."""

from __future__ import annotations

import pytest

from infinite_scheduler.decisions import (
    GiveUp,
    MisfirePolicy,
    RetryAt,
    RetryPolicy,
    Verdict,
    misfire_verdict,
)


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_a_job_not_due_waits_and_a_due_one_fires_under_every_policy(
    policy: MisfirePolicy,
) -> None:
    assert misfire_verdict(1_001, 1_000, policy, threshold_ms=60_000) is Verdict.WAIT
    assert misfire_verdict(1_000, 1_000, policy, threshold_ms=60_000) is Verdict.FIRE_NOW


def test_fire_once_now_fires_a_job_days_late_once() -> None:
    verdict = misfire_verdict(0, 3 * 86_400_000, MisfirePolicy.FIRE_ONCE_NOW, 60_000)
    assert verdict is Verdict.FIRE_NOW


def test_do_nothing_marks_missed_only_beyond_the_threshold() -> None:
    assert misfire_verdict(0, 60_000, MisfirePolicy.DO_NOTHING, 60_000) is Verdict.FIRE_NOW
    assert misfire_verdict(0, 60_001, MisfirePolicy.DO_NOTHING, 60_000) is Verdict.MISSED


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_s=1.0, backoff_max_s=5.0)
    delays = [policy.next_attempt(n, 0) for n in range(1, 6)]
    assert delays == [
        RetryAt(1_000),
        RetryAt(2_000),
        RetryAt(4_000),
        RetryAt(5_000),
        RetryAt(5_000),
    ]


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert isinstance(policy.next_attempt(2, 0), RetryAt)
    assert policy.next_attempt(3, 0) == GiveUp(3)


def test_single_attempt_policy_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).next_attempt(1, 123) == GiveUp(1)
