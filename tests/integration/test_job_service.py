"""JobService (infinite_scheduler/management): every operation and every refusal, on every
store; a refusal is checked to leave every stored row as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infinite_scheduler import SchedulerClient, SchedulerConfig, Status, load_config
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.errors import InvalidJobRequest, JobNotFound, JobStateRefused
from infinite_scheduler.management import JobFilter, JobService, PageRequest
from repos.base import Claimant, RowRef, StoredRow
from repos.examples import ORDERS, SMS, OrderEntity, SmsEntity

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = 3_600_000
DAY = 24 * HOUR
D22 = int((datetime(2026, 11, 22, tzinfo=UTC) - EPOCH).total_seconds()) * 1000
NOW = D22 + 12 * HOUR


def client_of(jobs: JobService) -> SchedulerClient:
    assert jobs._client is not None  # made by JobService(config, ...), not JobService.over
    return jobs._client


def sms(key: int, at_ms: int) -> SmsEntity:
    at = EPOCH + timedelta(milliseconds=at_ms)
    return SmsEntity(id=key, scheduled_at=at, phone="+15550100", message=f"m{key}")


@pytest.fixture
def config(backend: Any, backend_url: str) -> SchedulerConfig:
    store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
    return load_config(None, store=store, metrics_port=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def jobs(config: SchedulerConfig, clock: FakeClock) -> AsyncIterator[JobService]:
    """A service over ids 1-5 of SMS: 1-3 today (hours 13, 14, 15), 4 tomorrow, 5 in 3 days."""
    async with SchedulerClient(config, SMS, clock=clock) as client:
        due = [NOW + HOUR, NOW + 2 * HOUR, NOW + 3 * HOUR, NOW + DAY, NOW + 3 * DAY]
        await client.schedule([sms(i + 1, at) for i, at in enumerate(due)])
    async with JobService(config, SMS, ORDERS, clock=clock) as service:
        yield service


async def stored(jobs: JobService) -> list[StoredRow]:
    repo = client_of(jobs).repository("sms")
    return await repo.page(start_ms=0, end_ms=NOW + 400 * DAY, limit=10_000)


async def claim(jobs: JobService, before_ms: int, epoch: int = 11) -> None:
    repo = client_of(jobs).repository("sms")
    await repo.claim_due(
        Claimant("n1", epoch), now_ms=NOW, before_ms=before_ms, since_ms=NOW - HOUR, limit=100
    )


async def refused(jobs: JobService, call: Any, match: str) -> JobStateRefused:
    """`call` refused with `match` in its message, every stored row as it was."""
    before = await stored(jobs)
    with pytest.raises(JobStateRefused, match=match) as caught:
        await call
    assert await stored(jobs) == before
    return caught.value


async def test_get_job_shows_state_times_and_claim(jobs: JobService) -> None:
    job = await jobs.get_job("sms", 1)
    assert (job.state, job.scheduled_ms, job.due_ms, job.attempts) == (
        "PENDING",
        NOW + HOUR,
        NOW + HOUR,
        0,
    )
    assert (job.claimed_by, job.priority, job.category, job.schedule) == (None, 500, "", None)
    await claim(jobs, NOW + HOUR + 1)
    job = await jobs.get_job("sms", "1")  # an id given as text, as the CLI does
    assert (job.state, job.claimed_by, job.attempts) == ("CLAIMED", "n1", 1)


async def test_bad_input_names_the_field(jobs: JobService) -> None:
    cases = [
        (jobs.get_job("nope", 1), "entity"),
        (jobs.get_job("sms", "x1"), "id"),
        (jobs.get_job("orders", 7), "id"),
        (jobs.list_jobs(JobFilter(entity="sms"), PageRequest(size=0)), "size"),
        (jobs.list_jobs(JobFilter(entity="sms"), PageRequest(size=1001)), "size"),
        (jobs.list_jobs(JobFilter(entity="sms"), PageRequest(cursor="!!")), "cursor"),
        (jobs.list_jobs(JobFilter(entity="sms", from_ms=5, before_ms=5)), "before"),
        (jobs.reschedule("sms", 1, NOW - 1), "at"),
        (jobs.reschedule("sms", 1, datetime(2030, 1, 1)), "at"),
        (jobs.bulk("reschedule", JobFilter(entity="sms")), "operation"),
    ]
    before = await stored(jobs)
    for call, field in cases:
        with pytest.raises(InvalidJobRequest) as caught:
            await call
        assert caught.value.field == field, caught.value
    assert await stored(jobs) == before
    with pytest.raises(JobNotFound, match="sms 99: no such job"):
        await jobs.cancel("sms", 99)


async def test_list_jobs_pages_by_cursor_in_either_order_and_filters(jobs: JobService) -> None:
    everything = JobFilter(entity="sms")
    first = await jobs.list_jobs(everything, PageRequest(size=2))
    assert [j.id for j in first.jobs] == [1, 2] and first.next_cursor
    second = await jobs.list_jobs(everything, PageRequest(size=2, cursor=first.next_cursor))
    third = await jobs.list_jobs(everything, PageRequest(size=2, cursor=second.next_cursor))
    assert ([j.id for j in second.jobs], [j.id for j in third.jobs]) == ([3, 4], [5])
    assert third.next_cursor is None
    newest = await jobs.list_jobs(everything, PageRequest(size=3, order="newest"))
    assert [j.id for j in newest.jobs] == [5, 4, 3]
    await jobs.cancel("sms", 2)
    cancelled = JobFilter(entity="sms", states=frozenset({Status.CANCELLED}))
    assert [j.id for j in (await jobs.list_jobs(cancelled)).jobs] == [2]
    tomorrow = JobFilter(entity="sms", from_ms=NOW + 2 * HOUR, before_ms=NOW + 2 * DAY)
    assert [j.id for j in (await jobs.list_jobs(tomorrow)).jobs] == [2, 3, 4]


async def test_list_jobs_by_schedule_finds_its_occurrences(
    jobs: JobService, clock: FakeClock
) -> None:
    orders = client_of(jobs).repository("orders")
    at = EPOCH + timedelta(milliseconds=NOW + HOUR)
    ids = ["~s1.0@1", "~s1.2@5", "~s12.0@1", "own"]
    await orders.insert(
        [OrderEntity(order_id=i, expires_at=at, customer_id=1, amount_cents=1) for i in ids],
        now_ms=NOW,
    )
    page = await jobs.list_jobs(JobFilter(entity="orders", schedule=1))
    assert [(j.id, j.schedule) for j in page.jobs] == [("~s1.0@1", 1), ("~s1.2@5", 1)]
    assert (await jobs.get_job("orders", "own")).schedule is None


async def test_cancel_pause_resume_and_the_states_they_refuse(jobs: JobService) -> None:
    assert (await jobs.pause("sms", 1)).state == "PAUSED"
    await refused(jobs, jobs.pause("sms", 1), "it is PAUSED: it is PAUSED already")
    assert (await jobs.resume("sms", 1)).state == "PENDING"
    await refused(jobs, jobs.resume("sms", 1), "it is PENDING: it is not paused")
    assert (await jobs.cancel("sms", 1)).state == "CANCELLED"
    for call in (jobs.cancel, jobs.pause, jobs.resume, jobs.run_now):
        await refused(jobs, call("sms", 1), "it is CANCELLED")
    error = await refused(jobs, jobs.reschedule("sms", 1, NOW + DAY), "it was cancelled")
    assert (error.entity, error.job_id, error.operation, error.state) == (
        "sms",
        1,
        "reschedule",
        "CANCELLED",
    )


async def test_finished_jobs_refuse_every_change(jobs: JobService) -> None:
    await claim(jobs, NOW + HOUR + 1)
    repo = client_of(jobs).repository("sms")
    [row] = await repo.get(1)
    await repo.mark_done(11, [RowRef(1, row.at_ms)], fired_at_ms=NOW)
    for call in (jobs.cancel, jobs.pause, jobs.resume, jobs.run_now):
        await refused(jobs, call("sms", 1), "it is DONE: it fired already")


async def test_run_now_makes_a_job_due_now_and_moves_one_the_claims_do_not_reach(
    jobs: JobService,
) -> None:
    job = await jobs.run_now("sms", 2)
    assert (job.state, job.due_ms, job.scheduled_ms) == ("PENDING", NOW, NOW + 2 * HOUR)
    far = await jobs.run_now("sms", 5)  # three days ahead: a shard no claim looks in now
    assert (far.state, far.due_ms, far.scheduled_ms) == ("PENDING", NOW, NOW)
    await jobs.pause("sms", 3)
    assert (await jobs.run_now("sms", 3)).state == "PENDING"


async def test_reschedule_moves_the_job_between_shards(jobs: JobService) -> None:
    before = await jobs.get_job("sms", 1)
    after = await jobs.reschedule("sms", 1, NOW + 5 * DAY)
    assert (after.scheduled_ms, after.due_ms, after.state) == (
        NOW + 5 * DAY,
        NOW + 5 * DAY,
        "PENDING",
    )
    assert after.shard != before.shard
    assert [r.at_ms for r in await client_of(jobs).repository("sms").get(1)] == [NOW + 5 * DAY]
    await jobs.pause("sms", 2)
    moved = await jobs.reschedule("sms", 2, datetime(2026, 11, 30, tzinfo=UTC))
    assert moved.state == "PAUSED"


async def test_a_claimed_job_is_cancelled_or_paused_ahead_and_refused_close_to_its_time(
    jobs: JobService, clock: FakeClock
) -> None:
    await claim(jobs, NOW + 3 * HOUR + 1)
    paused = await jobs.pause("sms", 1)
    assert (paused.state, paused.claimed_by, paused.attempts) == ("PAUSED", None, 0)
    await refused(jobs, jobs.run_now("sms", 2), "node n1 holds it .epoch 11.; pause it first")
    await refused(jobs, jobs.reschedule("sms", 2, NOW + DAY), "pause it first")
    assert (await jobs.cancel("sms", 2)).state == "CANCELLED"
    clock.advance(3 * HOUR - 999)  # job 3 is due in 999 ms
    await refused(jobs, jobs.cancel("sms", 3), "due in 999 ms, under 1000 ms: it may be firing")
    await refused(jobs, jobs.pause("sms", 3), "it may be firing")


async def test_bulk_counts_on_a_dry_run_and_changes_only_what_the_operation_takes(
    jobs: JobService,
) -> None:
    await jobs.cancel("sms", 1)
    everything = JobFilter(entity="sms")
    before = await stored(jobs)
    dry = await jobs.bulk("pause", everything, dry_run=True)
    assert (dry.matched, dry.changed, dry.dry_run) == (4, 0, True)
    assert await stored(jobs) == before
    done = await jobs.bulk("pause", everything)
    assert (done.matched, done.changed) == (4, 4)
    assert {j.id: j.state for j in (await jobs.list_jobs(everything)).jobs} == {
        1: "CANCELLED", 2: "PAUSED", 3: "PAUSED", 4: "PAUSED", 5: "PAUSED"
    }  # fmt: skip
    tomorrow = JobFilter(entity="sms", from_ms=NOW + DAY, before_ms=NOW + 2 * DAY)
    assert (await jobs.bulk("resume", tomorrow)).changed == 1
    assert (await jobs.bulk("cancel", everything)).changed == 4
    assert (await jobs.bulk("cancel", everything)).matched == 0
