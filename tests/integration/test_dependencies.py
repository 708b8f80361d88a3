"""Jobs that wait for others, on every store of tests/conftest.py's ``backend``.

The engines run in manual mode on a fake clock (tests/integration/test_engine.py explains it):
``run_until_idle()`` also runs the dependency release each turn, before the fetch, so a job whose
dependency finished is released and claimed within the same call, and what fires when follows
from the clock alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from infinite_scheduler import DependencyRefused, DependsOn, Job, SchedulerClient
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.jobs import JobContext
from infinite_scheduler.management import JobService
from repos.base import RowRef, ShardingRepository, Status
from repos.dependencies import Edge, JobRef, Must
from repos.examples import ORDERS, SMS, OrderEntity, SmsEntity
from repos.registry import make_dependencies

pytestmark = pytest.mark.timeout(60)

Repo = ShardingRepository[Any, Any]
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
SECOND = 1000


def sms(i: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


def order(key: str, at_ms: int) -> OrderEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return OrderEntity(order_id=key, expires_at=at, customer_id=1, amount_cents=100)


def after(*ids: int, must: str = "complete", entity: str = "sms") -> tuple[DependsOn, ...]:
    return tuple(DependsOn(entity, i, must=must) for i in ids)  # type: ignore[arg-type]


class Recorder:
    """Records (entity, id, fired_ms); fails the ids in `fail`."""

    def __init__(self, clock: FakeClock, fail: frozenset[int] = frozenset()) -> None:
        self.clock = clock
        self.fail = fail
        self.fires: list[tuple[str, Any, int]] = []

    async def __call__(self, ctx: JobContext[Any]) -> None:
        self.fires.append((ctx.entity_type, ctx.job_id, ctx.fired_ms))
        if ctx.job_id in self.fail:
            raise RuntimeError(f"boom {ctx.job_id}")

    def ids(self, entity: str = "sms") -> list[Any]:
        return [i for e, i, _ in self.fires if e == entity]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def config_of(backend: Any, backend_url: str) -> Callable[..., Any]:
    def make(node_id: str = "node-a") -> Any:
        return load_config(
            None,
            store={"url": backend_url, "layout": backend.layout, "driver": backend.driver},
            handlers={"max_attempts": 1, "timeout_s": 2.0},
            cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
            fetch_interval_s=0.2,
            lookahead_s=0.6,
            metrics_port=0,
            node_id=node_id,
        )

    return make


@pytest.fixture
async def engine_of(
    config_of: Callable[..., Any], clock: FakeClock
) -> AsyncIterator[Callable[..., Any]]:
    """Started manual engines serving SMS and ORDERS with a Recorder; stopped at teardown."""
    started: list[InfiniteScheduler] = []

    async def start(recorder: Recorder, node_id: str = "node-a") -> InfiniteScheduler:
        engine = InfiniteScheduler(config_of(node_id), clock=clock, manual=True)
        engine.register(SMS, recorder)
        engine.register(ORDERS, recorder)
        await engine.__aenter__()
        started.append(engine)
        return engine

    yield start
    for engine in reversed(started):
        await engine.__aexit__(None, None, None)


async def status_of(engine: InfiniteScheduler, key: int, entity: str = "sms") -> Status | int:
    [row] = await engine.repositories[entity].get(key)
    return row.status


async def edges_left(backend_url: str) -> int:
    store = make_dependencies(backend_url)
    await store.open()
    try:
        return await store.count()
    finally:
        await store.close()


async def test_a_job_fires_after_its_dependency_and_not_before(engine_of, clock) -> None:
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    await engine.schedule([Job(sms(2, T0 + SECOND), depends_on=after(1)), sms(1, T0 + 5 * SECOND)])
    clock.advance(SECOND)
    await engine.run_until_idle()
    assert recorder.fires == []  # 2 is due, but 1 is not done
    assert await status_of(engine, 2) is Status.WAITING
    clock.advance(4 * SECOND)
    await engine.run_until_idle()
    assert recorder.ids() == [1, 2]
    assert recorder.fires[1][2] >= recorder.fires[0][2]


async def test_a_released_job_still_waits_for_its_own_time(engine_of, clock, backend_url) -> None:
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    await engine.schedule([sms(1, T0 + SECOND), Job(sms(2, T0 + 10 * SECOND), depends_on=after(1))])
    clock.advance(SECOND)
    await engine.run_until_idle()
    assert recorder.ids() == [1]
    assert await status_of(engine, 2) is Status.PENDING  # released, not fired
    assert await edges_left(backend_url) == 0  # the edge went with the release
    clock.advance(9 * SECOND - 1)
    await engine.run_until_idle()
    assert recorder.ids() == [1]
    clock.advance(1)
    await engine.run_until_idle()
    assert recorder.fires[1] == ("sms", 2, T0 + 10 * SECOND)


async def test_a_failed_must_succeed_dependency_fails_the_job_with_the_reason(
    engine_of, clock, backend_url
) -> None:
    recorder = Recorder(clock, fail=frozenset({1}))
    engine = await engine_of(recorder)
    job = Job(order("o7", T0 + SECOND), depends_on=after(1, must="succeed"))
    await engine.schedule([sms(1, T0 + SECOND), job])
    clock.advance(SECOND)
    await engine.run_until_idle()
    assert recorder.ids() == [1] and recorder.ids("orders") == []
    [row] = await engine.repositories["orders"].get("o7")
    assert row.status is Status.FAILED
    assert row.last_error == "dependency sms 1 FAILED; it had to succeed"
    assert row.fired_at_ms is None  # it never fired
    assert await edges_left(backend_url) == 0


async def test_a_complete_dependency_that_failed_lets_the_job_fire(engine_of, clock) -> None:
    recorder = Recorder(clock, fail=frozenset({1}))
    engine = await engine_of(recorder)
    await engine.schedule([sms(1, T0 + SECOND), Job(sms(2, T0 + SECOND), depends_on=after(1))])
    clock.advance(SECOND)
    await engine.run_until_idle()
    assert recorder.ids() == [1, 2]
    assert await status_of(engine, 1) is Status.FAILED
    assert await status_of(engine, 2) is Status.DONE


async def test_a_chain_fires_in_order_and_a_failure_runs_down_it(engine_of, clock) -> None:
    recorder = Recorder(clock, fail=frozenset({11}))
    engine = await engine_of(recorder)
    at = T0 + SECOND
    await engine.schedule(
        [
            Job(sms(3, at), depends_on=after(2)),  # c -> b -> a, stored in one call
            Job(sms(2, at), depends_on=after(1)),
            sms(1, at),
            Job(sms(13, at), depends_on=after(12, must="succeed")),
            Job(sms(12, at), depends_on=after(11, must="succeed")),
            sms(11, at),
        ]
    )
    clock.advance(SECOND)
    await engine.run_until_idle()
    assert [i for i in recorder.ids() if i < 10] == [1, 2, 3]
    assert [i for i in recorder.ids() if i > 10] == [11]
    [row] = await engine.repositories["sms"].get(13)
    assert (row.status, row.last_error) == (
        Status.FAILED,
        "dependency sms 12 FAILED; it had to succeed",
    )


@pytest.mark.parametrize("hours", [1, 13], ids=["same-shard", "next-day-shard"])
async def test_a_rescheduled_dependency_is_waited_for_at_its_new_time(
    engine_of, clock, config_of, hours
) -> None:
    """The edges name their dependency by id and time: a reschedule moves them with the row
    (same transaction), so its dependents neither fire early nor wait forever, nor fail."""
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    complete = Job(sms(2, T0 + SECOND), depends_on=after(1))
    succeed = Job(sms(3, T0 + SECOND), depends_on=after(1, must="succeed"))
    await engine.schedule([sms(1, T0 + 5 * SECOND), complete, succeed])
    new_at = T0 + hours * 3_600 * SECOND
    async with JobService(config_of(), SMS, ORDERS, clock=clock) as jobs:
        assert (await jobs.reschedule("sms", 1, new_at)).scheduled_ms == new_at
    clock.advance(5 * SECOND)
    await engine.run_until_idle()
    assert recorder.fires == []
    assert [await status_of(engine, i) for i in (2, 3)] == [Status.WAITING, Status.WAITING]
    clock.advance(new_at - clock.now_ms())
    await engine.run_until_idle()
    assert sorted(recorder.ids()[1:]) == [2, 3] and recorder.ids()[0] == 1


async def test_a_job_stored_after_its_dependency_finished_is_released(engine_of, clock) -> None:
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    await engine.schedule([sms(1, T0 + SECOND)])
    clock.advance(SECOND)
    await engine.run_until_idle()
    await engine.schedule([Job(sms(2, T0 + SECOND), depends_on=after(1, must="succeed"))])
    await engine.run_until_idle()
    assert recorder.ids() == [1, 2]


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        (
            lambda: [Job(sms(1, T0), depends_on=after(1))],
            "job sms 1: dependency sms 1 (must complete): it makes a cycle (sms 1 -> sms 1)",
        ),
        (
            lambda: [
                sms(5, T0),
                Job(sms(1, T0), depends_on=after(2)),
                Job(sms(2, T0), depends_on=after(3)),
                Job(sms(3, T0), depends_on=after(1)),
            ],
            "it makes a cycle (sms 1 -> sms 2 -> sms 3 -> sms 1)",
        ),
        (
            lambda: [sms(5, T0), Job(sms(1, T0), depends_on=after(99))],
            "job sms 1: dependency sms 99 (must complete): no job of this id is stored",
        ),
        (
            lambda: [Job(sms(1, T0), depends_on=after(5, entity="emails"))],
            "dependency emails 5 (must complete): unknown entity type (served: 'orders', 'sms')",
        ),
        (
            lambda: [sms(5, T0), Job(sms(1, T0), depends_on=(DependsOn("sms", "5"),))],
            "dependency sms '5' (must complete): sms ids are of type int",
        ),
    ],
    ids=["itself", "cycle", "missing", "unknown-entity", "id-type"],
)
async def test_refused_dependencies_store_nothing(
    engine_of, clock, backend_url, jobs, message
) -> None:
    engine = await engine_of(Recorder(clock))
    await engine.schedule([sms(50, T0 + SECOND), Job(sms(51, T0 + SECOND), depends_on=after(50))])
    with pytest.raises(DependencyRefused) as refused:
        await engine.schedule(jobs())
    assert message in str(refused.value)
    assert "nothing stored" in str(refused.value)
    for key in (1, 2, 3, 5):
        assert await engine.repositories["sms"].get(key) == []
    assert await edges_left(backend_url) == 1  # 51's, stored before


async def test_a_waiting_job_can_be_cancelled(engine_of, clock, backend_url) -> None:
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    await engine.schedule([sms(1, T0 + 5 * SECOND), Job(sms(2, T0 + SECOND), depends_on=after(1))])
    assert await engine.cancel(SMS, [2]) == 1
    assert await status_of(engine, 2) is Status.CANCELLED
    clock.advance(5 * SECOND)
    await engine.run_until_idle()
    assert recorder.ids() == [1]
    assert await status_of(engine, 2) is Status.CANCELLED
    assert await edges_left(backend_url) == 0  # the release dropped the cancelled job's edge


async def test_the_client_stores_jobs_that_wait(engine_of, clock, config_of) -> None:
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    async with SchedulerClient(config_of(), SMS, ORDERS, clock=clock) as client:
        await client.schedule([sms(1, T0 + SECOND)])
        stored = await client.schedule(
            [Job(order("o7", T0 + SECOND), depends_on=after(1, must="succeed"))]
        )
        assert stored == 1
        [row] = await client.get(ORDERS, "o7")
        assert row.status is Status.WAITING
        with pytest.raises(DependencyRefused, match="no job of this id"):
            await client.schedule([Job(sms(2, T0), depends_on=after(3))])
        with pytest.raises(ValueError, match="on_duplicate='ignore'"):
            await client.schedule([Job(sms(2, T0), depends_on=after(1))], on_duplicate="ignore")
        assert await client.get(SMS, 2) == []
    clock.advance(SECOND)
    await engine.run_until_idle()
    assert recorder.ids() == [1] and recorder.ids("orders") == ["o7"]


async def test_a_waiting_row_counts_as_unfinished_in_its_shard(make_repo) -> None:
    repo = await make_repo()
    await repo.insert([sms(1, T0)], now_ms=T0)
    edge = Edge(JobRef("sms", 2, T0), JobRef("sms", 1, T0), Must.COMPLETE)
    await repo.insert([sms(2, T0)], now_ms=T0, edges=[edge])
    [shard] = await repo.list_shards(counts=True)
    assert shard.rows == {Status.PENDING: 1, Status.WAITING: 1}
    assert shard.unfinished == 2
    assert await repo.locate([1, 2, 3]) == {
        RowRef(1, T0): Status.PENDING,
        RowRef(2, T0): Status.WAITING,
    }
    with pytest.raises(ValueError, match="on_duplicate='ignore'"):
        await repo.insert([sms(3, T0)], now_ms=T0, edges=[edge], on_duplicate="ignore")


@dataclass(frozen=True)
class StoreBackend:
    kind: str = "mysql"
    layout: str = "multi-table"
    driver: str = "asyncmy"


@pytest.mark.parametrize(
    "backend",
    [pytest.param(StoreBackend(), marks=pytest.mark.mysql)],
    indirect=True,
    ids=["mysql-multi-asyncmy"],
)
async def test_two_engines_release_a_job_once(engine_of, clock) -> None:
    recorders = [Recorder(clock), Recorder(clock)]
    a = await engine_of(recorders[0], "node-a")
    b = await engine_of(recorders[1], "node-b")
    await a.schedule([sms(1, T0 + SECOND), Job(sms(2, T0 + SECOND), depends_on=after(1))])
    clock.advance(SECOND)
    for engine in (a, b):
        await engine.parts.fetcher.fetch_once()
        await engine.run_until_idle()
    reports = await asyncio.gather(
        a.parts.dependencies.release_once(), b.parts.dependencies.release_once()
    )
    await asyncio.gather(a.run_until_idle(), b.run_until_idle())
    await asyncio.gather(a.run_until_idle(), b.run_until_idle())
    assert sorted(r.ready for r in reports) in ([0, 0], [0, 1])  # never both
    assert [a.parts.dependencies.lease.held, b.parts.dependencies.lease.held].count(True) == 1
    fired = recorders[0].ids() + recorders[1].ids()
    assert sorted(fired) == [1, 2]  # each once


# -- the release reads the edges that may have moved, not every edge --------------------------


async def test_a_pass_reads_only_the_edges_whose_dependencies_may_have_finished(
    engine_of, clock
) -> None:
    """200 jobs wait for one due in an hour: once their edges were looked at, the passes of
    the next minutes read none of them (the old release read all 200 every pass)."""
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    later = T0 + 3600 * SECOND
    await engine.schedule([sms(1, later)])
    await engine.schedule([Job(sms(100 + i, T0 + SECOND), depends_on=after(1)) for i in range(200)])
    release = engine.parts.dependencies
    await release.release_once()
    read = release.edges_read
    assert read == 200  # new edges: looked at once, then parked until 1's time
    for _ in range(5):
        clock.advance(10 * SECOND)
        await engine.run_until_idle()
    assert release.edges_read == read
    assert recorder.fires == []
    clock.advance(later - clock.now_ms())
    await engine.run_until_idle()
    assert sorted(recorder.ids()) == [1, *range(100, 300)]


async def test_a_failure_runs_down_a_whole_chain_in_one_pass(engine_of, clock, backend_url) -> None:
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    at = T0 + 10 * SECOND
    await engine.schedule([sms(1, at)])
    chain = [Job(sms(k, at), depends_on=after(k - 1, must="succeed")) for k in range(2, 7)]
    await engine.schedule(chain)
    assert await engine.cancel(SMS, [1]) == 1
    report = await engine.parts.dependencies.release_once()
    assert report.failed == 5  # the old release failed one link per pass
    for k in range(2, 7):
        [row] = await engine.repositories["sms"].get(k)
        assert (row.status, row.last_error) == (
            Status.FAILED,
            f"dependency sms {k - 1} {'CANCELLED' if k == 2 else 'FAILED'}; it had to succeed",
        )
    assert await edges_left(backend_url) == 0


async def test_a_released_dependency_wakes_its_dependents_at_its_time(
    engine_of, clock, backend_url
) -> None:
    """c -> b -> a, all due later: a pass parks c's edge while b waits; b's release wakes it
    for b's time, and the chain fires in order, each link as the one before finishes."""
    recorder = Recorder(clock)
    engine = await engine_of(recorder)
    a, b, c = T0 + 60 * SECOND, T0 + 61 * SECOND, T0 + 62 * SECOND
    await engine.schedule(
        [Job(sms(3, c), depends_on=after(2)), Job(sms(2, b), depends_on=after(1)), sms(1, a)]
    )
    release = engine.parts.dependencies
    await engine.run_until_idle()
    read = release.edges_read
    clock.advance(30 * SECOND)
    await engine.run_until_idle()
    assert release.edges_read == read  # nothing moved: nothing read
    clock.advance(a - clock.now_ms())
    await run_until(engine, clock, c + SECOND)
    assert [(i, fired) for _, i, fired in recorder.fires] == [(1, a), (2, b), (3, c)]
    assert await edges_left(backend_url) == 0


