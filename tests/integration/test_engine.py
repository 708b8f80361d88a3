"""The engine against real stores: order, exactly-once, fire-once-now, retries, shutdown.

Every test runs on each store of tests/conftest.py's ``backend`` (SQLite; MySQL multi-table and
partitioned on asyncmy and aiomysql). Unless it says otherwise, the engine runs in manual mode
on a fake clock: ``await engine.run_until_idle()`` does the loops' work until nothing is due at
the clock's now and nothing is in flight, and ``clock.advance(ms)`` moves time. So what fires,
when and in which order is exact, and no test sleeps to let the engine catch up. The rest (the
``wall`` ones) are about the loops themselves or a store that fails for a while, and run the
real loops on the wall clock.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import (
    EngineNotRunning,
    HandlerMissing,
    PayloadTooLarge,
    PortUnavailable,
)
from infinite_scheduler.fetcher import BURST_BATCHES, BURST_HELD_BATCHES
from infinite_scheduler.jobs import JobContext
from repos.base import Claimant, ShardingRepository, Status
from repos.cluster import Membership, NodeState
from repos.entity import EntitySpec
from repos.errors import SingleNodeStore, StoreUnavailable
from repos.examples import ORDERS, SMS, NotificationEntity, OrderEntity, SmsEntity
from repos.registry import make_repository
from repos.shards import Granularity, bounds_of

pytestmark = pytest.mark.timeout(30)

Repo = ShardingRepository[Any, Any]
OpenMembership = Callable[[], Awaitable[Membership]]
RawSql = Callable[[Any, str], Awaitable[None]]
#: The fake clock's start, 2026-11-22 12:00 UTC: any fixed instant, the stores take the time
#: from the engine (and the seeding repository from the test).
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
SECOND = 1000


class Backend(Protocol):
    """tests/conftest.py's `backend`: the adapter configuration of the test's store."""

    @property
    def kind(self) -> str: ...

    @property
    def layout(self) -> Any: ...

    @property
    def driver(self) -> Any: ...


@dataclass(frozen=True)
class StoreBackend:
    """SQLite unless told another `kind`."""

    kind: str = "sqlite"
    layout: str = "multi-table"
    driver: str = "asyncmy"


#: For the tests of handler threads and of the event loop blocked: what they check takes real
#: time and never reaches the store (seeding and acks aside, which every other test covers on
#: all five stores), so they run on SQLite only rather than wait the same seconds five times.
SQLITE_ONLY = pytest.mark.parametrize("backend", [StoreBackend()], indirect=True, ids=["sqlite"])
#: Several nodes on one store: MySQL (SQLite runs one).
MYSQL_ONLY = pytest.mark.parametrize(
    "backend",
    [pytest.param(StoreBackend(kind="mysql"), marks=pytest.mark.mysql)],
    indirect=True,
    ids=["mysql-multi-asyncmy"],
)


@dataclass(frozen=True, kw_only=True)
class SmsWithCountry:
    """SmsEntity plus a field stored rows do not have: their payload no longer decodes."""

    id: int
    scheduled_at: datetime
    phone: str
    message: str
    country: str


SMS_V2 = EntitySpec.of(SmsWithCountry, name="sms")


class Recorder:
    """A handler that records every fire: (id, attempt, due_ms, fired_ms), in fire order, the
    times read from the engine's clock; and what each fire decoded."""

    def __init__(self, fail_attempts: int = 0, fail_ids: frozenset[int] = frozenset()) -> None:
        self.fires: list[tuple[Any, int, int, int]] = []
        self.messages: dict[Any, str] = {}
        self.fail_attempts = fail_attempts
        self.fail_ids = fail_ids
        self.changed = asyncio.Event()

    async def __call__(self, ctx: JobContext[Any]) -> None:
        self.fires.append((ctx.job_id, ctx.attempt, ctx.due_ms, ctx.fired_ms))
        self.messages[ctx.job_id] = ctx.entity.message
        self.changed.set()
        if ctx.attempt <= self.fail_attempts or ctx.job_id in self.fail_ids:
            raise RuntimeError(f"boom {ctx.job_id}/{ctx.attempt}")

    def ids(self) -> list[Any]:
        return [f[0] for f in self.fires]

    async def wait_for(self, count: int, timeout_s: float = 3) -> None:
        """Wall-clock tests: until `count` fires were recorded."""
        async with asyncio.timeout(timeout_s):
            while len(self.fires) < count:
                self.changed.clear()
                await self.changed.wait()


def sms(i: int, at_ms: int, message: str | None = None) -> SmsEntity:
    return SmsEntity(
        id=i,
        scheduled_at=datetime.fromtimestamp(at_ms / 1000, UTC),
        phone="+15550100",
        message=f"m{i}" if message is None else message,
    )


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


EngineFactory = Callable[..., InfiniteScheduler]


