"""Shard maintenance runs on one node of a store: the holder of the lease ``maintenance``.

Engines in manual mode on a fake clock, unless a test says ``wall``: a pass runs when the test
calls ``engine.parts.maintenance.maintain(now_ms)``, as the maintenance loop would every
interval. Two engines need a MySQL store (SQLite runs one node); the lease's expiry is the
database's clock, so the test that lets it lapse waits for it (0.7 s: the ttl of a 0.1 s
interval and a 0.5 s node timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.lease import maintenance_lease_ttl_ms
from repos.base import Claimant, Status
from repos.cluster import Membership, NodeState
from repos.examples import SMS, SmsEntity
from repos.registry import make_membership

pytestmark = pytest.mark.timeout(30)

T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
INTERVAL_S = 0.1  #: shards.maintenance_interval_s of these tests
TIMEOUT_S = 0.5  #: cluster.node_timeout_s
TTL_S = maintenance_lease_ttl_ms(interval_s=INTERVAL_S, node_timeout_s=TIMEOUT_S) / 1000


class Backend(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def layout(self) -> Any: ...

    @property
    def driver(self) -> Any: ...


@dataclass(frozen=True)
class StoreBackend:
    kind: str
    layout: str = "multi-table"
    driver: str = "asyncmy"


#: Two engines at once: MySQL, both layouts and both drivers between them.
MYSQL = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(StoreBackend("mysql"), id="mysql-multi-asyncmy", marks=pytest.mark.mysql),
        pytest.param(
            StoreBackend("mysql", "partitioned", "aiomysql"),
            id="mysql-partitioned-aiomysql",
            marks=pytest.mark.mysql,
        ),
    ],
    indirect=True,
)

EngineFactory = Callable[..., InfiniteScheduler]


def sms(i: int, at_ms: int) -> SmsEntity:
    return SmsEntity(
        id=i, scheduled_at=datetime.fromtimestamp(at_ms / 1000, UTC), phone="+1555", message="m"
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def engine_factory(backend: Backend, backend_url: str, clock: FakeClock) -> EngineFactory:
    def build(node_id: str, *, wall: bool = False, **settings: Any) -> InfiniteScheduler:
        defaults: dict[str, Any] = {
            "fetch_interval_s": 0.2,
            "lookahead_s": 0.6,
            "metrics_port": 0,
            "cluster": {"heartbeat_interval_s": 0.1, "node_timeout_s": TIMEOUT_S},
            "shards": {"maintenance_interval_s": INTERVAL_S},
        }
        store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
        config = load_config(None, node_id=node_id, store=store, **{**defaults, **settings})
        engine = (
            InfiniteScheduler(config)
            if wall
            else InfiniteScheduler(config, clock=clock, manual=True)
        )
        engine.register(SMS, lambda ctx: None)
        return engine

    return build


@pytest.fixture
async def members(backend: Backend, backend_url: str) -> AsyncIterator[Membership]:
    membership = make_membership(backend_url, driver=backend.driver)
    await membership.open()
    try:
        yield membership
    finally:
        await membership.close()


def lease_held(engine: InfiniteScheduler) -> float | None:
    return engine.metrics.registry.get_sample_value(
        "infinite_scheduler_lease_held", {"name": "maintenance"}
    )


async def maintained(engine: InfiniteScheduler, clock: FakeClock) -> bool:
    """One try at a pass, as the loop makes every interval: True if this engine ran it."""
    return await engine.parts.maintenance.maintain(clock.now_ms()) is not None


async def eventually(check: Callable[[], bool], timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


@MYSQL
async def test_only_the_holder_of_the_lease_runs_maintenance_passes(
    engine_factory: EngineFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine_factory("node-a") as a, engine_factory("node-b") as b:
        with caplog.at_level(logging.DEBUG, logger="infinite_scheduler"):
            for _ in range(3):
                assert await maintained(a, clock)
                assert not await maintained(b, clock)
                clock.advance(int(INTERVAL_S * 1000))
        assert (a.parts.maintenance.passes, b.parts.maintenance.passes) == (3, 0)
        assert b.parts.maintenance.skipped == 3
        assert (lease_held(a), lease_held(b)) == (1, 0)
        skips = [r for r in caplog.records if r.name == "infinite_scheduler.maintenance"]
        assert {(r.levelno, r.getMessage()) for r in skips} == {
            (
                logging.DEBUG,
                "another node holds the lease 'maintenance': no shard maintenance here this time",
            )
        }
        took = [r.getMessage() for r in caplog.records if r.name == "infinite_scheduler.lease"]
        assert took == [f"took the lease 'maintenance' (epoch {a.epoch})"]  # once, not per pass


@MYSQL
async def test_a_graceful_stop_releases_the_lease_and_another_node_takes_it_at_its_next_pass(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    async with engine_factory("node-b") as b:
        async with engine_factory("node-a") as a:
            assert await maintained(a, clock)
            assert not await maintained(b, clock)
        assert lease_held(a) == 0
        assert await maintained(b, clock)  # at once: the lease's ttl is TTL_S, not waited
        assert lease_held(b) == 1


@MYSQL
async def test_a_lease_its_holder_stopped_renewing_goes_to_another_node_once_it_expired(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    """Node a takes the lease, then makes no pass (as if killed; its row stays ACTIVE, nobody
    declared it dead): node b is refused until the lease expires by the database's clock."""
    async with engine_factory("node-b") as b:
        async with engine_factory("node-a") as a:
            assert await maintained(a, clock)
            assert not await maintained(b, clock)
            await asyncio.sleep(TTL_S + 0.05)  # the fake clock does not move the database's
            assert await maintained(b, clock)
            assert not await maintained(a, clock)  # back from its stall: the lease is b's now
            assert (lease_held(a), lease_held(b)) == (0, 1)
        # b is live: renewed now (a manual engine renews only when turned, and the real
        # seconds slept aged its row by the database's clock; c would take it for dead).
        assert await b.parts.node.beat()
        async with engine_factory("node-c") as c:  # a's stop released nothing of b's
            assert not await maintained(c, clock)
        assert await maintained(b, clock)


