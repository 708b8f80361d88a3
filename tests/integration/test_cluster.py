"""The engine as a node of its store: join at start, heartbeat, self-fencing, leave at stop.

Every test runs on each store of tests/conftest.py's ``backend``, the engine in manual mode on
a fake clock (its heartbeat is a turn's first step, once an interval has passed on that clock,
and the fence measures on it too) unless it says ``wall``. A heartbeat that cannot get through
is made real: the nodes table is renamed away behind the engine's back, then back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import NodeDeclaredDead, NodeIdInUse, SingleNodeStore, StoreMissing
from infinite_scheduler.jobs import JobContext
from infinite_scheduler.node import Identity, join, stopped
from infinite_scheduler.takeover import RECENT_FIRST_MS
from repos.base import Claimant, ShardingRepository, Status
from repos.cluster import Membership, NodeInfo, NodeState
from repos.examples import SMS, SmsEntity
from repos.registry import make_membership, make_repository

pytestmark = pytest.mark.timeout(30)

Repo = ShardingRepository[Any, Any]
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
INTERVAL_MS = 100  #: cluster.heartbeat_interval_s of these tests
TIMEOUT_MS = 500  #: cluster.node_timeout_s: the fence closes 400 ms after the last renewal


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


#: For the wall-clock tests, which take real time: one SQLite and one MySQL store suffice.
TWO_STORES = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(StoreBackend("sqlite"), id="sqlite"),
        pytest.param(StoreBackend("mysql"), id="mysql-multi-asyncmy", marks=pytest.mark.mysql),
    ],
    indirect=True,
)


class Recorder:
    def __init__(self) -> None:
        self.fires: list[tuple[Any, int, int]] = []  #: (id, attempt, fired_ms)

    async def __call__(self, ctx: JobContext[Any]) -> None:
        self.fires.append((ctx.job_id, ctx.attempt, ctx.fired_ms))


def sms(i: int, at_ms: int) -> SmsEntity:
    return SmsEntity(
        id=i, scheduled_at=datetime.fromtimestamp(at_ms / 1000, UTC), phone="+1555", message="m"
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


EngineFactory = Callable[..., InfiniteScheduler]


@pytest.fixture
def engine_factory(backend: Backend, backend_url: str, clock: FakeClock) -> EngineFactory:
    def build(
        *,
        handler: Any = None,
        node_id: str = "node-a",
        wall: bool = False,
        repository: Repo | None = None,
        **settings: Any,
    ) -> InfiniteScheduler:
        defaults: dict[str, Any] = {
            "node_id": node_id,
            "fetch_interval_s": 0.2,
            "lookahead_s": 0.6,
            "metrics_port": 0,
            "handlers": {"drain_timeout_s": 1.0},
            "cluster": {
                "heartbeat_interval_s": INTERVAL_MS / 1000,
                "node_timeout_s": TIMEOUT_MS / 1000,
            },
        }
        store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
        config = load_config(None, store=store, **{**defaults, **settings})
        engine = (
            InfiniteScheduler(config)
            if wall
            else InfiniteScheduler(config, clock=clock, manual=True)
        )
        engine.register(SMS, handler or Recorder(), repository=repository)
        return engine

    return build


@pytest.fixture
async def members(backend: Backend, backend_url: str) -> AsyncIterator[Membership]:
    """The test's own look at the nodes table, as another node (or an operator) has."""
    membership = make_membership(backend_url, driver=backend.driver)
    await membership.open()
    try:
        yield membership
    finally:
        await membership.close()


async def node_row(members: Membership, epoch: int) -> NodeInfo:
    [found] = [n for n in (await members.list_nodes(finished=50)).nodes if n.epoch == epoch]
    return found


async def rename_nodes(raw_sql: Any, repo: Repo, away: bool) -> None:
    """Take the nodes table away (every heartbeat fails), or bring it back."""
    names = ("nodes", "nodes_away") if away else ("nodes_away", "nodes")
    await raw_sql(repo, f"ALTER TABLE {names[0]} RENAME TO {names[1]}")


async def eventually(check: Callable[[], bool], timeout_s: float = 3) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


def gauge(engine: InfiniteScheduler, name: str) -> float | None:
    return engine.metrics.registry.get_sample_value(f"infinite_scheduler_{name}")


# -- join and leave ----------------------------------------------------------------------------