@pytest.fixture
async def engine_factory(
    backend: Backend, backend_url: str, clock: FakeClock
) -> AsyncIterator[EngineFactory]:
    """Engines on the test's store: manual mode on `clock`, or with `wall=True` the real loops
    on the wall clock at fast cadences. Settings may be overridden."""

    def build(
        *,
        handler: Any = None,
        spec: EntitySpec[Any, Any] = SMS,
        repository: Repo | None = None,
        wall: bool = False,
        **settings: Any,
    ) -> InfiniteScheduler:
        defaults: dict[str, Any] = {
            "fetch_interval_s": 0.2,
            "lookahead_s": 0.6,
            "metrics_port": 0,
            "node_id": "node-a",
        }
        handlers = {
            "timeout_s": 2.0,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "drain_timeout_s": 1.0,
        }
        handlers.update(settings.pop("handlers", {}))
        # Inside the 0.6 s window; a manual engine measures them on the fake clock.
        cluster = {"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5}
        cluster.update(settings.pop("cluster", {}))
        store = {
            "url": backend_url,
            "layout": backend.layout,
            "driver": backend.driver,
            **settings.pop("store", {}),
        }
        config = load_config(
            None, store=store, handlers=handlers, cluster=cluster, **{**defaults, **settings}
        )
        engine = (
            InfiniteScheduler(config)
            if wall
            else InfiniteScheduler(config, clock=clock, manual=True)
        )
        engine.register(spec, handler, repository=repository)
        return engine

    yield build


@pytest.fixture
def engine_repo(backend: Backend, backend_url: str) -> Callable[[], Repo]:
    """A repository for the engine itself (unopened: the engine opens and closes it), on the
    test's store, for the tests that wrap it."""

    def build() -> Repo:
        config = load_config(None, store={"url": backend_url}, metrics_port=0)
        return make_repository(
            backend_url,
            SMS,
            config.shard_policy,
            layout=backend.layout,
            driver=backend.driver,
        )

    return build


async def statuses(repo: Repo, ids: list[int]) -> dict[int, Status | int]:
    result = {}
    for i in ids:
        rows = await repo.get(i)
        result[i] = rows[0].status
    return result


async def rows_of(repo: Repo, ids: list[int]) -> set[tuple[Status | int, str | None, int]]:
    """(status, claimed_by, attempts) of the rows with these ids."""
    rows = [(await repo.get(i))[0] for i in ids]
    return {(r.status, r.claimed_by, r.attempts) for r in rows}


# -- order, fire-once-now, misfire ----------------------------------------------------------


async def test_jobs_fire_once_in_due_order_exactly_at_their_time(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    """Due 400..760 ms from now, beyond the first fetch's 600 ms window: later rounds claim
    the rest, and none fires before its time."""
    order = [7, 3, 9, 1, 5, 2, 8, 4, 6, 0]
    due = {i: T0 + 400 + 40 * i for i in order}
    await repo.insert([sms(i, due[i]) for i in order], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        for _ in range(80):
            await engine.run_until_idle()
            assert all(fired <= clock.now_ms() for *_, fired in recorder.fires)
            clock.advance(10)
    assert recorder.fires == [(i, 1, due[i], due[i]) for i in sorted(order)]
    assert set((await statuses(repo, order)).values()) == {Status.DONE}


async def test_the_loops_fire_jobs_once_in_due_order_and_never_early(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """Wall: the same through the real fetcher, wheel and acker loops."""
    base = wall_ms() + 400
    order = [7, 3, 9, 1, 5, 2, 8, 4, 6, 0]
    await repo.insert([sms(i, base + 40 * i) for i in order], now_ms=wall_ms())
    recorder = Recorder()
    async with engine_factory(handler=recorder, wall=True):
        await recorder.wait_for(10)
    assert recorder.ids() == sorted(order)
    for _, _, due_ms, fired_ms in recorder.fires:
        assert fired_ms >= due_ms
    async with asyncio.timeout(3):  # the acks are flushed at the latest by the shutdown
        assert set((await statuses(repo, order)).values()) == {Status.DONE}


async def test_job_scheduled_inside_the_window_is_held_without_waiting_for_a_fetch(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    recorder = Recorder()
    engine = engine_factory(
        handler=recorder, fetch_interval_s=20, lookahead_s=30, misfire_horizon_s=3600
    )
    async with engine:
        assert await engine.schedule([sms(1, T0 + 300)]) == 1
        assert engine.held() == 1 and engine.parts.fetcher.rounds == 1  # the start's only
        [row] = await repo.get(1)
        assert (row.status, row.claimed_by, row.attempts) == (Status.CLAIMED, "node-a", 1)
        clock.advance(300)
        await engine.run_until_idle()
    assert recorder.fires == [(1, 1, T0 + 300, T0 + 300)]


async def test_jobs_due_while_stopped_fire_once_at_start_oldest_first(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    ids = list(range(50))
    await repo.insert(
        [sms(i, T0 - 2 * 3600 * SECOND + 60 * SECOND * (50 - i)) for i in ids], now_ms=T0
    )
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        await engine.run_until_idle()
    assert recorder.ids() == sorted(ids, reverse=True)  # oldest due first
    assert {(attempt, fired) for _, attempt, _, fired in recorder.fires} == {(1, T0)}
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}


async def test_do_nothing_policy_marks_misfired_jobs_missed_and_fires_the_rest(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    await repo.insert([sms(1, T0 - 600 * SECOND), sms(2, T0 - SECOND)], now_ms=T0)
    recorder = Recorder()
    engine = engine_factory(handler=recorder, misfire_policy="do_nothing", misfire_threshold_s=60)
    async with engine:
        await engine.run_until_idle()
    assert recorder.ids() == [2]
    [row] = await repo.get(1)
    assert (row.status, row.last_error) == (
        Status.MISSED,
        "misfired: found 600000 ms late (misfire_policy do_nothing)",
    )


async def test_the_wheels_start_at_the_start_not_at_registration(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    """A job due between registration and start is overdue when the engine starts: the misfire
    policy decides, as for any job found overdue. A wheel made at registration would take it
    as due later and fire it."""
    recorder = Recorder()
    engine = engine_factory(handler=recorder, misfire_policy="do_nothing", misfire_threshold_s=60)
    clock.advance(600 * SECOND)
    await repo.insert([sms(1, T0 + 60 * SECOND)], now_ms=clock.now_ms())
    async with engine:
        await engine.run_until_idle()
    assert recorder.fires == []
    [row] = await repo.get(1)
    assert (row.status, row.last_error) == (
        Status.MISSED,
        "misfired: found 540000 ms late (misfire_policy do_nothing)",
    )


async def other_node(
    members: Membership, raw_sql: RawSql, node_id: str, *, dead: bool = False
) -> Claimant:
    """Another node joined the store, live, or dead (its heartbeat a minute old by the
    database's clock): the claimant of its claims."""
    joined = await members.join(node_id, host="elsewhere", pid=1, version="0", node_timeout_ms=1)
    if dead:
        age = f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE epoch = {joined.epoch}"
        await raw_sql(members, age)
    return Claimant(node_id, joined.epoch)


async def test_claims_of_a_dead_node_fire_once_at_start_with_their_attempt(
    engine_factory: EngineFactory, repo: Repo, open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    ids = list(range(5))
    crashed = await other_node(await open_membership(), raw_sql, "crashed", dead=True)
    await repo.insert([sms(i, T0 - 5 * SECOND) for i in ids], now_ms=T0, claimed_by=crashed)
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        await engine.run_until_idle()
    # The crashed run's attempt was handed back: the fire carries its number (and key).
    assert sorted((i, attempt) for i, attempt, *_ in recorder.fires) == [(i, 1) for i in ids]
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}
    roster = await (await open_membership()).list_nodes()
    assert {n.node_id: n.state for n in roster.nodes}["crashed"] is NodeState.DEAD


async def test_a_node_starting_never_touches_a_live_nodes_claims(
    engine_factory: EngineFactory,
    repo: Repo,
    open_membership: OpenMembership,
    raw_sql: RawSql,
    backend: Any,
) -> None:
    ids = list(range(5))
    live = await other_node(await open_membership(), raw_sql, "node-b")
    await repo.insert([sms(i, T0 - 5 * SECOND) for i in ids], now_ms=T0, claimed_by=live)
    recorder = Recorder()
    if backend.kind == "sqlite":  # one node at a time: refused before it claims anything
        with pytest.raises(SingleNodeStore):
            async with engine_factory(handler=recorder):
                pass
    else:
        async with engine_factory(handler=recorder) as engine:
            await engine.run_until_idle()
    assert recorder.fires == []
    assert await rows_of(repo, ids) == {(Status.CLAIMED, "node-b", 1)}


async def test_claims_of_a_run_that_left_without_handing_back_fire_once_at_start(
    engine_factory: EngineFactory, repo: Repo, open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    """An epoch no longer running (LEFT here; or DEAD with its takeover cut off) that still
    holds claims: the next node to start hands them back."""
    members = await open_membership()
    gone = await other_node(members, raw_sql, "gone")
    await repo.insert([sms(1, T0 - SECOND)], now_ms=T0, claimed_by=gone)
    await members.set_state(gone.epoch, NodeState.LEFT)
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        await engine.run_until_idle()
    assert recorder.ids() == [1]


async def test_claims_left_by_a_run_before_the_misfire_horizon_stay_claimed(
    engine_factory: EngineFactory, repo: Repo, open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    """The start-up takeover reads the claim index from now - misfire_horizon_s on: a claim
    older than that stays CLAIMED (the shard's drop reports it) instead of firing a job that
    late, as a fetch would never look back that far for a PENDING one either."""
    crashed = await other_node(await open_membership(), raw_sql, "crashed", dead=True)
    await repo.insert([sms(1, T0 - 2 * 3_600_000)], now_ms=T0, claimed_by=crashed)  # 2 h ago
    await repo.insert([sms(2, T0 - 30 * 60_000)], now_ms=T0, claimed_by=crashed)  # 30 min ago
    recorder = Recorder()
    async with engine_factory(handler=recorder, misfire_horizon_s=3600) as engine:
        await engine.run_until_idle()
    assert recorder.ids() == [2]
    assert await statuses(repo, [1, 2]) == {1: Status.CLAIMED, 2: Status.DONE}
    [row] = await repo.get(1)
    assert (row.claimed_by, row.claim_epoch) == ("crashed", crashed.epoch)
    assert engine.epoch > crashed.epoch


async def test_a_handler_cut_off_by_the_drain_hands_its_claim_back(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """Wall: the job a handler held when the drain timed out goes back to PENDING, its attempt
    handed back, with the jobs still in the wheel; the jobs that finished stay DONE."""
    now = wall_ms()
    await repo.insert([sms(1, now), sms(2, now), sms(3, now + 60_000)], now_ms=now)
    started = asyncio.Event()

    async def handler(ctx: JobContext[Any]) -> None:
        if ctx.job_id == 1:
            started.set()
            await asyncio.Event().wait()  # never returns: cut off at shutdown

    engine = engine_factory(
        handler=handler, wall=True, lookahead_s=90, handlers={"drain_timeout_s": 0.2}
    )
    async with engine:
        await asyncio.wait_for(started.wait(), 3)
        async with asyncio.timeout(3):
            while (await statuses(repo, [2]))[2] is not Status.DONE:  # noqa: ASYNC110 - its ack
                await asyncio.sleep(0.02)
    assert await rows_of(repo, [1, 3]) == {(Status.PENDING, None, 0)}
    assert await statuses(repo, [2]) == {2: Status.DONE}


async def test_the_backlog_series_counts_due_jobs_not_finished_by_entity(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """Wall: jobs due and handed over are the entity's backlog until their outcome is written;
    the job still in the wheel is not."""
    now = wall_ms()
    await repo.insert([sms(1, now), sms(2, now), sms(3, now + 60_000)], now_ms=now)
    release = asyncio.Event()
    started: list[int | str] = []

    async def handler(ctx: JobContext[Any]) -> None:
        started.append(ctx.job_id)
        await release.wait()

    def backlog() -> float | None:
        name = "infinite_scheduler_jobs_backlog"
        return engine.metrics.registry.get_sample_value(name, {"entity": "sms"})

    engine = engine_factory(handler=handler, wall=True, lookahead_s=90)
    async with engine:
        async with asyncio.timeout(3):
            while len(started) < 2:  # noqa: ASYNC110 - the handlers start on the loop
                await asyncio.sleep(0.01)
        assert backlog() == 2
        release.set()
        async with asyncio.timeout(3):
            while (await statuses(repo, [1, 2])) != {1: Status.DONE, 2: Status.DONE}:  # noqa: ASYNC110 - their acks
                await asyncio.sleep(0.02)
        assert backlog() == 0


async def test_a_shard_of_the_version_before_epoch_claims_fires_what_it_left_once(
    engine_factory: EngineFactory, old_shard: Callable[..., Awaitable[None]]
) -> None:
    """Upgraded when the engine opens the store: its PENDING job and the job it left CLAIMED
    fire once (the latter with the attempt it had), its DONE job is left as it was."""
    day = bounds_of(T0, Granularity.DAY)
    p, c, d = Status.PENDING, Status.CLAIMED, Status.DONE
    await old_shard(
        day,
        [
            (1, T0 - 5 * SECOND, p, 0, "", 0, 0),
            (2, T0 - 4 * SECOND, c, 2, "old-node", T0 - 9 * SECOND, 0),
            (3, T0 - 3 * SECOND, d, 1, "old-node", T0 - 8 * SECOND, T0 - 7 * SECOND),
        ],
    )
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        await engine.run_until_idle()
        repo = engine.parts.lanes["sms"].repo
        rows = {r.key: r for r in await repo.page(start_ms=day.start_ms, end_ms=day.end_ms)}
    assert [(i, attempt) for i, attempt, *_ in recorder.fires] == [(1, 1), (2, 2)]
    assert {k: r.status for k, r in rows.items()} == {1: d, 2: d, 3: d}
    assert (rows[3].fired_at_ms, rows[3].claim_epoch) == (T0 - 7 * SECOND, -1)
    assert rows[1].claim_epoch == rows[2].claim_epoch == engine.epoch


# -- retries and failures ---------------------------------------------------------------------


async def test_failed_attempts_retry_with_backoff_then_succeed(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    await repo.insert([sms(1, T0)], now_ms=T0)
    recorder = Recorder(fail_attempts=2)
    async with engine_factory(handler=recorder, handlers={"max_attempts": 5}) as engine:
        for step_ms in (0, 49, 1, 99, 1):  # backoff 50 ms, then doubled
            clock.advance(step_ms)
            await engine.run_until_idle()
            assert recorder.fires[-1][3] <= clock.now_ms()
    assert recorder.fires == [
        (1, 1, T0, T0),
        (1, 2, T0 + 50, T0 + 50),
        (1, 3, T0 + 150, T0 + 150),
    ]
    [row] = await repo.get(1)
    assert (row.status, row.attempts, row.fired_at_ms) == (Status.DONE, 3, T0 + 150)


async def test_job_without_attempts_left_is_failed_with_its_error_and_others_fire(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    await repo.insert([sms(i, T0) for i in range(4)], now_ms=T0)
    recorder = Recorder(fail_ids=frozenset({2}))
    async with engine_factory(handler=recorder, handlers={"max_attempts": 2}) as engine:
        await engine.run_until_idle()
        clock.advance(50)
        await engine.run_until_idle()
    assert sorted(recorder.ids()) == [0, 1, 2, 2, 3]
    [row] = await repo.get(2)
    assert (row.status, row.attempts, row.last_error) == (
        Status.FAILED,
        2,
        "RuntimeError: boom 2/2",
    )
    assert (await statuses(repo, [0, 1, 3])) == {0: Status.DONE, 1: Status.DONE, 3: Status.DONE}


async def test_hanging_handler_times_out_and_only_its_job_fails(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """The timeout is real time (the watchdog's); the rest follows the fake clock."""
    await repo.insert([sms(i, T0) for i in range(3)], now_ms=T0)
    done: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> object:
        if ctx.job_id == 1:
            await asyncio.sleep(60)
        done.append(ctx.job_id)
        return object()  # garbage return values are ignored

    settings = {"timeout_s": 0.3, "max_attempts": 1}
    async with engine_factory(handler=handler, handlers=settings) as engine:
        await engine.run_until_idle()
    assert sorted(done) == [0, 2]
    [row] = await repo.get(1)
    assert (row.status, row.last_error) == (Status.FAILED, "handler timed out after 0.3s")
    assert (await statuses(repo, [0, 2])) == {0: Status.DONE, 2: Status.DONE}


async def test_payload_that_no_longer_decodes_fails_that_job_only(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    await repo.insert([sms(i, T0) for i in range(3)], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder, spec=SMS_V2) as engine:
        await engine.run_until_idle()
    assert recorder.fires == []  # every stored row lacks `country`
    rows = [(await repo.get(i))[0] for i in range(3)]
    assert {r.status for r in rows} == {Status.FAILED}
    for r in rows:
        assert (r.last_error or "").startswith("payload does not decode: TypeError(")
        assert "'country'" in (r.last_error or "")


# -- shutdown, backlog, cancel ----------------------------------------------------------------


async def test_graceful_stop_hands_unfired_claims_back(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    ids = list(range(10))
    await repo.insert([sms(i, T0 + 20 * SECOND) for i in ids], now_ms=T0)
    recorder = Recorder()
    engine = engine_factory(handler=recorder, fetch_interval_s=5, lookahead_s=30)
    async with engine:
        await engine.run_until_idle()
        assert engine.held() == 10
        assert await rows_of(repo, ids) == {(Status.CLAIMED, "node-a", 1)}
    assert await rows_of(repo, ids) == {(Status.PENDING, None, 0)}
    assert recorder.fires == []


async def test_a_backlog_beyond_max_held_waits_in_the_store_and_all_of_it_fires_once(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """Invariant 4: memory holds at most max_held jobs, however many are due."""
    ids = list(range(300))
    await repo.insert([sms(i, T0 - 5 * SECOND) for i in ids], now_ms=T0)
    release = asyncio.Event()
    fired: list[int | str] = []
    peak = 0

    async def slow(ctx: JobContext[SmsEntity]) -> None:
        nonlocal peak
        peak = max(peak, engine.held())
        await release.wait()
        fired.append(ctx.job_id)

    engine = engine_factory(
        handler=slow, max_held=40, max_jobs_per_fetch=40, batch_size=15, handlers={"timeout_s": 30}
    )
    async with engine:
        fetcher = engine.parts.fetcher
        assert engine.held() == 40  # the start's fetch: 15 + 15 + 10, then no room
        assert await fetcher.fetch_once() == 0 and fetcher.backlog  # another round: no room
        claimed = list((await statuses(repo, ids)).values())
        assert claimed.count(Status.CLAIMED) == 40 and claimed.count(Status.PENDING) == 260
        release.set()
        await engine.run_until_idle()
    assert peak == 40
    assert sorted(fired) == ids  # each exactly once
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}


async def test_cancel_removes_a_held_job(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        await engine.schedule([sms(1, T0 + 400), sms(2, T0 + 400)])
        assert await engine.cancel(SMS, [1]) == 1
        assert engine.held() == 1
        clock.advance(400)
        await engine.run_until_idle()
    assert recorder.ids() == [2]
    [row] = await repo.get(1)
    assert row.status is Status.CANCELLED


async def test_cancel_removes_every_held_job_of_that_id_from_every_shard(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    """Id 7 in the shards either side of midnight, both held (one under (id, shard time)):
    a cancel by id cancels both rows, and neither fires."""
    midnight = T0 + 12 * 3600 * SECOND
    clock.advance(midnight - 300 - T0)
    await repo.insert(
        [sms(7, midnight - 100), sms(7, midnight + 100), sms(8, midnight + 100)],
        now_ms=clock.now_ms(),
    )
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        assert engine.held() == 3
        assert await engine.cancel(SMS, [7]) == 2
        assert engine.held() == 1
        clock.advance(500)
        await engine.run_until_idle()
    assert recorder.ids() == [8]
    assert {row.status for row in await repo.get(7)} == {Status.CANCELLED}


async def test_jobs_of_one_id_from_two_shards_both_fire_and_leave_nothing_behind(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    midnight = T0 + 12 * 3600 * SECOND
    clock.advance(midnight - 300 - T0)
    await repo.insert([sms(7, midnight - 100), sms(7, midnight + 100)], now_ms=clock.now_ms())
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        assert engine.parts.lanes[SMS.name].twins == {7: {midnight + 100}}
        clock.advance(500)
        await engine.run_until_idle()
        assert engine.parts.lanes[SMS.name].twins == {}
    assert recorder.ids() == [7, 7]


# -- refusals: nothing stored, nothing changed --------------------------------------------------


async def test_schedule_of_several_types_stores_each_and_of_a_type_not_served_nothing(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    engine = engine_factory(handler=Recorder(), fetch_interval_s=20, lookahead_s=30)
    engine.register(ORDERS, Recorder())
    later = T0 + 3600 * SECOND
    order = OrderEntity(
        order_id="o-1",
        expires_at=datetime.fromtimestamp(later / 1000, UTC),
        customer_id=1,
        amount_cents=5,
    )
    async with engine:
        assert await engine.schedule([sms(1, later), order, sms(2, later)]) == 3
        stranger = NotificationEntity(id=3, deliver_at=order.expires_at, user_id=1, title="t")
        with pytest.raises(HandlerMissing):
            await engine.schedule([stranger])
        with pytest.raises(HandlerMissing) as caught:
            await engine.schedule([sms(3, later), stranger])
    assert str(caught.value) == (
        "no handler for entity type(s) 'NotificationEntity'; register one before starting the"
        " engine"
    )
    assert [len(await repo.get(i)) for i in (1, 2, 3)] == [1, 1, 0]


async def test_missing_handler_is_refused_at_start_and_nothing_changes(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    await repo.insert([sms(1, T0)], now_ms=T0)
    engine = engine_factory(handler=None)
    with pytest.raises(HandlerMissing, match="sms"):
        async with engine:
            pass
    [row] = await repo.get(1)
    assert row.status is Status.PENDING and row.attempts == 0


SCHEDULE_NOT_RUNNING = (
    "schedule() needs a running engine: call it inside `async with engine:` "
    "(to store jobs without an engine, use SchedulerClient.schedule())"
)
CANCEL_NOT_RUNNING = (
    "cancel() needs a running engine: call it inside `async with engine:` "
    "(to cancel jobs without an engine, use SchedulerClient.cancel())"
)


async def test_schedule_and_cancel_outside_async_with_are_refused_and_change_nothing(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    await repo.insert([sms(1, T0 + 3600 * SECOND)], now_ms=T0)
    [before] = await repo.get(1)
    engine = engine_factory(handler=Recorder())
    for phase in ("before", "after"):
        with pytest.raises(EngineNotRunning) as scheduling:
            await engine.schedule([sms(2, T0 + SECOND)])
        assert str(scheduling.value) == SCHEDULE_NOT_RUNNING, phase
        with pytest.raises(EngineNotRunning) as cancelling:
            await engine.cancel(SMS, [1])
        assert str(cancelling.value) == CANCEL_NOT_RUNNING, phase
        assert await repo.get(2) == [] and await repo.get(1) == [before], phase
        if phase == "before":
            async with engine:
                pass


class ClaimSpy:
    """The real repository, recording the limit of every claim."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.limits: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def claim_due(self, claimant: Claimant, **kwargs: Any) -> Any:
        self.limits.append(kwargs["limit"])
        return await self.repo.claim_due(claimant, **kwargs)


async def test_a_burst_of_due_rows_is_claimed_in_larger_batches_and_fires_once(
    engine_factory: EngineFactory, repo: Repo, engine_repo: Callable[[], Repo], clock: FakeClock
) -> None:
    """After a full batch of rows already due, claims take BURST_BATCHES batches at a time;
    rows not yet due are claimed a batch at a time."""
    due, ahead = list(range(100)), list(range(100, 130))
    await repo.insert([sms(i, T0 - SECOND) for i in due], now_ms=T0)
    await repo.insert([sms(i, T0 + 100 + i) for i in ahead], now_ms=T0)
    spy = ClaimSpy(engine_repo())
    recorder = Recorder()
    async with engine_factory(handler=recorder, repository=spy, batch_size=10) as engine:
        await engine.run_until_idle()
        clock.advance(300)  # the rows ahead come due
        await engine.run_until_idle()
    burst = 10 * BURST_BATCHES
    # 10 + 50 due; 40 due and 10 ahead; the other 20 ahead a batch at a time.
    assert spy.limits[:6] == [10, burst, burst, 10, 10, 10]  # the start's round
    assert sorted(recorder.ids()) == due + ahead  # each once
    assert set((await statuses(repo, due + ahead)).values()) == {Status.DONE}


async def held_in_a_stuck_burst(engine_factory: EngineFactory, repo: Repo, *, at_least: int) -> int:
    """Wall: 300 rows already due, 5 handlers stuck. The rows CLAIMED once the node holds
    `at_least` and its rounds went on for 0.5 s more; then the handlers go on, and every row
    fires once."""
    ids = list(range(300))
    await repo.insert([sms(i, wall_ms() - SECOND) for i in ids], now_ms=wall_ms())
    release = asyncio.Event()
    fired: list[int | str] = []

    async def busy(ctx: JobContext[SmsEntity]) -> None:
        await release.wait()
        fired.append(ctx.job_id)

    async def claimed() -> int:
        return list((await statuses(repo, ids)).values()).count(Status.CLAIMED)

    engine = engine_factory(
        handler=busy, wall=True, batch_size=10, handlers={"timeout_s": 30, "concurrency": 5}
    )
    async with engine:
        async with asyncio.timeout(5):  # a busy machine may take a while over the first claims
            while await claimed() < at_least:  # noqa: ASYNC110 - the store
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # rounds go on while the handlers are stuck
        held = await claimed()
        release.set()
        async with asyncio.timeout(10):
            while len(fired) < len(ids):  # noqa: ASYNC110 - the handlers run on the engine's loop
                await asyncio.sleep(0.02)
    assert sorted(fired) == ids  # each once
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}
    return held


async def test_a_burst_beyond_what_the_handlers_can_start_soon_stays_in_the_store(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """A node holds at most BURST_HELD_BATCHES burst batches of due rows; the rest stays
    PENDING for every node to claim."""
    held = await held_in_a_stuck_burst(engine_factory, repo, at_least=10 + 10 * BURST_BATCHES)
    assert held <= 10 + BURST_HELD_BATCHES * 10 * BURST_BATCHES


@MYSQL_ONLY
async def test_with_other_nodes_live_a_node_holds_only_its_share_of_a_burst(
    engine_factory: EngineFactory, repo: Repo, open_membership: OpenMembership
) -> None:
    """With two more nodes live, a node holds one burst batch, not the two it would hold
    alone, so that the first nodes to see a burst leave the others their part."""
    members = await open_membership()
    peers = [
        (await members.join(name, host="h", pid=1, version="v", node_timeout_ms=500)).epoch
        for name in ("node-b", "node-c")
    ]
    stop = asyncio.Event()

    async def heartbeats() -> None:  # the two other nodes stay live
        while not stop.is_set():
            for epoch in peers:
                await members.heartbeat(epoch, 0)
            await asyncio.sleep(0.05)

    beating = asyncio.create_task(heartbeats())
    try:
        held = await held_in_a_stuck_burst(engine_factory, repo, at_least=11)
    finally:
        stop.set()
        await beating
    assert BURST_HELD_BATCHES > 1
    assert held <= 5 + 10 * BURST_BATCHES  # 5 running, the rest in hand: alone, 5 + 100


async def test_rows_not_yet_due_are_claimed_a_batch_at_a_time(
    engine_factory: EngineFactory, repo: Repo, engine_repo: Callable[[], Repo]
) -> None:
    ahead = list(range(35))
    await repo.insert([sms(i, T0 + 100 + i) for i in ahead], now_ms=T0)
    spy = ClaimSpy(engine_repo())
    async with engine_factory(handler=Recorder(), repository=spy, batch_size=10):
        pass
    assert spy.limits[:4] == [10, 10, 10, 10]  # the start's round


class OpenSpy:
    """The real repository, counting open() calls."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.opened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def open(self) -> None:
        self.opened += 1
        await self.repo.open()


async def test_metrics_port_in_use_stops_the_start_before_any_store_opens(
    engine_factory: EngineFactory, repo: Repo, engine_repo: Callable[[], Repo]
) -> None:
    ids = list(range(1, 6))
    await repo.insert([sms(i, T0 - SECOND) for i in ids], now_ms=T0)
    spy = OpenSpy(engine_repo())
    recorder = Recorder()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = engine_factory(handler=recorder, repository=spy, metrics_port=port)
        with pytest.raises(PortUnavailable) as caught:
            async with engine:
                pass
    assert str(caught.value) == (
        f"metrics_port = {port}: port already in use ([Errno 98] Address already in use); "
        "free it or choose another port (0 turns the endpoint off)"
    )
    assert spy.opened == 0 and recorder.fires == []
    assert await rows_of(repo, ids) == {(Status.PENDING, None, 0)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@SQLITE_ONLY
async def test_the_metrics_endpoint_listens_on_metrics_host(
    engine_factory: EngineFactory,
) -> None:
    """127.0.0.2 is loopback too, yet another address: only a bind to it answers there (a
    container's Prometheus needs the node's 0.0.0.0, which this stands in for)."""
    port = free_port()
    async with engine_factory(handler=Recorder(), metrics_port=port, metrics_host="127.0.0.2"):
        assert answers("127.0.0.2", port) and not answers("127.0.0.1", port)
    assert not answers("127.0.0.2", port)


async def test_schedule_with_a_payload_over_the_limit_stores_none_of_the_call(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    recorder = Recorder()
    engine = engine_factory(handler=recorder, store={"max_payload_bytes": 200})
    later = sms(1, T0 + 3600 * SECOND)  # would be stored first, by an insert of its own
    soon = sms(2, T0, message="x" * 200)
    async with engine:
        with pytest.raises(PayloadTooLarge) as caught:
            await engine.schedule([later, soon])
        await engine.run_until_idle()
    assert str(caught.value) == (
        "entity 'sms', job 2, field 'payload': encoded size 234 bytes is over the limit of"
        " 200 bytes"
    )
    assert await repo.get(1) == [] and await repo.get(2) == []
    assert recorder.fires == []


async def test_schedule_encodes_each_entity_once(
    engine_factory: EngineFactory, repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once to split the call by due time and store it, not again inside the insert."""
    encoded: list[Any] = []
    encode_many = EntitySpec.encode_many

    def counting(spec: EntitySpec[Any, Any], entities: Any, **limits: Any) -> Any:
        encoded.extend(entity.id for entity in entities)
        return encode_many(spec, entities, **limits)

    monkeypatch.setattr(EntitySpec, "encode_many", counting)
    engine = engine_factory(handler=Recorder(), fetch_interval_s=20, lookahead_s=30)
    async with engine:
        soon, later = sms(1, T0 + 10 * SECOND), sms(2, T0 + 3600 * SECOND)
        assert await engine.schedule([soon, later]) == 2
        assert engine.held() == 1  # `soon` stored claimed, into the wheel
    assert sorted(encoded) == [1, 2]
    assert await rows_of(repo, [1, 2]) == {(Status.PENDING, None, 0)}  # `soon` handed back


async def test_schedule_of_jobs_for_later_stores_the_call_from_one_encoding(
    engine_factory: EngineFactory,
    repo: Repo,
    backend: Backend,
    inserts_run: Callable[[], Awaitable[dict[str, int]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No row of such a call goes to the wheel: it is encoded once, by the adapter's insert, on
    MySQL a batch with its document, stored in one INSERT ... SELECT."""
    encoded: list[tuple[list[int], bool]] = []
    encode_batch = EntitySpec.encode_batch

    def counting(spec: EntitySpec[Any, Any], entities: Any, **limits: Any) -> Any:
        made_document = limits.get("document_shard") is not None
        encoded.append(([entity.id for entity in entities], made_document))
        return encode_batch(spec, entities, **limits)

    monkeypatch.setattr(EntitySpec, "encode_batch", counting)
    engine = engine_factory(handler=Recorder(), fetch_interval_s=20, lookahead_s=30)
    async with engine:
        on_mysql = backend.kind == "mysql"
        before = (await inserts_run())["Com_insert_select"] if on_mysql else 0
        later = [sms(1, T0 + 3600 * SECOND), sms(2, T0 + 7200 * SECOND, "it's \\ ü")]
        assert await engine.schedule(later) == 2
        after = (await inserts_run())["Com_insert_select"] if on_mysql else 0
        assert engine.held() == 0
    assert encoded == [([1, 2], on_mysql)]
    assert after - before == (1 if on_mysql else 0)
    assert await rows_of(repo, [1, 2]) == {(Status.PENDING, None, 0)}
    stored = [SMS.decode(r.key, r.at_ms, r.payload) for i in (1, 2) for r in await repo.get(i)]
    assert stored == later


# -- payloads read shortly before the job is due ---------------------------------------------

#: Claim 3 s ahead, read payloads 0.4 s ahead: jobs due in 1-2 s are held without theirs first.
PAYLOAD_WINDOW = {"fetch_interval_s": 2.5, "lookahead_s": 3, "payload_ahead_s": 0.4}


class FlakyReads:
    """The real repository, but its first `failures` payload reads fail as an outage would."""

    def __init__(self, repo: Repo, failures: int) -> None:
        self.repo = repo
        self.failures = failures
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def read_payloads(self, epoch: int, refs: Any) -> Any:
        self.reads += 1
        if self.reads <= self.failures:
            refused = ConnectionRefusedError("connection refused")
            raise StoreUnavailable("read payloads", refused, address="127.0.0.1:3306")
        return await self.repo.read_payloads(epoch, refs)


async def test_jobs_held_without_payload_are_read_just_in_time_and_fire_on_time(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    ids = list(range(20))
    due = {i: T0 + 1500 + 25 * i for i in ids}
    await repo.insert([sms(i, due[i]) for i in ids], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder, **PAYLOAD_WINDOW) as engine:
        payloads = engine.parts.payloads
        await engine.run_until_idle()
        assert engine.held() == 20 and payloads.reads == 0  # held, payloads not read
        clock.advance(1100)  # the first is due in 400 ms: not yet inside payload_ahead_s
        await engine.run_until_idle()
        assert payloads.reads == 0
        clock.advance(1)
        await engine.run_until_idle()
        assert payloads.reads == 1  # the whole claim batch, in one statement
        for i in ids:
            clock.advance(due[i] - clock.now_ms())
            await engine.run_until_idle()
    assert recorder.fires == [(i, 1, due[i], due[i]) for i in ids]
    assert recorder.messages == {i: f"m{i}" for i in ids}


async def test_held_jobs_cost_the_garbage_collector_nothing(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    """A full collection walks every object it tracks: held jobs must not be among them (W3's
    worst lateness was a full collection over the held jobs), with or without their payload."""
    ids = list(range(20))
    await repo.insert([sms(i, T0 + 1500 + 25 * i) for i in ids], now_ms=T0)
    async with engine_factory(handler=Recorder(), **PAYLOAD_WINDOW) as engine:
        await engine.run_until_idle()
        clock.advance(1101)
        await engine.run_until_idle()  # the batch's payloads are read into the wheel
        assert engine.parts.payloads.reads == 1
        gc.collect()
        wheel = engine.parts.lanes["sms"].wheel
        held = [wheel.get(i) for i in ids]
        assert all(h is not None and h[4] is not None for h in held)
        assert not [h for h in held if gc.is_tracked(h)]


async def test_a_payload_read_that_fails_holds_the_job_back_until_it_is_read(
    engine_factory: EngineFactory, repo: Repo, engine_repo: Callable[[], Repo]
) -> None:
    """Wall: the reads are retried with the loops' backoff, past the jobs' due time."""
    base = wall_ms() + 1200
    ids = list(range(5))
    await repo.insert([sms(i, base + 10 * i) for i in ids], now_ms=wall_ms())
    flaky = FlakyReads(engine_repo(), failures=4)
    recorder = Recorder()
    engine = engine_factory(handler=recorder, repository=flaky, wall=True, **PAYLOAD_WINDOW)
    async with engine:
        await recorder.wait_for(5)
    assert flaky.reads > 4
    assert recorder.messages == {i: f"m{i}" for i in ids}  # each fired once, late not lost
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}


async def test_a_job_whose_row_is_gone_before_its_payload_is_read_is_not_fired(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.insert([sms(1, T0 + 1500)], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder, **PAYLOAD_WINDOW) as engine:
        assert engine.held() == 1
        # Its shard, dropped whole, as this engine's maintenance drops shards: through the
        # engine's own repository, which then knows the shard is gone.
        own = engine.parts.lanes["sms"].repo
        assert len(await own.drop_shards_before(T0 + 10 * 86_400 * SECOND)) == 1
        clock.advance(1500)
        await engine.run_until_idle()
        assert engine.held() == 0
    assert recorder.fires == []
    assert (
        "sms 1 not fired: no longer claimed by this node when its payload was read"
        " (cancelled, handed back, or its shard dropped)"
    ) in [r.getMessage() for r in caplog.records]


async def test_jobs_held_back_for_their_payload_are_handed_back_at_shutdown(
    engine_factory: EngineFactory, repo: Repo, engine_repo: Callable[[], Repo]
) -> None:
    """Wall: a read that never succeeds keeps its jobs held back until the engine stops."""
    ids = list(range(3))
    await repo.insert([sms(i, wall_ms() + 1200) for i in ids], now_ms=wall_ms())
    never = FlakyReads(engine_repo(), failures=10**9)
    recorder = Recorder()
    engine = engine_factory(handler=recorder, repository=never, wall=True, **PAYLOAD_WINDOW)
    async with engine:
        async with asyncio.timeout(3):
            while engine.parts.payloads.held_back < 3:  # noqa: ASYNC110 - due, but unreadable
                await asyncio.sleep(0.02)
        assert engine.held() == 3
    assert recorder.fires == []
    assert await rows_of(repo, ids) == {(Status.PENDING, None, 0)}


async def test_a_job_cancelled_elsewhere_while_held_without_payload_does_not_fire(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    await repo.insert([sms(i, T0 + 1500) for i in range(3)], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder, **PAYLOAD_WINDOW) as engine:
        assert engine.held() == 3
        assert await repo.cancel([1]) == 1  # through another handle: this wheel still holds it
        clock.advance(1500)
        await engine.run_until_idle()
    assert sorted(recorder.ids()) == [0, 2]
    assert list((await statuses(repo, [0, 1, 2])).values()) == [
        Status.DONE,
        Status.CANCELLED,
        Status.DONE,
    ]
    # Its failure changed nothing (the row is CANCELLED), but no other node has it: not fenced.
    assert sample(engine, "infinite_scheduler_fenced_writes_total", entity="sms") == 0


async def test_a_held_job_handed_back_and_claimed_again_fires_once(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process hands back this engine's claims (a takeover) while it holds job 1 in
    its wheel and job 2 in hand (fired, its outcome not written yet); the next fetch claims
    both again, under the same epoch."""
    await repo.insert([sms(1, T0 + 500), sms(2, T0)], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        assert await repo.take_over(engine.epoch, from_ms=0) == 2
        await engine.run_until_idle()
        clock.advance(500)
        await engine.run_until_idle()
    assert recorder.ids() == [2, 1]
    assert (await statuses(repo, [1, 2])) == {1: Status.DONE, 2: Status.DONE}
    held_twice = [r.getMessage() for r in caplog.records if "claimed again" in r.getMessage()]
    assert held_twice == [
        f"sms {i} claimed again while held here (its claim was handed back meanwhile); held once"
        for i in (2, 1)
    ]


async def _taken_over(repo: Repo, engine: InfiniteScheduler, n: int) -> Claimant:
    """Another node takes this engine's claims over (as if it had been declared dead) and
    claims them itself: they are node-b's, epoch 7, from now on."""
    assert await repo.take_over(engine.epoch, from_ms=0) == n
    other = Claimant("node-b", 7)
    claimed = await repo.claim_due(other, now_ms=T0, before_ms=T0 + 60_000, since_ms=T0, limit=9)
    assert len(claimed) == n
    return other


def fenced_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    return [
        (r.job_id, r.shard, r.node, r.epoch, r.getMessage())  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "action", None) == "fenced"
    ]


async def test_an_ack_of_a_job_taken_over_meanwhile_is_fenced_counted_and_logged(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """This engine still holds job 1 and fires it (a stall the cluster's self-fencing is for),
    but its ack changes nothing: the row is node-b's claim. The ack of job 2 goes through."""
    await repo.insert([sms(1, T0 + 500), sms(2, T0 + 500)], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        assert engine.held() == 2
        assert await repo.take_over(engine.epoch, from_ms=0) == 2
        other = Claimant("node-b", 7)
        [job] = await repo.claim_due(other, now_ms=T0, before_ms=T0 + 501, since_ms=T0, limit=1)
        assert job.key == 1
        # Job 2 is PENDING again: this engine's next fetch claims it (held once, acked once).
        clock.advance(500)
        await engine.run_until_idle()
    assert sorted(recorder.ids()) == [1, 2]
    [row] = await repo.get(1)
    assert (row.status, row.claimed_by, row.claim_epoch) == (Status.CLAIMED, "node-b", 7)
    assert (await repo.get(2))[0].status is Status.DONE
    assert sample(engine, "infinite_scheduler_fenced_writes_total", entity="sms") == 1
    assert fenced_logs(caplog) == [
        (
            1,
            row.shard,
            "node-a",
            engine.epoch,
            f"sms 1: ack fenced: taken over from node-a (epoch {engine.epoch}),"
            " now CLAIMED by node-b (epoch 7)",
        )
    ]


async def test_a_job_taken_over_before_its_payload_is_read_is_not_fired_and_is_reported(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Held without its payload, the job comes due: the read finds the row another node's,
    so the job does not fire here, nothing is written about it, and the read is reported."""
    await repo.insert([sms(1, T0 + 1500)], now_ms=T0)
    recorder = Recorder()
    async with engine_factory(handler=recorder, **PAYLOAD_WINDOW) as engine:
        assert engine.held() == 1
        await _taken_over(repo, engine, 1)
        clock.advance(1500)
        await engine.run_until_idle()
        assert engine.held() == 0
    assert recorder.fires == []
    [row] = await repo.get(1)
    assert (row.status, row.claimed_by, row.last_error) == (Status.CLAIMED, "node-b", None)
    assert sample(engine, "infinite_scheduler_fenced_writes_total", entity="sms") == 1
    assert sample(engine, "infinite_scheduler_jobs_failed_total", entity="sms") == 0
    assert [(i, node, epoch) for i, _, node, epoch, _ in fenced_logs(caplog)] == [
        (1, "node-a", engine.epoch)
    ]
    assert "payload read fenced" in fenced_logs(caplog)[0][4]


# -- sync handlers on threads, and async handlers that block the loop: real time, SQLite only --


class ThreadedRecorder:
    """A sync handler recording each call's (id, attempt, start, end) in monotonic time and
    its thread; it sleeps `sleep_s` on the first attempt and raises on `fail_attempts`."""

    def __init__(self, sleep_s: float, fail_attempts: frozenset[int] = frozenset()) -> None:
        self.sleep_s = sleep_s
        self.fail_attempts = fail_attempts
        self.calls: list[tuple[Any, int, float, float]] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext[Any]) -> None:
        started = time.monotonic()
        time.sleep(self.sleep_s if ctx.attempt == 1 else 0)
        with self._lock:
            self.calls.append((ctx.job_id, ctx.attempt, started, time.monotonic()))
            self.threads.add(threading.get_ident())
        if ctx.attempt in self.fail_attempts:
            raise RuntimeError(f"boom {ctx.attempt}")


def sample(engine: InfiniteScheduler, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


@SQLITE_ONLY
async def test_sync_handler_runs_in_a_thread(engine_factory: EngineFactory, repo: Repo) -> None:
    await repo.insert([sms(i, T0) for i in range(3)], now_ms=T0)
    handler = ThreadedRecorder(sleep_s=0.01)  # blocking is fine: it runs off the loop
    async with engine_factory(handler=handler) as engine:
        await engine.run_until_idle()
    assert sorted(c[0] for c in handler.calls) == [0, 1, 2]
    assert threading.get_ident() not in handler.threads
    assert set((await statuses(repo, [0, 1, 2])).values()) == {Status.DONE}


@SQLITE_ONLY
async def test_a_sync_handler_past_its_timeout_is_not_run_again_while_it_runs(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.insert([sms(1, T0)], now_ms=T0)
    handler = ThreadedRecorder(sleep_s=1.2)
    settings = {"timeout_s": 0.3, "max_attempts": 3}
    async with engine_factory(handler=handler, handlers=settings) as engine:
        await engine.run_until_idle()
        clock.advance(60 * SECOND)  # a retry, had one been scheduled, would be due by now
        await engine.run_until_idle()
        overruns = sample(engine, "infinite_scheduler_handler_overruns_total", entity="sms")
    assert [(c[0], c[1]) for c in handler.calls] == [(1, 1)]
    [row] = await repo.get(1)
    assert (row.status, row.attempts, row.last_error) == (Status.DONE, 1, None)
    assert overruns == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "sms 1 attempt 1: sync handler still running after its timeout of 0.3s; a thread cannot "
        "be stopped, so the job stays in flight and no retry starts until it returns"
    ) in warnings
    assert any(m.startswith("sms 1 attempt 1: sync handler returned after 1.") for m in warnings)


@SQLITE_ONLY
async def test_a_sync_handler_that_overran_and_failed_is_retried_only_after_it_returned(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock
) -> None:
    await repo.insert([sms(1, T0)], now_ms=T0)
    handler = ThreadedRecorder(sleep_s=0.8, fail_attempts=frozenset({1}))
    settings = {"timeout_s": 0.2, "max_attempts": 3}
    async with engine_factory(handler=handler, handlers=settings) as engine:
        await engine.run_until_idle()
        [row] = await repo.get(1)  # failed once it returned, retry claimed back into the wheel
        assert (row.status, row.due_ms, row.last_error) == (
            Status.CLAIMED,
            T0 + 50,
            "RuntimeError: boom 1",
        )
        clock.advance(50)
        await engine.run_until_idle()
    (_, first, _, first_end), (_, second, second_start, _) = handler.calls
    assert (first, second) == (1, 2) and second_start >= first_end
    [row] = await repo.get(1)
    assert (row.status, row.attempts) == (Status.DONE, 2)


@SQLITE_ONLY
async def test_sync_handlers_get_a_thread_each_up_to_the_concurrency(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """More blocking handlers than the default executor's min(32, cpus + 4) threads."""
    ids = list(range(40))
    await repo.insert([sms(i, T0) for i in ids], now_ms=T0)
    handler = ThreadedRecorder(sleep_s=0.5)
    settings = {"timeout_s": 1.5, "max_attempts": 1}
    async with engine_factory(handler=handler, handlers=settings) as engine:
        await engine.run_until_idle()
    assert sorted(c[0] for c in handler.calls) == ids
    assert len(handler.threads) == 40
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}


@SQLITE_ONLY
async def test_time_waiting_for_a_thread_is_not_handler_time(
    engine_factory: EngineFactory, repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    """Two threads, six 0.4 s handlers: the last ones start 0.8 s after they were due, past
    their 0.6 s timeout, and still have their whole timeout once a thread takes them."""
    ids = list(range(6))
    await repo.insert([sms(i, T0) for i in ids], now_ms=T0)
    handler = ThreadedRecorder(sleep_s=0.4)
    settings = {"timeout_s": 0.6, "max_attempts": 1, "threads": 2}
    async with engine_factory(handler=handler, handlers=settings) as engine:
        await engine.run_until_idle()
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}
    assert max(c[2] for c in handler.calls) - min(c[2] for c in handler.calls) >= 0.7
    assert not [r for r in caplog.records if "timeout" in r.getMessage()]


@SQLITE_ONLY
async def test_an_async_handler_that_blocks_the_loop_is_named_while_it_blocks(
    engine_factory: EngineFactory, repo: Repo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.insert([sms(1, T0), sms(2, T0 + 300)], now_ms=T0)
    fired: list[int | str] = []

    async def blocking_handler(ctx: JobContext[SmsEntity]) -> None:
        fired.append(ctx.job_id)
        if ctx.job_id == 1:
            time.sleep(1.0)  # noqa: ASYNC251 - the mistake under test: it blocks the event loop

    settings = {"loop_lag_warn_s": 0.3}
    async with engine_factory(handler=blocking_handler, handlers=settings) as engine:
        await engine.run_until_idle()
        clock.advance(300)
        await engine.run_until_idle()
        stalls = sample(engine, "infinite_scheduler_loop_stalls_total")
        lag_count = sample(engine, "infinite_scheduler_loop_lag_seconds_count")
    assert fired == [1, 2] and stalls == 1 and lag_count > 0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    where = f"at {__file__}:"
    during = [m for m in messages if m.startswith("event loop blocked for over 0.3s by sms job 1")]
    assert len(during) == 1 and where in during[0] and " in blocking_handler;" in during[0]
    assert "use a sync handler, which runs on a thread" in during[0]
    after = [m for m in messages if m.startswith("event loop was blocked for ")]
    assert len(after) == 1 and "by sms job 1, at" in after[0]
    record = next(r for r in caplog.records if r.getMessage() == during[0])
    assert (getattr(record, "job_id", None), getattr(record, "entity", None)) == (1, "sms")
    assert set((await statuses(repo, [1, 2])).values()) == {Status.DONE}
