"""ClaimedJob.from_claim: the shape the wheel holds, and the memory it saves."""

from __future__ import annotations

from repos.base import ClaimedJob, RowRef, category_name, code_of, priority_of

AT_MS = 1_795_000_000_123


def row(
    at_ms: int, due_ms: int, attempts: int, priority: int = 500, category: str = ""
) -> tuple[int, int, int, int, bytes, int, str]:
    # int(str(...)) makes distinct objects, as a driver decoding two columns does.
    return (7, int(str(at_ms)), int(str(due_ms)), attempts, b'{"phone":"+1"}', priority, category)


def test_a_first_attempt_shares_one_int_for_its_sharding_and_due_time() -> None:
    job = ClaimedJob.from_claim(row(AT_MS, AT_MS, 0))
    assert job == ClaimedJob(7, AT_MS, AT_MS, 1, b'{"phone":"+1"}')
    assert job.due_ms is job.at_ms


def test_a_retried_job_keeps_its_later_due_time_and_counts_the_claim() -> None:
    job = ClaimedJob.from_claim(row(AT_MS, AT_MS + 5_000, 2))
    assert (job.at_ms, job.due_ms, job.attempts) == (AT_MS, AT_MS + 5_000, 3)
    assert job.ref == RowRef(7, AT_MS)


def test_the_default_priority_and_no_category_pack_into_the_cached_zero() -> None:
    job = ClaimedJob.from_claim(row(AT_MS, AT_MS, 0, int(str(500)), ""))
    assert job.options == 0 and job.held()[3] is 1  # noqa: F632 - the attempts' cached int


def test_a_priority_and_a_category_travel_in_one_int() -> None:
    job = ClaimedJob.from_claim(row(AT_MS, AT_MS, 0, 900, "reports"))
    assert priority_of(job.options) == 900
    assert category_name(code_of(job.options)) == "reports"
    assert ClaimedJob.from_held(job.held()) == job
    assert priority_of(ClaimedJob.from_claim(row(AT_MS, AT_MS, 0, 500, "reports")).options) == 500
    assert code_of(ClaimedJob.from_claim(row(AT_MS, AT_MS, 0, 1, "")).options) == 0