async def run_until(engine: InfiniteScheduler, clock: FakeClock, end_ms: int) -> None:
    while clock.now_ms() < end_ms:
        await engine.run_until_idle()
        clock.advance(500)


# -- the dependencies table's contract --------------------------------------------------------


@pytest.fixture
async def dependency_store(backend: Any, backend_url: str) -> AsyncIterator[Any]:
    store = make_dependencies(backend_url, driver=backend.driver)
    await store.open()
    try:
        yield store
    finally:
        assert store.checked_out() == 0  # type: ignore[attr-defined]
        await store.close()


def typed(found: list[Edge]) -> list[tuple[int, int]]:
    return sorted((int(e.job.key), int(e.on.key)) for e in found)


def _edge(job: int, on: int, on_at: int) -> Edge:
    return Edge(JobRef("sms", job, T0), JobRef("sms", on, on_at), Must.COMPLETE)


async def test_due_postpone_and_check_dependents(dependency_store, make_repo) -> None:
    repo = await make_repo()
    edges = [_edge(2, 1, T0), _edge(2, 5, T0 + 50), _edge(3, 1, T0), _edge(4, 9, T0 + 90)]
    for job in (2, 3, 4):
        await repo.insert([sms(job, T0)], now_ms=T0, edges=[e for e in edges if e.job.key == job])
    # New edges are due at once; a job comes with all of its edges.
    assert typed(await dependency_store.due(before_ms=1, limit=10)) == [
        (2, 1),
        (2, 5),
        (3, 1),
        (4, 9),
    ]
    assert len({e.job for e in await dependency_store.due(before_ms=1, limit=2)}) == 2
    assert await dependency_store.postpone(edges[:3], at_ms=T0 + 10) == 3
    assert await dependency_store.postpone(edges[3:], at_ms=T0 + 1000, their_time=True) == 1
    assert await dependency_store.due(before_ms=T0 + 10, limit=10) == []
    assert typed(await dependency_store.due(before_ms=T0 + 11, limit=10)) == [
        (2, 1),
        (2, 5),
        (3, 1),
    ]
    # 4's edge: at its dependency's time (T0 + 90), earlier than T0 + 1000.
    assert typed(await dependency_store.due(before_ms=T0 + 91, limit=10))[-1] == (4, 9)
    await dependency_store.postpone(edges, at_ms=2**62)
    assert await dependency_store.check_dependents([JobRef("sms", 1, T0)], at_ms=T0 + 5) == 2
    assert typed(await dependency_store.due(before_ms=T0 + 6, limit=10)) == [(2, 1), (2, 5), (3, 1)]
    n = await dependency_store.check_dependents(
        [JobRef("sms", 9, T0 + 90)], at_ms=T0 + 1000, their_time=True
    )
    assert n == 1
    assert typed(await dependency_store.due(before_ms=T0 + 91, limit=10))[-1] == (4, 9)
    assert await dependency_store.check_dependents([JobRef("sms", 7, T0)], at_ms=0) == 0


async def test_a_dependencies_table_of_the_version_before_check_at_is_upgraded_at_open(
    backend, backend_url, dependency_store, make_repo, raw_sql
) -> None:
    repo = await make_repo()
    await repo.insert([sms(2, T0)], now_ms=T0, edges=[_edge(2, 1, T0)])
    old_shape = {
        "sqlite": [
            "DROP INDEX ix_dependencies_check",
            "DROP INDEX ix_dependencies_on",
            "ALTER TABLE dependencies DROP COLUMN check_at",
        ],
        "mysql": [
            "ALTER TABLE dependencies DROP KEY ix_dependencies_check,"
            " DROP KEY ix_dependencies_on, DROP COLUMN check_at"
        ],
    }[backend.kind]
    for statement in old_shape:
        await raw_sql(dependency_store, statement)
    await repo.insert([sms(3, T0)], now_ms=T0, edges=[_edge(3, 1, T0)])  # an old node's insert
    again = make_dependencies(backend_url, driver=backend.driver)
    await again.open()
    try:
        assert len(await again.due(before_ms=1, limit=10)) == 2  # every old edge looked at once
        assert await again.check_dependents([JobRef("sms", 1, T0)], at_ms=T0) == 2
    finally:
        await again.close()