async def test_an_engine_joins_at_start_renews_as_its_clock_moves_and_leaves_at_stop(
    engine_factory: EngineFactory, members: Membership, clock: FakeClock
) -> None:
    engine = engine_factory()
    with pytest.raises(RuntimeError, match="has not started"):
        _ = engine.epoch
    async with engine:
        epoch = engine.epoch
        joined = await node_row(members, epoch)
        assert (joined.node_id, joined.state) == ("node-a", NodeState.ACTIVE)
        assert (joined.host, joined.pid) == (socket.gethostname(), os.getpid())
        await engine.run_until_idle()
        assert (await node_row(members, epoch)).heartbeat_at_ms == joined.heartbeat_at_ms
        clock.advance(INTERVAL_MS)  # a turn renews once an interval passed on the clock
        await engine.run_until_idle()
        assert (await node_row(members, epoch)).heartbeat_at_ms > joined.heartbeat_at_ms
        assert gauge(engine, "nodes_live") == 1
        assert gauge(engine, "heartbeat_lag_seconds") == 0
        assert engine.parts.node.renewals == 1
    assert (await node_row(members, epoch)).state == NodeState.LEFT
    assert engine.epoch == epoch  # still readable after the run


async def test_a_graceful_stop_drains_as_draining_then_leaves(
    engine_factory: EngineFactory, members: Membership, clock: FakeClock
) -> None:
    """While the stop waits for a running handler, the node is DRAINING (live, claiming
    nothing more); once it handed everything back, LEFT."""
    states: list[NodeState | int] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: JobContext[SmsEntity]) -> None:
        started.set()
        await release.wait()

    engine = engine_factory(handler=slow, wall=True)
    async with engine:
        await engine.schedule([sms(1, time.time_ns() // 1_000_000)])
        await asyncio.wait_for(started.wait(), 3)
        epoch = engine.epoch
        engine.stop()

        async def watch() -> None:
            for _ in range(100):
                state = (await node_row(members, epoch)).state
                if state == NodeState.DRAINING:
                    states.append(state)
                    break
                await asyncio.sleep(0.01)
            release.set()

        watcher = asyncio.create_task(watch())
    await watcher
    assert states == [NodeState.DRAINING]
    assert (await node_row(members, epoch)).state == NodeState.LEFT


async def test_a_second_engine_with_the_same_node_id_is_refused_while_the_first_runs(
    engine_factory: EngineFactory, members: Membership, repo: Repo
) -> None:
    await repo.insert([sms(1, T0)], now_ms=T0)
    first = engine_factory(handler=Recorder())
    second = engine_factory(handler=Recorder())
    async with first:
        with pytest.raises(NodeIdInUse) as refused:
            async with second:
                pytest.fail("started beside a live node of its own id")
        assert str(refused.value).startswith(
            f"node id 'node-a' is in use by a live node 'node-a' (epoch {first.epoch} on host"
            f" {socket.gethostname()} pid {os.getpid()}, heartbeat "
        )
        assert [n.epoch for n in (await members.list_nodes(finished=0)).nodes] == [first.epoch]
        [row] = await repo.get(1)  # the first's start claimed it; the refused one took nothing
        assert (row.status, row.claimed_by) == (Status.CLAIMED, "node-a")
        await first.run_until_idle()
    async with second:  # the first left: the id is free
        assert second.epoch > first.epoch


async def test_sqlite_refuses_a_second_node_and_mysql_takes_it(
    engine_factory: EngineFactory, backend: Backend
) -> None:
    async with engine_factory(node_id="node-a") as first:
        other = engine_factory(node_id="node-b")
        if backend.kind == "mysql":
            async with other:
                assert other.epoch > first.epoch
                assert gauge(first, "nodes_live") is not None
            return
        with pytest.raises(SingleNodeStore, match="use MySQL/MariaDB for several nodes"):
            async with other:
                pass


async def test_auto_node_ids_get_a_new_epoch_at_every_start(
    backend: Backend, backend_url: str, members: Membership, clock: FakeClock
) -> None:
    config = load_config(
        None,
        node_id="AUTO",
        fetch_interval_s=0.2,
        lookahead_s=0.6,
        metrics_port=0,
        store={"url": backend_url, "layout": backend.layout, "driver": backend.driver},
        cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
    )
    started = []
    for _ in range(3):
        engine = InfiniteScheduler(config.model_copy(), clock=clock, manual=True)
        engine.register(SMS, Recorder())
        async with engine:
            started.append((engine.node_id, engine.epoch))
    ids, epochs = zip(*started, strict=True)
    assert len(set(ids)) == 3 and list(epochs) == sorted(set(epochs))
    rows = {n.epoch: n for n in (await members.list_nodes()).nodes}
    assert {(rows[e].node_id, rows[e].state) for e in epochs} == {(i, NodeState.LEFT) for i in ids}


async def test_a_start_that_fails_before_claiming_leaves_so_its_id_is_free(
    engine_factory: EngineFactory, members: Membership, tmp_path: Path
) -> None:
    """The node joined, then a store it serves was missing: its epoch left at once."""
    missing = make_repository(
        f"sqlite:///{tmp_path}/elsewhere/missing.db", SMS, load_config(None).shard_policy
    )
    broken = engine_factory(repository=missing)
    with pytest.raises(StoreMissing):
        async with broken:
            pass
    assert (await node_row(members, broken.epoch)).state == NodeState.LEFT
    async with engine_factory() as engine:
        assert engine.epoch > broken.epoch


# -- a restart on the host of a crashed process -------------------------------------------------


async def ended_pid() -> int:
    """The pid of a process that ran on this host and is gone (exited, waited for)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert await proc.wait() == 0
    return proc.pid


async def crashed_row(members: Membership, node_id: str, *, pid: int, host: str = "") -> int:
    """A row as a process killed a moment ago leaves it: ACTIVE, its heartbeat fresh."""
    joined = await members.join(
        node_id,
        host=host or socket.gethostname(),
        pid=pid,
        version="0.0.1",
        node_timeout_ms=TIMEOUT_MS,
    )
    assert await members.heartbeat(joined.epoch, T0 - 1_000)
    return joined.epoch


@pytest.mark.parametrize("pid", ["ended", "this process's"])
async def test_a_restart_on_the_host_of_a_process_that_is_gone_takes_its_row_over_at_once(
    engine_factory: EngineFactory,
    members: Membership,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    pid: str,
) -> None:
    """The crashed process's heartbeat is fresh (node_timeout_s would refuse the start), but it
    ran on this host and its pid runs no more, or is this process's own and no engine here
    joined as that row (a container restarted: its app is pid 1 again): it is declared dead,
    the start goes on. On SQLite this holds for a crashed node of any id (AUTO ids differ at
    every start)."""
    for node_id in ("node-a", "node-b") if backend.kind == "sqlite" else ("node-a",):
        crashed_pid = await ended_pid() if pid == "ended" else os.getpid()
        crashed = await crashed_row(members, node_id, pid=crashed_pid)
        with caplog.at_level(logging.INFO, logger="infinite_scheduler.node"):
            async with engine_factory(node_id="node-a") as engine:
                assert (await node_row(members, crashed)).state == NodeState.DEAD
                assert engine.epoch > crashed
        said = [r.getMessage() for r in caplog.records]
        assert any(
            m.startswith(f"node {node_id!r} (epoch {crashed} on host {socket.gethostname()}")
            and m.endswith(
                "is gone (no such process on this host): declared it dead; its"
                " claims are this process's to take over"
            )
            for m in said
        ), said
        assert any(f"earlier epochs to take over: {crashed}" in m for m in said), said
        caplog.clear()


async def test_join_returns_the_row_of_a_gone_process_among_the_epochs_to_take_over(
    members: Membership, backend: Backend, backend_url: str
) -> None:
    crashed = await crashed_row(members, "node-a", pid=await ended_pid())
    membership = make_membership(backend_url, driver=backend.driver)
    await membership.open()
    try:
        me = Identity(node_id="node-a", host=socket.gethostname(), pid=os.getpid(), version="v")
        joined = await join(membership, me, node_timeout_ms=TIMEOUT_MS)
    finally:
        await membership.close()
    [earlier] = joined.earlier
    assert (earlier.epoch, earlier.state, earlier.holds_from_ms) == (
        crashed,
        NodeState.DEAD,
        T0 - 1_000,
    )


async def test_a_row_of_this_process_is_its_own_until_its_engine_stopped(
    backend: Backend, backend_url: str, members: Membership
) -> None:
    """Same host, same pid: while this process runs that epoch the row refuses a join; once
    its engine stopped without leaving (a failed stop), the row is a leftover to take over."""
    membership = make_membership(backend_url, driver=backend.driver)
    await membership.open()
    try:
        me = Identity(node_id="node-a", host=socket.gethostname(), pid=os.getpid(), version="v")
        first = await join(membership, me, node_timeout_ms=TIMEOUT_MS)
        with pytest.raises(NodeIdInUse):
            await join(membership, me, node_timeout_ms=TIMEOUT_MS)
        stopped("node-a", first.epoch)
        again = await join(membership, me, node_timeout_ms=TIMEOUT_MS)
        stopped("node-a", again.epoch)
    finally:
        await membership.close()
    assert [n.epoch for n in again.earlier] == [first.epoch]
    assert (await node_row(members, first.epoch)).state == NodeState.DEAD


async def test_a_restart_is_refused_while_the_process_in_the_way_runs_or_is_on_another_host(
    engine_factory: EngineFactory, members: Membership
) -> None:
    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    try:
        running = await crashed_row(members, "node-a", pid=sleeper.pid)
        with pytest.raises(NodeIdInUse, match=f"pid {sleeper.pid},"):
            async with engine_factory(node_id="node-a"):
                pytest.fail("started beside a live process of its own id on its own host")
        assert (await node_row(members, running)).state == NodeState.ACTIVE
    finally:
        sleeper.kill()
        await sleeper.wait()
    await members.set_state(running, NodeState.LEFT)
    elsewhere = await crashed_row(members, "node-a", pid=await ended_pid(), host="another-host")
    with pytest.raises(NodeIdInUse, match="on host another-host"):
        async with engine_factory(node_id="node-a"):
            pytest.fail("judged a pid of another host by this one's processes")
    assert (await node_row(members, elsewhere)).state == NodeState.ACTIVE


# -- declared dead, self-fencing ---------------------------------------------------------------


async def test_a_node_declared_dead_learns_it_on_its_next_heartbeat_and_fires_nothing(
    engine_factory: EngineFactory,
    members: Membership,
    repo: Repo,
    raw_sql: Any,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    async with engine_factory(handler=recorder) as engine:
        epoch = engine.epoch
        await raw_sql(
            repo,
            f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE epoch = {epoch}",
        )
        assert await members.declare_dead(epoch, TIMEOUT_MS)  # another node won its claims
        await repo.insert([sms(1, T0 + 200)], now_ms=T0)
        clock.advance(200)
        with caplog.at_level(logging.INFO):
            await engine.run_until_idle()
        assert engine.declared_dead.is_set()
        assert recorder.fires == []
        assert engine.parts.dispatcher.paused
        [death] = [r for r in caplog.records if getattr(r, "action", None) == "death"]
        assert death.levelno == logging.CRITICAL
        assert (getattr(death, "node", None), getattr(death, "epoch", None)) == ("node-a", epoch)
        assert f"node node-a epoch {epoch} was declared dead" in death.getMessage()
        assert engine.stopping.is_set()
        with pytest.raises(NodeDeclaredDead) as caught:
            await engine.run()
        assert str(caught.value) == (
            f"node 'node-a' epoch {epoch} was declared dead by another node, which took its"
            " claims over; this engine stopped: start a new one to rejoin as a new epoch"
        )
    assert (await node_row(members, epoch)).state == NodeState.DEAD  # a stop does not revive it


async def test_a_node_that_cannot_renew_stops_firing_and_resumes_once_it_renews(
    engine_factory: EngineFactory,
    repo: Repo,
    raw_sql: Any,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    await repo.insert([sms(1, T0 + 1_000)], now_ms=T0)
    async with engine_factory(handler=recorder) as engine:
        await rename_nodes(raw_sql, repo, away=True)
        clock.advance(1_000)  # past the fence (400 ms), the renewal failing
        with caplog.at_level(logging.INFO):
            await engine.run_until_idle()
            assert recorder.fires == []  # claimed, handed over, waiting: not started
            [row] = await repo.get(1)
            assert (row.status, row.attempts) == (Status.CLAIMED, 1)
            assert engine.parts.dispatcher.paused
            assert gauge(engine, "heartbeat_lag_seconds") == 1.0

            await rename_nodes(raw_sql, repo, away=False)
            clock.advance(INTERVAL_MS)
            await engine.run_until_idle()
        assert recorder.fires == [(1, 1, T0 + 1_000 + INTERVAL_MS)]
        assert not engine.parts.dispatcher.paused and not engine.declared_dead.is_set()
    [row] = await repo.get(1)
    assert row.status == Status.DONE
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.endswith(".node")]
    assert said[0][0] == "WARNING" and said[0][1].startswith("heartbeat failed, 1.0 s since")
    assert (
        "ERROR",
        "no heartbeat renewal for 1.0 s (node_timeout_s 0.5, margin 0.1 s): this node stops"
        " firing until it renews, in case others take its claims over",
    ) in said
    assert ("WARNING", "heartbeat renewed: firing again") in said


@asynccontextmanager
async def nodes_locked(backend: Backend, url: str) -> AsyncIterator[None]:
    """Hold a lock every heartbeat waits for (SQLite: the file's write lock; MySQL: the rows of
    the nodes table), as a store that stopped answering would keep a renewal hanging."""
    if backend.kind == "sqlite":
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                db.execute("ROLLBACK")
        return
    import asyncmy

    conn = await asyncmy.connect(host="127.0.0.1", user="root", db=url.rsplit("/", 1)[1])
    try:
        await conn.begin()
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT epoch FROM nodes FOR UPDATE")
        yield
    finally:
        await conn.rollback()
        conn.close()


@TWO_STORES
async def test_wall_the_heartbeat_loop_renews_and_a_hanging_renewal_is_fenced_on_time(
    engine_factory: EngineFactory, members: Membership, backend: Backend, backend_url: str
) -> None:
    """Wall clock: the loop renews every interval. A renewal that hangs (the store holds it)
    cannot close the fence itself: its timer does, 400 ms after the last renewal; the first
    renewal to get through afterwards opens it again."""
    async with engine_factory(wall=True) as engine:
        epoch = engine.epoch
        first = (await node_row(members, epoch)).heartbeat_at_ms
        await asyncio.sleep(3 * INTERVAL_MS / 1000)
        assert (await node_row(members, epoch)).heartbeat_at_ms > first
        assert engine.parts.node.renewals >= 2
        assert gauge(engine, "nodes_live") == 1

        dispatcher, node = engine.parts.dispatcher, engine.parts.node
        async with nodes_locked(backend, backend_url):  # the renewal waits, it does not fail
            await eventually(lambda: dispatcher.paused)
            assert node.lag_ms() >= TIMEOUT_MS - INTERVAL_MS
        await eventually(lambda: not dispatcher.paused)
    assert (await node_row(members, epoch)).state == NodeState.LEFT


@pytest.mark.parametrize("backend", [StoreBackend("sqlite")], indirect=True, ids=["sqlite"])
async def test_wall_a_failed_renewal_is_tried_again_well_within_the_interval(
    engine_factory: EngineFactory, repo: Repo, raw_sql: Any
) -> None:
    """Heartbeats every 2 s: once one fails, the next try comes 0.1 s later, then 0.2 s, ...
    (at most 1 s apart), not 2 s later; and the first that gets through ends the tries."""
    engine = engine_factory(
        wall=True,
        fetch_interval_s=5,
        lookahead_s=10,
        cluster={"heartbeat_interval_s": 2, "node_timeout_s": 6},
    )
    async with engine:
        node = engine.parts.node
        await rename_nodes(raw_sql, repo, away=True)
        await eventually(lambda: node.backoff.failures >= 1)
        async with asyncio.timeout(1):  # well before the next regular beat, 2 s later
            await eventually(lambda: node.backoff.failures >= 3)
        renewals = node.renewals
        await rename_nodes(raw_sql, repo, away=False)
        async with asyncio.timeout(1.5):
            await eventually(lambda: node.renewals > renewals)
        assert node.backoff.failures == 0


# -- takeover -----------------------------------------------------------------------------------


@asynccontextmanager
async def frozen_ack(
    url: str, shard: str, key: int, epoch: int
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """What a node frozen (SIGSTOP) or cut off between an ack's UPDATE and its COMMIT leaves
    in MySQL: the row acked in an open transaction, locked until the node's connection ends.
    Yields the end of that connection (the node's death, or its resume): ROLLBACK."""
    import asyncmy

    conn = await asyncmy.connect(host="127.0.0.1", user="root", db=url.rsplit("/", 1)[1])
    try:
        await conn.begin()
        async with conn.cursor() as cursor:
            await cursor.execute(
                f"UPDATE `{shard}` SET status = 2 WHERE id = {key} AND claim_epoch = {epoch}"
            )
        yield conn.rollback
    finally:
        await conn.rollback()
        conn.close()


@pytest.mark.parametrize(
    "backend",
    [pytest.param(StoreBackend("mysql"), marks=pytest.mark.mysql)],
    indirect=True,
    ids=["mysql-multi-asyncmy"],
)
async def test_wall_a_takeover_waiting_for_a_frozen_nodes_row_locks_holds_up_no_renewal(
    engine_factory: EngineFactory, members: Membership, repo: Repo, backend_url: str
) -> None:
    """A node frozen mid-ack keeps that row locked, so the takeover of that row waits until
    its transaction ends. The renewals of the node taking over must not wait with it: a
    renewal stuck behind the takeover fences the node, and every live node alike: the whole
    cluster stops firing because one node froze (seen in the three-node SIGSTOP scenario)."""
    recorder = Recorder()
    now = int(datetime.now(UTC).timestamp() * 1000)
    frozen = await members.join("frozen", host="h", pid=1, version="v", node_timeout_ms=TIMEOUT_MS)
    await repo.insert([sms(1, now), sms(2, now)], now_ms=now)
    claimant = Claimant("frozen", frozen.epoch)
    claimed = await repo.claim_due(claimant, now_ms=now, before_ms=now + 1, since_ms=now, limit=2)
    assert len(claimed) == 2
    [row] = await repo.get(1)
    async with (
        frozen_ack(backend_url, row.shard, 1, frozen.epoch) as thaw,
        engine_factory(handler=recorder, wall=True) as engine,
    ):
        try:
            node, dispatcher = engine.parts.node, engine.parts.dispatcher
            async with asyncio.timeout(3):  # this node declares it dead; its takeover waits
                while True:
                    if (await node_row(members, frozen.epoch)).state == NodeState.DEAD:
                        break
                    await asyncio.sleep(0.01)
            renewals = node.renewals
            due_ms = int(datetime.now(UTC).timestamp() * 1000) + 300
            await repo.insert([sms(3, due_ms)], now_ms=due_ms - 300)
            await asyncio.sleep(2 * TIMEOUT_MS / 1000)

            [locked] = await repo.get(1)
            assert (locked.status, locked.claim_epoch) == (Status.CLAIMED, frozen.epoch)
            assert node.renewals >= renewals + 5, f"{node.renewals - renewals} renewals in 1 s"
            assert not dispatcher.paused
            assert 3 in {i for i, _, _ in recorder.fires}  # fired, while the takeover waits
        finally:
            await thaw()  # the frozen node's transaction ends: the takeover goes through
        await eventually(lambda: len(recorder.fires) == 3)
    assert sorted((i, attempt) for i, attempt, _ in recorder.fires) == [(1, 1), (2, 1), (3, 1)]


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(StoreBackend("mysql"), marks=pytest.mark.mysql, id="mysql-multi-asyncmy"),
        pytest.param(
            StoreBackend("mysql", "multi-table", "aiomysql"),
            marks=pytest.mark.mysql,
            id="mysql-multi-aiomysql",
        ),
    ],
    indirect=True,
)
async def test_a_takeover_moves_what_a_frozen_transaction_does_not_lock_and_the_rest_after_it(
    engine_factory: EngineFactory,
    members: Membership,
    repo: Repo,
    raw_sql: Any,
    backend_url: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One row of a dead node's claims locked by its open transaction (frozen mid-ack, or cut
    off) must not hold up the others: they fire now. The locked one stays this node's debt,
    taken over at a heartbeat after the transaction ended; the takeover is counted once."""
    recorder = Recorder()
    frozen = await members.join("frozen", host="h", pid=1, version="v", node_timeout_ms=TIMEOUT_MS)
    await repo.insert([sms(1, T0), sms(2, T0), sms(3, T0)], now_ms=T0)
    claimant = Claimant("frozen", frozen.epoch)
    claimed = await repo.claim_due(claimant, now_ms=T0, before_ms=T0 + 1, since_ms=T0, limit=3)
    assert len(claimed) == 3
    await raw_sql(
        repo,
        f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE epoch = {frozen.epoch}",
    )
    [row] = await repo.get(1)
    async with frozen_ack(backend_url, row.shard, 1, frozen.epoch) as thaw:
        with caplog.at_level(logging.WARNING, logger="infinite_scheduler.takeover"):
            async with engine_factory(handler=recorder) as engine:
                await engine.run_until_idle()
                assert sorted(i for i, _, _ in recorder.fires) == [2, 3]
                assert list(engine.parts.takeover.owed) == [frozen.epoch]
                [locked] = await repo.get(1)
                assert (locked.status, locked.claim_epoch) == (Status.CLAIMED, frozen.epoch)
                assert gauge(engine, "takeovers_total") == 0

                await thaw()
                clock.advance(INTERVAL_MS)
                await engine.run_until_idle()
                await engine.parts.node.settle()
                await engine.run_until_idle()
                assert sorted((i, a) for i, a, _ in recorder.fires) == [(1, 1), (2, 1), (3, 1)]
                assert engine.parts.takeover.owed == {}
                assert gauge(engine, "takeovers_total") == 1
    said = [r.getMessage() for r in caplog.records if r.name == "infinite_scheduler.takeover"]
    assert [m.split(": ", 1)[1] for m in said] == [
        f"node node-a epoch {engine.epoch} took over 2 of its claims; they fire once, now. 1 more"
        " stay locked by its open transaction: taken over once it ends",
        f"node node-a epoch {engine.epoch} took over 1 of its claims; they fire once, now",
    ]


async def test_a_takeover_hands_back_recent_and_older_claims_alike(
    engine_factory: EngineFactory, members: Membership, repo: Repo, raw_sql: Any
) -> None:
    """The recent claims go first, then those overdue by more than RECENT_FIRST_MS: both."""
    recorder = Recorder()
    dead = await members.join("dead", host="h", pid=1, version="v", node_timeout_ms=TIMEOUT_MS)
    due = {1: T0 - 10 * RECENT_FIRST_MS, 2: T0 - RECENT_FIRST_MS // 2, 3: T0 + 100}
    await repo.insert([sms(k, at) for k, at in due.items()], now_ms=T0)
    claimed = await repo.claim_due(
        Claimant("dead", dead.epoch),
        now_ms=T0,
        before_ms=T0 + 1000,
        since_ms=T0 - 20 * RECENT_FIRST_MS,
        limit=3,
    )
    assert len(claimed) == 3
    await raw_sql(
        repo,
        f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE epoch = {dead.epoch}",
    )
    async with engine_factory(handler=recorder, misfire_threshold_s=3600) as engine:
        await engine.run_until_idle()
        assert sorted((i, a) for i, a, _ in recorder.fires) == [(1, 1), (2, 1)]  # 3 not yet due
        assert gauge(engine, "takeovers_total") == 1
        assert (
            engine.metrics.registry.get_sample_value(
                "infinite_scheduler_claims_taken_over_total", {"entity": "sms"}
            )
            == 3
        )


@TWO_STORES
async def test_wall_after_the_process_froze_no_job_starts_before_the_heartbeat_renews(
    engine_factory: EngineFactory, repo: Repo
) -> None:
    """A handler that blocks the loop past the fence's deadline stands for a process stopped
    (SIGSTOP) or frozen: when it returns, its worker goes straight on to the next job, before
    the fence's timer can run. That job must wait for a renewal: meanwhile another node may
    have declared this one dead and taken it over."""
    starts: list[tuple[int | str, int]] = []  #: (job id, renewals when its handler started)
    node_box: list[Any] = []

    async def handler(ctx: JobContext[Any]) -> None:
        starts.append((ctx.job_id, node_box[0].renewals))
        if ctx.job_id == 1:
            time.sleep(2 * TIMEOUT_MS / 1000)  # noqa: ASYNC251 - the loop stops, as if SIGSTOPped

    now = int(datetime.now(UTC).timestamp() * 1000)
    async with engine_factory(
        handler=handler, wall=True, handlers={"concurrency": 1, "drain_timeout_s": 1.0}
    ) as engine:
        node_box.append(engine.parts.node)
        await engine.schedule([sms(1, now + 200), sms(2, now + 200)])
        await eventually(lambda: len(starts) == 2, timeout_s=5)
    [(first, renewals_then), (second, renewals_at_second)] = starts
    assert (first, second) == (1, 2)
    assert renewals_at_second > renewals_then  # job 2 waited for the fence to open again
