"""Job control across the store: category pauses every node honours (stored, surviving
restarts), blockouts of one-shot jobs as they fire (delay and skip; global, entity type and
category scopes), and unknown categories refused by schedules and blockouts.

The engines run in manual mode on a fake clock (tests/integration/test_engine.py explains it),
but for the two-node test, whose nodes run their loops: a pause must reach the other node by
its own heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import pytest

from infinite_scheduler import InfiniteScheduler, Job, JobContext, SchedulerClient, UnknownCategory
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import SchedulerConfig, load_config
from repos.base import ShardingRepository, Status
from repos.errors import InvalidSchedule
from repos.examples import SMS, SmsEntity
from repos.registry import make_schedule_store
from repos.schedules import ScheduleStore

pytestmark = pytest.mark.timeout(60)

Repo = ShardingRepository[Any, Any]
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
S = 1000
CATEGORIES: dict[str, dict[str, Any]] = {"reports": {}, "mail": {}}


def sms(i: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


class Recorder:
    """Records (job id, scheduled ms, fired ms, attempt) per fire."""

    def __init__(self) -> None:
        self.fires: list[tuple[Any, int, int, int]] = []
        self.changed = asyncio.Event()

    async def __call__(self, ctx: JobContext[Any]) -> None:
        self.fires.append((ctx.job_id, ctx.scheduled_ms, ctx.fired_ms, ctx.attempt))
        self.changed.set()

    def ids(self) -> list[Any]:
        return sorted(job_id for job_id, *_ in self.fires)


# -- the store: category pauses on every store combination ----------------------------------


@pytest.fixture
async def schedule_store(backend: Any, backend_url: str) -> AsyncIterator[ScheduleStore]:
    store = make_schedule_store(backend_url, driver=backend.driver)
    await store.open()
    try:
        yield store
    finally:
        assert store.checked_out() == 0  # type: ignore[attr-defined]
        await store.close()


async def test_category_pauses_are_stored_idempotent_and_listed(
    schedule_store: ScheduleStore,
) -> None:
    assert await schedule_store.paused_categories() == {}
    await schedule_store.set_category_paused("reports", True, now_ms=T0)
    await schedule_store.set_category_paused("reports", True, now_ms=T0 + 5)  # keeps the first
    await schedule_store.set_category_paused("mail", True, now_ms=T0 + 9)
    assert await schedule_store.paused_categories() == {"mail": T0 + 9, "reports": T0}
    await schedule_store.set_category_paused("reports", False, now_ms=T0 + 10)
    await schedule_store.set_category_paused("reports", False, now_ms=T0 + 11)
    await schedule_store.set_category_paused("never", False, now_ms=T0 + 12)
    assert await schedule_store.paused_categories() == {"mail": T0 + 9}


async def test_a_store_made_before_category_pauses_gets_the_table_at_open(
    backend: Any, backend_url: str, schedule_store: ScheduleStore, raw_sql: Any
) -> None:
    await raw_sql(schedule_store, "DROP TABLE category_pauses")  # the earlier version's store
    again = make_schedule_store(backend_url, driver=backend.driver)
    await again.open()
    try:
        await again.set_category_paused("mail", True, now_ms=T0)
        assert await again.paused_categories() == {"mail": T0}
    finally:
        await again.close()


# -- engines on the fake clock ----------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def config_of(store_url: str) -> Callable[..., SchedulerConfig]:
    def build(**settings: Any) -> SchedulerConfig:
        return load_config(
            None,
            store={"url": store_url},
            handlers={"timeout_s": 5.0, "concurrency": 4},
            cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
            categories=CATEGORIES,
            fetch_interval_s=0.2,
            lookahead_s=0.6,
            metrics_port=0,
            **{"node_id": "node-a", **settings},
        )

    return build


@pytest.fixture
async def engines(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock
) -> AsyncIterator[Callable[..., InfiniteScheduler]]:
    """Manual engines on the test's store and clock, closed at the end if still open."""
    async with AsyncExitStack() as stack:

        def make(handler: Any, **settings: Any) -> InfiniteScheduler:
            engine = InfiniteScheduler(config_of(**settings), clock=clock, manual=True)
            engine.register(SMS, handler)
            stack.push_async_callback(_close, engine)
            return engine

        yield make


