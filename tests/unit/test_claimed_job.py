"""ClaimedJob.from_claim: the shape the wheel holds, and the memory it saves."""

from __future__ import annotations

from repos.base import ClaimedJob, RowRef

AT_MS = 1_795_000_000_123


def row(at_ms: int, due_ms: int, attempts: int) -> tuple[int, int, int, int, bytes]:
    # int(str(...)) makes distinct objects, as a driver decoding two columns does.
    return (7, int(str(at_ms)), int(str(due_ms)), attempts, b'{"phone":"+1"}')


def test_a_first_attempt_shares_one_int_for_its_sharding_and_due_time() -> None:
    job = ClaimedJob.from_claim(row(AT_MS, AT_MS, 0))
    assert job == ClaimedJob(7, AT_MS, AT_MS, 1, b'{"phone":"+1"}')
    assert job.due_ms is job.at_ms


def test_a_retried_job_keeps_its_later_due_time_and_counts_the_claim() -> None:
    job = ClaimedJob.from_claim(row(AT_MS, AT_MS + 5_000, 2))
    assert (job.at_ms, job.due_ms, job.attempts) == (AT_MS, AT_MS + 5_000, 3)
    assert job.ref == RowRef(7, AT_MS)
