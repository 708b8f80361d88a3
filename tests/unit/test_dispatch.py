"""The dispatcher: as many workers as handlers waiting, `concurrency` at most, one watchdog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infinite_scheduler.acker import Acker
from infinite_scheduler.clock import SystemClock
from infinite_scheduler.decisions import RetryPolicy
from infinite_scheduler.dispatch import Dispatcher
from infinite_scheduler.jobs import JobContext, Lane
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.wheel import TimerWheel
from repos.base import ClaimedJob, Failure, ShardPolicy
from repos.examples import SMS, SmsEntity
from repos.registry import make_repository

pytestmark = pytest.mark.timeout(30)

AT_MS = 1_800_000_000_000


class RecordingAcker(Acker):
    """The real acker, remembering every failure it was handed (it never flushes here)."""

    def __init__(self) -> None:
        super().__init__(node_id="node-a", epoch=1, clock=SystemClock(), batch_size=1000)
        self.failures: list[Failure] = []

    def failed(self, lane: Lane, failure: Failure) -> None:
        self.failures.append(failure)
        super().failed(lane, failure)


def setup(
    tmp_path: Path,
    handler: Callable[[JobContext[SmsEntity]], Awaitable[None]],
    *,
    concurrency: int = 1000,
    timeout_s: float = 30.0,
) -> tuple[Dispatcher, Lane, RecordingAcker]:
    metrics = Metrics()
    repo = make_repository(f"sqlite:///{tmp_path / 'unused.db'}", SMS, ShardPolicy())
    lane = Lane(
        spec=SMS,
        repo=repo,
        handler=handler,
        metrics=metrics.for_entity("sms"),
        wheel=TimerWheel(now_ms=AT_MS),
    )
    acker = RecordingAcker()
    dispatcher = Dispatcher(
        acker=acker,
        clock=SystemClock(),
        metrics=metrics,
        retry=RetryPolicy(max_attempts=1),
        concurrency=concurrency,
        timeout_s=timeout_s,
    )
    return dispatcher, lane, acker


def jobs(n: int) -> list[ClaimedJob]:
    at = datetime.fromtimestamp(AT_MS / 1000, UTC)
    payload = SMS.encode(SmsEntity(id=0, scheduled_at=at, phone="+1", message="m")).payload
    return [ClaimedJob(i, AT_MS, AT_MS, 1, payload) for i in range(n)]


async def settle(dispatcher: Dispatcher, timeout_s: float = 10.0) -> None:
    """Until every job handed over has finished and every worker has exited."""
    async with asyncio.timeout(timeout_s):
        while True:
            if not (dispatcher.backlog or dispatcher.workers):
                return
            await asyncio.sleep(0.005)


async def test_handlers_that_never_wait_share_one_worker(tmp_path: Path) -> None:
    seen: list[int | str] = []
    most_workers = 0

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        nonlocal most_workers
        most_workers = max(most_workers, dispatcher.workers)
        seen.append(ctx.job_id)

    dispatcher, lane, _ = setup(tmp_path, handler)
    dispatcher.submit(lane, jobs(2000))
    await settle(dispatcher)
    assert seen == list(range(2000))  # due order kept
    assert most_workers == 1  # was one task per job, up to concurrency
    assert dispatcher.succeeded == 2000


async def test_handlers_that_wait_run_side_by_side_up_to_concurrency(tmp_path: Path) -> None:
    running = most = 0

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1

    dispatcher, lane, _ = setup(tmp_path, handler, concurrency=20)
    started = time.monotonic()
    dispatcher.submit(lane, jobs(100))
    await settle(dispatcher)
    assert most == 20
    assert dispatcher.succeeded == 100
    assert time.monotonic() - started < 100 * 0.05 / 4  # not one after another


async def test_a_job_handed_over_later_does_not_wait_behind_a_waiting_handler(
    tmp_path: Path,
) -> None:
    started: dict[int | str, float] = {}

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        started[ctx.job_id] = time.monotonic()
        await asyncio.sleep(1.0 if ctx.job_id == 0 else 0)

    dispatcher, lane, _ = setup(tmp_path, handler)
    first, second = jobs(2)
    dispatcher.submit(lane, [first])
    await asyncio.sleep(0.05)
    dispatcher.submit(lane, [second])
    await asyncio.sleep(0.05)
    assert started[1] - started[0] < 0.5  # started beside job 0, not after it
    await settle(dispatcher)


async def test_a_handler_past_its_timeout_fails_and_the_worker_goes_on(tmp_path: Path) -> None:
    finished: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        if ctx.job_id in (1, 3):
            await asyncio.sleep(60)
        if ctx.job_id == 2:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                pass  # swallows the watchdog's cancel: it did finish, late
        finished.append(ctx.job_id)

    dispatcher, lane, acker = setup(tmp_path, handler, concurrency=1, timeout_s=0.2)
    started = time.monotonic()
    dispatcher.submit(lane, jobs(5))
    await settle(dispatcher)
    took = time.monotonic() - started
    assert finished == [0, 2, 4]
    assert [f.ref.key for f in acker.failures] == [1, 3]
    assert all(f.error == "handler timed out after 0.2s" for f in acker.failures)
    assert 3 * 0.2 <= took < 3 * (0.2 + 0.05) + 0.5  # overrun at most a quarter of timeout_s
    assert dispatcher.failed == 2 and dispatcher.succeeded == 3


async def test_drain_cancels_stuck_handlers_and_is_not_taken_for_a_timeout(tmp_path: Path) -> None:
    async def handler(ctx: JobContext[SmsEntity]) -> None:
        await asyncio.sleep(60)

    dispatcher, lane, acker = setup(tmp_path, handler, concurrency=3)
    dispatcher.submit(lane, jobs(5))
    await asyncio.sleep(0.05)
    assert dispatcher.running == 3
    assert len(dispatcher.take_waiting()) == 2
    assert await dispatcher.drain(0.1) == 3
    assert dispatcher.workers == 0 and acker.failures == []


async def test_drain_starts_none_of_the_jobs_waiting_which_stay_for_take_waiting(
    tmp_path: Path,
) -> None:
    """A graceful stop drains the handlers running, then hands back the jobs still waiting
    (the engine's _unfired: take_waiting). A worker done with its job during the drain must
    not start a waiting one: started late, it may still run when the drain times out, be cut
    off after its side effect, handed back, and fired again by another node."""
    started: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        started.append(ctx.job_id)
        await asyncio.sleep(0.2)

    dispatcher, lane, _ = setup(tmp_path, handler, concurrency=1)
    dispatcher.submit(lane, jobs(5))
    await asyncio.sleep(0.05)
    assert started == [0]
    assert await dispatcher.drain(0.5) == 0  # job 0 ran to its end
    assert started == [0]
    assert [job.key for _, job in dispatcher.take_waiting()] == [1, 2, 3, 4]


async def test_a_job_handed_over_as_the_last_worker_leaves_still_runs(tmp_path: Path) -> None:
    seen: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        seen.append(ctx.job_id)

    dispatcher, lane, _ = setup(tmp_path, handler)
    first, second = jobs(2)
    dispatcher.submit(lane, [first])
    await asyncio.sleep(0)  # the worker runs job 0 and finds the FIFO empty
    dispatcher.submit(lane, [second])  # before its done-callback has run
    await settle(dispatcher, timeout_s=2)
    assert seen == [0, 1]


async def test_drain_stops_a_worker_whose_handler_the_watchdog_cancelled_too(
    tmp_path: Path,
) -> None:
    started: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        started.append(ctx.job_id)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # cleanup, during which shutdown cancels as well
            raise

    dispatcher, lane, _ = setup(tmp_path, handler, concurrency=1, timeout_s=0.1)
    dispatcher.submit(lane, jobs(5))
    await asyncio.sleep(0.2)  # the watchdog has cancelled job 0; its cleanup runs
    began = time.monotonic()
    assert await dispatcher.drain(0.01) == 1
    assert time.monotonic() - began < 0.3
    assert started == [0]  # the worker stopped: no job after the cut-off
    assert dispatcher.workers == 0
