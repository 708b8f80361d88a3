"""Priorities and categories on the real stores: what the rows carry, the order of a backlog,
category limits, rate limits, pauses, and bad input refused with nothing stored.

Every test runs on each store of tests/conftest.py's ``backend``. The engine runs in manual mode
on a fake clock (``run_until_idle()``, ``clock.advance(ms)``), with one handler at a time where
the order is the point: a backlog is then exactly the jobs the first fetch found due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from infinite_scheduler import (
    InfiniteScheduler,
    Job,
    JobContext,
    JobOptionError,
    SchedulerClient,
    UnknownCategory,
)
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import SchedulerConfig, load_config
from repos.base import Claimant, ShardingRepository, Status, code_of, priority_of
from repos.entity import EncodedRow
from repos.examples import SMS, SmsEntity
from repos.shards import Granularity, bounds_of

pytestmark = pytest.mark.timeout(60)

Repo = ShardingRepository[Any, Any]
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000


class Backend(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def layout(self) -> Any: ...

    @property
    def driver(self) -> Any: ...


@dataclass(frozen=True)
class SqliteBackend:
    """For the wall-clock test: its loops take real time, the stores are covered above."""

    kind: str = "sqlite"
    layout: str = "multi-table"
    driver: str = "asyncmy"


def sms(i: int, at_ms: int) -> SmsEntity:
    return SmsEntity(
        id=i,
        scheduled_at=datetime.fromtimestamp(at_ms / 1000, UTC),
        phone="+15550100",
        message=f"m{i}",
    )


class Recorder:
    """Records each fire: job id, fired_ms (the engine's clock), and the loop time its handler
    started and ended, after `hold_s` of real time inside it."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.hold_s = hold_s
        self.fires: list[tuple[Any, int]] = []
        self.spans: dict[Any, tuple[float, float]] = {}
        self.changed = asyncio.Event()

    async def __call__(self, ctx: JobContext[Any]) -> None:
        started = time.monotonic()
        self.fires.append((ctx.job_id, ctx.fired_ms))
        if self.hold_s:
            await asyncio.sleep(self.hold_s)
        self.spans[ctx.job_id] = (started, time.monotonic())
        self.changed.set()

    def ids(self) -> list[Any]:
        return [job_id for job_id, _ in self.fires]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (an end before a start at the same instant)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def make_config(backend: Backend, backend_url: str) -> Callable[..., SchedulerConfig]:
    def build(**settings: Any) -> SchedulerConfig:
        handlers = {"timeout_s": 5.0, "concurrency": 1, **settings.pop("handlers", {})}
        return load_config(
            None,
            store={"url": backend_url, "layout": backend.layout, "driver": backend.driver},
            handlers=handlers,
            cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
            fetch_interval_s=0.2,
            lookahead_s=0.6,
            metrics_port=0,
            node_id="node-a",
            **settings,
        )

    return build


@pytest.fixture
async def store_jobs(
    make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> AsyncIterator[Callable[..., Any]]:
    """``await store_jobs(items, **settings)``: a SchedulerClient stores them (at the fake
    clock's now) as another process would, before an engine starts."""

    async def store(items: list[Any], **settings: Any) -> int:
        async with SchedulerClient(make_config(**settings), SMS, clock=clock) as client:
            return await client.schedule(items)

    yield store


def engine_of(config: SchedulerConfig, clock: FakeClock, handler: Any) -> InfiniteScheduler:
    engine = InfiniteScheduler(config, clock=clock, manual=True)
    engine.register(SMS, handler)
    return engine


# -- the rows ---------------------------------------------------------------------------------


async def test_the_store_keeps_each_jobs_priority_and_category_and_the_claim_reads_them(
    repo: Repo,
) -> None:
    day = Granularity.DAY.span_ms
    rows = [  # two shards: the multi-shard insert and claim carry them too
        EncodedRow(1, T0, b"{}", 900, "reports"),
        EncodedRow(2, T0 + 1, b"{}"),
        EncodedRow(3, T0 + day, b"{}", 7, ""),
        EncodedRow(4, T0 + day + 1, b"{}", 500, "mail"),
    ]
    assert await repo.insert_rows(rows, now_ms=T0) == 4
    claimed = await repo.claim_due(
        Claimant("node-a", 1), now_ms=T0, before_ms=T0 + 2 * day, since_ms=T0, limit=10
    )
    options = {job.key: (priority_of(job.options), code_of(job.options)) for job in claimed}
    assert {k: p for k, (p, _) in options.items()} == {1: 900, 2: 500, 3: 7, 4: 500}
    assert options[2] == (500, 0) and options[3][1] == 0
    assert options[1][1] != options[4][1] and 0 not in (options[1][1], options[4][1])
    assert [job.options for job in claimed if job.key == 2] == [0]  # the defaults: 0


async def test_shards_of_the_version_before_priorities_get_the_columns_at_open(
    old_shard: Callable[..., Any], make_repo: Callable[..., Any]
) -> None:
    bounds = bounds_of(T0, Granularity.DAY)
    await old_shard(bounds, [(1, T0, 0, 0, "", 0, 0)])
    repo = await make_repo()
    await repo.insert_rows([EncodedRow(2, T0 + 5, b"{}", 42, "reports")], now_ms=T0)
    claimed = await repo.claim_due(
        Claimant("node-a", 1), now_ms=T0, before_ms=T0 + 10, since_ms=T0, limit=10
    )
    assert [(job.key, priority_of(job.options)) for job in claimed] == [(1, 500), (2, 42)]


# -- order ------------------------------------------------------------------------------------


async def test_a_backlog_runs_by_priority_then_due_time(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    """Recovery after downtime: all of them overdue at the start, one handler at a time."""
    late = T0 - 10 * MINUTE
    items = [
        Job(sms(1, late), priority=100),
        Job(sms(2, late + 2), priority=900),
        sms(3, late + 1),  # 500
        Job(sms(4, late + 3), priority=1000),
        Job(sms(5, late), priority=900),  # ties with 2 on priority: earlier due first
        sms(6, late),
    ]
    assert await store_jobs(items) == 6
    recorder = Recorder()
    config = make_config(priority={"age_boost_per_minute": 0})
    async with engine_of(config, clock, recorder) as engine:
        await engine.run_until_idle()
    assert recorder.ids() == [4, 5, 2, 6, 3, 1]


async def test_the_age_boost_lifts_an_old_low_priority_job_over_a_new_high_one(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    """100 + 10 points x 60 minutes overdue = 700 > 600 + 10 x 1."""
    items = [
        Job(sms(1, T0 - MINUTE), priority=600),
        Job(sms(2, T0 - 60 * MINUTE), priority=100),
        Job(sms(3, T0 - 2 * MINUTE), priority=650),  # 670: after the old one too
    ]
    await store_jobs(items)
    recorder = Recorder()
    async with engine_of(make_config(), clock, recorder) as engine:  # 10 points a minute
        await engine.run_until_idle()
    assert recorder.ids() == [2, 3, 1]


async def test_without_age_boost_the_new_high_priority_job_goes_first(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    items = [Job(sms(1, T0 - MINUTE), priority=600), Job(sms(2, T0 - 60 * MINUTE), priority=100)]
    await store_jobs(items)
    recorder = Recorder()
    config = make_config(priority={"age_boost_per_minute": 0})
    async with engine_of(config, clock, recorder) as engine:
        await engine.run_until_idle()
    assert recorder.ids() == [1, 2]


async def test_a_ranked_claim_takes_the_due_rows_by_effective_priority_then_due_time(
    repo: Repo,
) -> None:
    """claim_due(boost_per_minute=...): the claim of a backlog. 10 points a minute at T0."""
    rows = [
        EncodedRow(1, T0 - 60 * MINUTE, b"{}", 100),  # 100 + 600 = 700
        EncodedRow(2, T0 - MINUTE, b"{}", 600),  # 610
        EncodedRow(3, T0 - 10 * MINUTE, b"{}"),  # 600: after 2, before 4
        EncodedRow(4, T0 - 2 * MINUTE, b"{}"),  # 520
        EncodedRow(5, T0 - 10 * MINUTE, b"{}", 100),  # 200
        EncodedRow(6, T0 - 10 * MINUTE + 1, b"{}"),  # 600 - a hair: after 3
        EncodedRow(7, T0 + 1, b"{}", 1000),  # not due: not in the backlog's claim
    ]
    assert await repo.insert_rows(rows, now_ms=T0) == 7
    claimant = Claimant("node-a", 1)

    async def claim(limit: int) -> list[Any]:
        jobs = await repo.claim_due(claimant, now_ms=T0, before_ms=T0, since_ms=T0 - 2 * MINUTE * 60,
                                    limit=limit, boost_per_minute=10)  # fmt: skip
        return [job.key for job in jobs]

    assert await claim(3) == [1, 2, 3]
    assert await claim(10) == [6, 4, 5]  # the rest, claimed once


async def test_a_ranked_claim_over_two_shards_merges_them_by_rank(repo: Repo) -> None:
    """Without age boost the rank is the priority: ties by due time, across the shards."""
    day = Granularity.DAY.span_ms
    rows = [
        EncodedRow(1, T0 - day, b"{}"),
        EncodedRow(2, T0 - day + 1, b"{}", 900),
        EncodedRow(3, T0 - 5, b"{}", 900),
        EncodedRow(4, T0 - 4, b"{}", 1000),
        EncodedRow(5, T0 - 3, b"{}"),
    ]
    assert await repo.insert_rows(rows, now_ms=T0 - day) == 5
    jobs = await repo.claim_due(
        Claimant("node-a", 1), now_ms=T0, before_ms=T0, since_ms=T0 - day, limit=4,
        boost_per_minute=0,
    )  # fmt: skip
    assert [job.key for job in jobs] == [4, 2, 3, 1]


async def test_high_priority_jobs_due_last_in_a_backlog_larger_than_a_node_holds_fire_first(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    """Recovery after downtime: 400 jobs overdue, claims of 10 (and bursts of 50, at most 100
    held): the three priority-1000 jobs due last are claimed by the first ranked claim
    (infinite_scheduler/fetcher.py), not after the 397 due before them."""
    late = T0 - 10 * MINUTE
    items: list[Any] = [sms(i, late + i) for i in range(397)]
    items += [Job(sms(i, late + i), priority=1000) for i in range(397, 400)]
    settings: dict[str, Any] = {"batch_size": 10, "max_jobs_per_fetch": 100}
    assert await store_jobs(items, **settings) == 400
    recorder = Recorder()
    async with engine_of(make_config(**settings), clock, recorder) as engine:
        await engine.run_until_idle(timeout_s=30)
    order = recorder.ids()
    assert sorted(order) == list(range(400))
    assert max(order.index(i) for i in (397, 398, 399)) < 20, order[:20]


# -- categories -------------------------------------------------------------------------------


async def test_a_category_never_runs_more_than_its_concurrency_and_the_others_go_on(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    settings: dict[str, Any] = {
        "categories": {"reports": {"concurrency": 2}},
        "handlers": {"concurrency": 8},
    }
    reports = [Job(sms(i, T0 - MINUTE), priority=900, category="reports") for i in range(12)]
    others = [sms(i, T0 - MINUTE + 1) for i in range(100, 110)]
    await store_jobs([*reports, *others], **settings)
    recorder = Recorder(hold_s=0.02)
    async with engine_of(make_config(**settings), clock, recorder) as engine:
        await engine.run_until_idle(timeout_s=10)
    assert len(recorder.fires) == 22
    report_spans = [recorder.spans[i] for i in range(12)]
    assert most_at_once(report_spans) == 2  # at its limit, never over it
    other_spans = [recorder.spans[i] for i in range(100, 110)]
    assert most_at_once(other_spans) >= 4  # not queued behind the reports
    assert max(e for _, e in other_spans) < max(e for _, e in report_spans)


async def test_a_rate_limited_category_starts_no_more_than_its_rate_in_any_second(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    settings: dict[str, Any] = {
        "categories": {"mail": {"rate_per_s": 2}},
        "handlers": {"concurrency": 4},
    }
    await store_jobs([Job(sms(i, T0 - 1000), category="mail") for i in range(6)], **settings)
    await store_jobs([sms(i, T0 - 1000) for i in range(50, 53)], **settings)
    recorder = Recorder()
    async with engine_of(make_config(**settings), clock, recorder) as engine:
        await engine.run_until_idle()
        assert sorted(recorder.ids()) == [0, 50, 51, 52]  # one mail now, the rest go on
        for _ in range(12):
            clock.advance(250)
            await engine.run_until_idle()
    mail = sorted(fired for job_id, fired in recorder.fires if job_id < 50)
    assert len(mail) == 6
    assert all(sum(t <= u < t + 1000 for u in mail) <= 2 for t in mail)
    assert mail == [T0 + 500 * n for n in range(6)]  # as soon as the rate allows


async def test_a_paused_category_waits_and_runs_once_resumed(
    store_jobs: Callable[..., Any],
    make_config: Callable[..., SchedulerConfig],
    clock: FakeClock,
    repo: Repo,
) -> None:
    settings: dict[str, Any] = {"categories": {"reports": {}}, "handlers": {"concurrency": 4}}
    await store_jobs([Job(sms(i, T0 + 300), category="reports") for i in range(3)], **settings)
    await store_jobs([sms(i, T0 + 300) for i in range(10, 12)], **settings)
    recorder = Recorder()
    async with engine_of(make_config(**settings), clock, recorder) as engine:
        await engine.categories.pause("reports")
        clock.advance(400)
        await engine.run_until_idle()
        assert sorted(recorder.ids()) == [10, 11]
        waiting = engine.metrics.registry.get_sample_value(
            "infinite_scheduler_category_waiting", {"category": "reports"}
        )
        paused = engine.metrics.registry.get_sample_value(
            "infinite_scheduler_category_paused", {"category": "reports"}
        )
        assert (waiting, paused) == (3, 1)
        rows = [(await repo.get(i))[0] for i in range(3)]
        assert {(r.status, r.last_error) for r in rows} == {(Status.CLAIMED, None)}  # waiting
        clock.advance(60_000)
        await engine.run_until_idle()
        assert len(recorder.fires) == 2  # still paused, however long
        await engine.categories.resume("reports")
        await engine.run_until_idle()
    assert sorted(recorder.ids()) == [0, 1, 2, 10, 11]
    assert {(await repo.get(i))[0].status for i in range(3)} == {Status.DONE}


# -- bad input --------------------------------------------------------------------------------


async def test_jobs_of_an_unknown_category_are_refused_and_nothing_is_stored(
    store_jobs: Callable[..., Any],
    make_config: Callable[..., SchedulerConfig],
    clock: FakeClock,
    repo: Repo,
) -> None:
    settings: dict[str, Any] = {"categories": {"reports": {}}}
    items = [sms(1, T0 + 100), Job(sms(2, T0 + 100), category="reprots")]
    with pytest.raises(JobOptionError, match="field 'category'.*'reprots'.*configured: 'reports'"):
        await store_jobs(items, **settings)
    async with engine_of(make_config(**settings), clock, Recorder()) as engine:
        with pytest.raises(JobOptionError, match="field 'category'"):
            await engine.schedule(items)
        with pytest.raises(UnknownCategory, match="'nope' is not configured.*'reports'"):
            await engine.categories.pause("nope")
    assert [await repo.get(i) for i in (1, 2)] == [[], []]


async def test_a_priority_out_of_range_is_refused_before_anything_is_stored(
    store_jobs: Callable[..., Any], repo: Repo
) -> None:
    with pytest.raises(JobOptionError, match="field 'priority'.*1..1000"):
        await store_jobs([sms(1, T0 + 100), Job(sms(2, T0 + 100), priority=0)])
    assert await repo.get(1) == []


async def test_jobs_a_paused_category_holds_back_leave_room_to_claim_the_others(
    store_jobs: Callable[..., Any], make_config: Callable[..., SchedulerConfig], clock: FakeClock
) -> None:
    """Due jobs a node holds count against its burst cap (fetcher.py, _room_for_due): 30 of a
    paused category, over a cap of 20, must not keep the next ones in the store."""
    settings: dict[str, Any] = {
        "categories": {"reports": {}},
        "handlers": {"concurrency": 4},
        "batch_size": 2,
    }
    await store_jobs([Job(sms(i, T0 + 300), category="reports") for i in range(30)], **settings)
    # Beyond the window of the turn that finds the reports due (it fetches before it fires).
    await store_jobs([sms(i, T0 + 1500) for i in range(100, 103)], **settings)
    recorder = Recorder()
    async with engine_of(make_config(**settings), clock, recorder) as engine:
        await engine.categories.pause("reports")
        clock.advance(500)
        await engine.run_until_idle()
        for _ in range(2):
            clock.advance(600)
            await engine.run_until_idle()
        assert sorted(recorder.ids()) == [100, 101, 102]
        await engine.categories.resume("reports")
        await engine.run_until_idle()
    assert len(recorder.fires) == 33


@pytest.mark.parametrize("backend", [SqliteBackend()], indirect=True, ids=["sqlite"])
async def test_the_running_engine_starts_a_rate_limited_categorys_jobs_when_its_rate_allows(
    backend: Backend, make_config: Callable[..., SchedulerConfig]
) -> None:
    """Real loops on the wall clock: nothing else wakes the dispatcher between the starts."""
    settings: dict[str, Any] = {"categories": {"mail": {"rate_per_s": 20}}}
    config = make_config(**settings, handlers={"concurrency": 4})
    now_ms = time.time_ns() // 1_000_000
    async with SchedulerClient(config, SMS) as client:
        await client.schedule([Job(sms(i, now_ms - 1000), category="mail") for i in range(5)])
    recorder = Recorder()
    engine = InfiniteScheduler(config)
    engine.register(SMS, recorder)
    async with engine:
        async with asyncio.timeout(5):
            while len(recorder.spans) < 5:
                recorder.changed.clear()
                await recorder.changed.wait()
    starts = sorted(started for started, _ in recorder.spans.values())
    assert all(b - a >= 0.045 for a, b in zip(starts, starts[1:], strict=False))