@MYSQL
async def test_wall_only_one_of_two_running_engines_runs_passes_until_it_stops(
    engine_factory: EngineFactory,
) -> None:
    """The maintenance loops themselves, every 0.1 s: the holder's passes go on, the other's
    are skipped; once the holder stops, the other's next pass runs, well before the lease
    would have expired (2.2 s: a node timeout of 2 s)."""
    slow_timeout = {
        "lookahead_s": 2,
        "fetch_interval_s": 1,
        "cluster": {"heartbeat_interval_s": 0.5, "node_timeout_s": 2},
    }
    async with AsyncExitStack() as stack:
        a_run = AsyncExitStack()
        stack.push_async_callback(a_run.aclose)  # if the test fails before a's stop
        a = await a_run.enter_async_context(engine_factory("node-a", wall=True, **slow_timeout))
        await eventually(lambda: a.parts.maintenance.passes >= 1)
        b = await stack.enter_async_context(engine_factory("node-b", wall=True, **slow_timeout))
        await eventually(lambda: b.parts.maintenance.skipped >= 3)
        assert b.parts.maintenance.passes == 0
        assert a.parts.maintenance.passes >= 3
        await a_run.aclose()  # a graceful stop
        await eventually(lambda: b.parts.maintenance.passes >= 1, timeout_s=1)
        assert lease_held(b) == 1


async def test_a_pass_under_the_lease_prunes_old_left_and_dead_rows_of_the_nodes_table(
    engine_factory: EngineFactory, clock: FakeClock, members: Membership, raw_sql: Any
) -> None:
    """On every store: the table does not grow by one row per process start forever. Rows
    older than shards.retention_s go if they left or were declared dead, never running ones."""
    epochs = []
    for i in range(3):
        async with engine_factory(f"old-{i}") as old:  # LEFT at its stop
            epochs.append(old.epoch)
    retention_ms = load_config(None).shards.retention_s * 1000
    await raw_sql(
        members,
        f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - {retention_ms + 1000}"
        f" WHERE epoch IN ({epochs[0]}, {epochs[1]})",
    )
    await raw_sql(members, f"UPDATE nodes SET state = 3 WHERE epoch = {epochs[1]}")
    async with engine_factory("node-a") as a:
        report = await a.parts.maintenance.maintain(clock.now_ms())
        assert report is not None and report.nodes_pruned == 2
        remaining = [n.epoch for n in (await members.list_nodes(finished=100)).nodes]
        assert remaining == [a.epoch, epochs[2]]