async def _close(engine: InfiniteScheduler) -> None:
    if engine._running:
        await engine.__aexit__(None, None, None)


async def run_for(engine: InfiniteScheduler, clock: FakeClock, total_ms: int, step_ms: int) -> None:
    for _ in range(total_ms // step_ms):
        await engine.run_until_idle()
        clock.advance(step_ms)
    await engine.run_until_idle()


async def test_a_paused_category_waits_across_a_restart_and_runs_once_resumed(
    engines: Callable[..., InfiniteScheduler], clock: FakeClock
) -> None:
    recorder = Recorder()
    async with engines(recorder) as engine:
        await engine.categories.pause("reports")
        assert list(await engine.categories.paused()) == ["reports"]
        await engine.schedule(
            [Job(sms(i, T0 + 300), category="reports") for i in range(3)] + [sms(10, T0 + 300)]
        )
        await run_for(engine, clock, 2 * S, 500)
        assert recorder.ids() == [10]
    # A new process on the same store: the pause is the store's, not the last process's.
    async with engines(recorder) as engine:
        await run_for(engine, clock, 60 * S, 10 * S)
        assert recorder.ids() == [10]
        with pytest.raises(UnknownCategory, match="'nope' is not configured"):
            await engine.categories.resume("nope")
        await engine.categories.resume("reports")
        await engine.run_until_idle()
        assert recorder.ids() == [0, 1, 2, 10]
        assert await engine.categories.paused() == {}


# -- blockouts of one-shot jobs ---------------------------------------------------------------

SCOPES = [("global", ""), ("entity", "sms"), ("category", "reports")]


@pytest.mark.parametrize(("scope", "target"), SCOPES, ids=[s for s, _ in SCOPES])
async def test_a_blockout_delays_one_shot_jobs_to_its_end_once_and_keeps_the_attempt(
    engines: Callable[..., InfiniteScheduler], clock: FakeClock, scope: str, target: str
) -> None:
    recorder = Recorder()
    start, end = T0 + 10 * S, T0 + 40 * S
    async with engines(recorder) as engine:
        await engine.schedules.add_blockout(
            "deploy", {"start_ms": start, "end_ms": end}, scope=scope, target=target
        )
        blocked = [Job(sms(i, T0 + 20 * S + i), category="reports") for i in range(3)]
        await engine.schedule([*blocked, sms(7, T0 + 5 * S), sms(8, end + 5 * S)])
        if scope == "category":  # a job of no category goes on inside the window
            await engine.schedule([sms(9, T0 + 25 * S)])
        await run_for(engine, clock, 30 * S, 5 * S)
        repo = engine.repositories["sms"]
        [row] = await repo.get(1)
        assert (row.status, row.due_ms, row.attempts, row.fired_at_ms) == (
            Status.PENDING,
            end,
            0,
            None,
        )
        assert row.last_error == f"blockout 'deploy': delayed to {end}"
    # Stored: a restart keeps the new time.
    async with engines(recorder) as engine:
        await run_for(engine, clock, 30 * S, 5 * S)
    fired = {job_id: (fired_ms, attempt) for job_id, _, fired_ms, attempt in recorder.fires}
    assert [fired[i] for i in range(3)] == [(end, 1)] * 3  # once each, at the end, attempt 1
    assert len(recorder.fires) == len(fired)
    assert fired[7][0] == T0 + 5 * S and fired[8][0] == end + 5 * S
    if scope == "category":
        assert fired[9][0] == T0 + 25 * S


@pytest.mark.parametrize(("scope", "target"), SCOPES, ids=[s for s, _ in SCOPES])
async def test_a_skip_blockout_marks_one_shot_jobs_missed_with_its_name(
    engines: Callable[..., InfiniteScheduler], clock: FakeClock, scope: str, target: str
) -> None:
    recorder = Recorder()
    async with engines(recorder) as engine:
        await engine.schedules.add_blockout(
            "quiet", {"start_ms": T0 + 10 * S, "end_ms": T0 + 40 * S}, scope=scope, target=target,
            policy="skip",
        )  # fmt: skip
        await engine.schedule([Job(sms(1, T0 + 20 * S), category="reports"), sms(2, T0 + 50 * S)])
        await run_for(engine, clock, 60 * S, 5 * S)
        [row] = await engine.repositories["sms"].get(1)
    assert (row.status, row.last_error) == (Status.MISSED, "blockout 'quiet': skipped")
    assert recorder.ids() == [2]


async def test_a_blockout_of_another_entity_type_or_category_lets_jobs_fire(
    engines: Callable[..., InfiniteScheduler], clock: FakeClock
) -> None:
    recorder = Recorder()
    async with engines(recorder) as engine:
        window = {"start_ms": T0, "end_ms": T0 + 60 * S}
        await engine.schedules.add_blockout("o", window, scope="entity", target="orders")
        await engine.schedules.add_blockout("m", window, scope="category", target="mail")
        await engine.schedules.add_blockout("s", window, scope="schedule", target="nightly")
        await engine.schedule([Job(sms(1, T0 + 5 * S), category="reports"), sms(2, T0 + 5 * S)])
        await run_for(engine, clock, 10 * S, 5 * S)
    assert recorder.ids() == [1, 2]


# -- unknown categories -----------------------------------------------------------------------

HI = {"phone": "+15550100", "message": "hi"}


async def test_schedules_and_blockouts_refuse_an_unknown_category_storing_nothing(
    engines: Callable[..., InfiniteScheduler],
) -> None:
    async with engines(Recorder()) as engine:
        book = engine.schedules
        await book.create("kept", SMS, {"kind": "rate", "every_s": 60}, HI, category="reports")
        before = await book.list()
        with pytest.raises(InvalidSchedule, match="'reprots': unknown category") as caught:
            await book.create("new", SMS, {"kind": "rate", "every_s": 60}, HI, category="reprots")
        assert caught.value.field == "category"
        with pytest.raises(InvalidSchedule, match="configured: 'mail', 'reports'") as caught:
            await book.update("kept", category="nope")
        assert caught.value.field == "category"
        assert await book.list() == before
        window = {"start_ms": T0, "end_ms": T0 + S}
        with pytest.raises(InvalidSchedule, match="'nope': unknown category") as caught:
            await book.add_blockout("b", window, scope="category", target="nope")
        assert caught.value.field == "target"
        assert await book.blockouts() == []
        assert (await book.update("kept", category="mail")).row.category == "mail"


# -- two nodes, their loops running, on one MariaDB -------------------------------------------


@pytest.mark.mysql
@pytest.mark.parametrize("store_url", ["mysql"], indirect=True)
async def test_a_pause_through_one_node_stops_the_other_within_a_heartbeat(
    config_of: Callable[..., SchedulerConfig],
) -> None:
    recorder = Recorder()
    a = InfiniteScheduler(config_of(node_id="node-a"))
    b = InfiniteScheduler(config_of(node_id="node-b"))
    for engine in (a, b):
        engine.register(SMS, recorder)
    async with a, b, SchedulerClient(config_of(), SMS) as client:
        await a.categories.pause("reports")
        await asyncio.sleep(0.3)  # b's next heartbeat (0.1 s) has read it
        now_ms = time.time_ns() // 1_000_000
        jobs = [Job(sms(i, now_ms + 200), category="reports") for i in range(20)]
        await client.schedule([*jobs, sms(100, now_ms + 200)])
        await asyncio.sleep(1.5)  # both nodes claimed what is due (one or the other)
        assert recorder.ids() == [100]
        assert a.held() + b.held() == 20  # waiting on the nodes, neither dropped nor failed
        await client.categories.resume("reports")
        async with asyncio.timeout(5):
            while len(recorder.fires) < 21:
                recorder.changed.clear()
                await recorder.changed.wait()
    assert recorder.ids() == [*range(20), 100]