async def test_a_pass_under_the_lease_prunes_revocations_no_running_epoch_will_take(
    engine_factory: EngineFactory, clock: FakeClock, members: Membership, raw_sql: Any
) -> None:
    """On every store: a revocation posted to a node that stopped before reading it would stay
    forever; the pass deletes it, and keeps the running node's."""
    async with engine_factory("old") as old:
        gone = old.epoch  # LEFT at its stop
    async with engine_factory("node-a") as a:
        values = f"({gone}, 'sms', '1', 1000), ({a.epoch}, 'sms', '2', 1000)"
        await raw_sql(
            members, f"INSERT INTO revocations (epoch, entity, job_id, at_ms) VALUES {values}"
        )
        report = await a.parts.maintenance.maintain(clock.now_ms())
        assert report is not None and report.revocations_pruned == 1
        assert [r.key for r in await members.take_revocations(a.epoch)] == ["2"]
        assert await members.take_revocations(gone) == []


@MYSQL
async def test_a_pass_under_the_lease_hands_back_claims_left_under_finished_epochs(
    engine_factory: EngineFactory,
    clock: FakeClock,
    members: Membership,
    repo: Any,
    raw_sql: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Claims under an epoch declared DEAD by a node that died before its takeover, or under
    one that LEFT without handing back (the store failed at its stop), would stay CLAIMED until
    some node starts. The lease's holder sweeps each such epoch once; a running node's claims
    are never touched, and a second pass moves nothing."""
    async with engine_factory("node-a") as a:
        now = clock.now_ms()
        await repo.insert([sms(i, now) for i in range(1, 5)], now_ms=now)
        epochs = {}
        for key, name in ((1, "declared"), (2, "left"), (3, "running")):
            joined = await members.join(
                name, host="h", pid=key, version="v", node_timeout_ms=int(TIMEOUT_S * 1000)
            )
            epochs[name] = joined.epoch
            claimant = Claimant(name, joined.epoch)
            [job] = await repo.claim_due(
                claimant, now_ms=now, before_ms=now + 1, since_ms=now, limit=1
            )
            assert job.key == key
        await raw_sql(
            members,
            "UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000"
            f" WHERE epoch = {epochs['declared']}",
        )
        assert await members.declare_dead(epochs["declared"], int(TIMEOUT_S * 1000))
        assert await members.set_state(epochs["left"], NodeState.LEFT)

        with caplog.at_level(logging.WARNING, logger="infinite_scheduler.takeover"):
            report = await a.parts.maintenance.maintain(now)
        assert report is not None and report.claims_swept == 2
        states = {key: (await repo.get(key))[0] for key in (1, 2, 3)}
        assert {k: (r.status, r.attempts) for k, r in states.items()} == {
            1: (Status.PENDING, 0),
            2: (Status.PENDING, 0),
            3: (Status.CLAIMED, 1),
        }
        swept = sorted(r.getMessage() for r in caplog.records)
        assert swept == [
            f"1 claims were left under node declared epoch {epochs['declared']}, which is DEAD:"
            " handed back, they fire once, now",
            f"1 claims were left under node left epoch {epochs['left']}, which is LEFT:"
            " handed back, they fire once, now",
        ]
        assert {getattr(r, "dead_epoch", None) for r in caplog.records} == {
            epochs["declared"],
            epochs["left"],
        }

        await a.run_until_idle()
        assert [(await repo.get(k))[0].status for k in (1, 2, 3, 4)] == [
            Status.DONE,
            Status.DONE,
            Status.CLAIMED,
            Status.DONE,
        ]
        clock.advance(int(INTERVAL_S * 1000))
        again = await a.parts.maintenance.maintain(clock.now_ms())
        assert again is not None and again.claims_swept == 0
