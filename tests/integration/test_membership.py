"""The Membership contract (repos/cluster.py): the nodes and leases tables on every store.

Runs on each ``backend`` of tests/conftest.py (SQLite; MySQL multi-table and partitioned on
asyncmy and aiomysql: both layouts share the table). Every membership of a test is its own
connection to one fresh store, as separate nodes are. Times are the database's clock: a test
that needs a heartbeat to be old moves it back behind the adapter's back (raw_sql), rather
than waiting.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from repos.base import ShardPolicy, StoreMissing
from repos.cluster import Membership, NodeIdInUse, NodeInfo, NodeState, SingleNodeStore
from repos.examples import SMS
from repos.registry import make_membership, make_repository

pytestmark = pytest.mark.timeout(30)

OpenMembership = Callable[[], Awaitable[Membership]]
RawSql = Callable[[Any, str], Awaitable[None]]
TIMEOUT_MS = 10_000


class Backend(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def layout(self) -> Any: ...

    @property
    def driver(self) -> Any: ...


async def join(m: Membership, node_id: str, *, pid: int = 100, timeout_ms: int = TIMEOUT_MS) -> int:
    joined = await m.join(
        node_id, host="host-1", pid=pid, version="1.2.3", node_timeout_ms=timeout_ms
    )
    return joined.epoch


async def row(m: Membership, epoch: int) -> NodeInfo:
    [found] = [n for n in (await m.list_nodes(finished=100)).nodes if n.epoch == epoch]
    return found


async def age(raw_sql: RawSql, m: Membership, epoch: int, by_ms: int) -> None:
    """Move the epoch's heartbeat `by_ms` into the past, as if it had stopped renewing."""
    await raw_sql(
        m, f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - {by_ms} WHERE epoch = {epoch}"
    )


# -- join ------------------------------------------------------------------------------------


async def test_each_join_gets_a_new_larger_epoch_and_an_active_row_stamped_by_the_database(
    open_membership: OpenMembership,
) -> None:
    m = await open_membership()
    before = await m.db_now()
    first = await m.join("a", host="host-1", pid=41, version="1.2.3", node_timeout_ms=TIMEOUT_MS)
    await m.set_state(first.epoch, NodeState.LEFT)
    second = await m.join("a", host="host-2", pid=42, version="1.2.4", node_timeout_ms=TIMEOUT_MS)
    after = await m.db_now()
    assert 0 < first.epoch < second.epoch
    assert (first.earlier, second.earlier) == ((), ())
    node = await row(m, second.epoch)
    assert (node.node_id, node.host, node.pid, node.version) == ("a", "host-2", 42, "1.2.4")
    assert (node.state, node.holds_from_ms) == (NodeState.ACTIVE, 0)
    assert before <= node.started_at_ms == node.heartbeat_at_ms <= after


async def test_join_refuses_an_id_a_live_node_holds_and_names_that_node(
    open_membership: OpenMembership,
) -> None:
    a, b = await open_membership(), await open_membership()
    live = await join(a, "worker-1", pid=4242)
    with pytest.raises(NodeIdInUse) as refused:
        await join(b, "worker-1", pid=99)
    message = re.sub(r"heartbeat \d+\.\d s ago", "heartbeat N s ago", str(refused.value))
    assert message.startswith(
        f"node id 'worker-1' is in use by a live node 'worker-1' (epoch {live} on host host-1"
        " pid 4242, heartbeat N s ago); stop that process"
    )
    assert message.endswith(
        "the id is free once its heartbeat is 10 s old (cluster.node_timeout_s), at once to a"
        " process on its host"
    )
    assert (refused.value.holder.epoch, refused.value.holder.pid) == (live, 4242)
    assert [n.epoch for n in (await b.list_nodes()).nodes] == [live]  # nothing was written


async def test_an_id_is_free_again_once_its_node_left(open_membership: OpenMembership) -> None:
    a, b = await open_membership(), await open_membership()
    first = await join(a, "worker-1")
    assert await a.set_state(first, NodeState.LEFT)
    second = await join(b, "worker-1")
    assert second > first


async def test_an_id_whose_heartbeat_aged_is_free_and_its_epoch_comes_back_as_earlier(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    """A crashed run of the same deployment: the next process gets its id, and learns of the
    old epoch (with where its claims start), which is neither LEFT nor DEAD yet."""
    a, b = await open_membership(), await open_membership()
    crashed = await join(a, "worker-1")
    assert await a.heartbeat(crashed, 1_795_000_000_000)
    await age(raw_sql, a, crashed, TIMEOUT_MS + 1_000)
    other = await join(a, "worker-2")  # crashed too, but another id's: not this node's business
    await age(raw_sql, a, other, TIMEOUT_MS + 1_000)
    joined = await b.join("worker-1", host="h", pid=1, version="v", node_timeout_ms=TIMEOUT_MS)
    assert [(n.epoch, n.state, n.holds_from_ms) for n in joined.earlier] == [
        (crashed, NodeState.ACTIVE, 1_795_000_000_000)
    ]


async def test_two_joins_with_one_id_at_once_let_exactly_one_in(
    open_membership: OpenMembership,
) -> None:
    a, b = await open_membership(), await open_membership()
    for i in range(5):
        results = await asyncio.gather(
            join(a, f"racer-{i}"), join(b, f"racer-{i}"), return_exceptions=True
        )
        epochs = [r for r in results if isinstance(r, int)]
        refusals = [r for r in results if isinstance(r, NodeIdInUse)]
        assert (len(epochs), len(refusals)) == (1, 1), results
        assert refusals[0].holder.epoch == epochs[0]
        await a.set_state(epochs[0], NodeState.LEFT)  # SQLite takes one live node at a time


async def test_sqlite_takes_one_live_node_and_mysql_several(
    open_membership: OpenMembership, backend: Backend, raw_sql: RawSql
) -> None:
    a, b = await open_membership(), await open_membership()
    first = await join(a, "node-a", pid=7)
    if backend.kind == "mysql":
        assert await join(b, "node-b") > first
        return
    with pytest.raises(SingleNodeStore) as refused:
        await join(b, "node-b")
    assert re.sub(r"heartbeat \d+\.\d s ago", "heartbeat N s ago", str(refused.value)) == (
        f"the embedded SQLite store runs one node, and node 'node-a' (epoch {first} on host"
        " host-1 pid 7, heartbeat N s ago) is live on it; stop it before starting node"
        " 'node-b', or use MySQL/MariaDB for several nodes. If that process is gone, the store"
        " is free once its heartbeat is 10 s old (cluster.node_timeout_s), at once to a process"
        " on its host"
    )
    await age(raw_sql, a, first, TIMEOUT_MS + 1_000)  # crashed: the file is free again
    assert await join(b, "node-b") > first


# -- heartbeat, declare_dead, set_state --------------------------------------------------------


async def test_heartbeat_renews_by_the_database_clock_and_publishes_holds_from(
    open_membership: OpenMembership,
) -> None:
    m = await open_membership()
    epoch = await join(m, "a")
    joined = await row(m, epoch)
    stamps = []
    for holds in (5, 6):  # twice within a millisecond, maybe: still a change each time
        assert await m.heartbeat(epoch, holds)
        stamps.append((await row(m, epoch)).heartbeat_at_ms)
    node = await row(m, epoch)
    assert joined.heartbeat_at_ms < stamps[0] < stamps[1]
    assert abs(stamps[1] - await m.db_now()) < 1_000  # the database's now, or just after it
    assert (node.holds_from_ms, node.started_at_ms) == (6, joined.started_at_ms)


async def test_a_node_declared_dead_learns_it_from_its_next_heartbeat(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    node, other = await open_membership(), await open_membership()
    epoch = await join(node, "a")
    assert not await other.declare_dead(epoch, TIMEOUT_MS)  # its heartbeat is fresh
    await age(raw_sql, node, epoch, TIMEOUT_MS + 1)
    assert await other.declare_dead(epoch, TIMEOUT_MS)
    assert not await other.declare_dead(epoch, TIMEOUT_MS)  # once
    assert not await node.heartbeat(epoch, 0)
    assert (await row(other, epoch)).state == NodeState.DEAD
    assert not await node.set_state(epoch, NodeState.LEFT)  # dead stays dead
    assert (await row(other, epoch)).state == NodeState.DEAD


async def test_concurrent_declarations_of_one_death_have_exactly_one_winner(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    a, b, c = await open_membership(), await open_membership(), await open_membership()
    for i in range(10):
        epoch = await join(c, f"victim-{i}")
        await age(raw_sql, c, epoch, TIMEOUT_MS + 1)
        wins = await asyncio.gather(
            a.declare_dead(epoch, TIMEOUT_MS), b.declare_dead(epoch, TIMEOUT_MS)
        )
        assert sorted(wins) == [False, True]


async def test_set_state_drains_then_leaves_and_says_when_nothing_changed(
    open_membership: OpenMembership,
) -> None:
    m = await open_membership()
    epoch = await join(m, "a")
    assert await m.set_state(epoch, NodeState.DRAINING)
    assert not await m.set_state(epoch, NodeState.DRAINING)
    assert await m.heartbeat(epoch, 0)  # a draining node still renews
    assert await m.set_state(epoch, NodeState.LEFT)
    assert not await m.set_state(epoch, NodeState.LEFT)
    assert not await m.heartbeat(epoch, 0)
    assert (await row(m, epoch)).state == NodeState.LEFT
    with pytest.raises(ValueError, match="set_state takes DRAINING or LEFT, not ACTIVE"):
        await m.set_state(epoch, NodeState.ACTIVE)


async def test_a_draining_node_keeps_its_id(open_membership: OpenMembership) -> None:
    a, b = await open_membership(), await open_membership()
    epoch = await join(a, "a")
    await a.set_state(epoch, NodeState.DRAINING)
    with pytest.raises(NodeIdInUse):
        await join(b, "a")


# -- list, open --------------------------------------------------------------------------------


async def test_list_shows_running_nodes_and_the_newest_finished_ones(
    open_membership: OpenMembership,
) -> None:
    m = await open_membership()
    finished = []
    for i in range(3):
        epoch = await join(m, f"gone-{i}")
        await m.set_state(epoch, NodeState.LEFT)
        finished.append(epoch)
    live = await join(m, "live")
    roster = await m.list_nodes(finished=2)
    assert [n.epoch for n in roster.nodes] == [live, finished[2], finished[1]]
    assert [n.epoch for n in (await m.list_nodes(finished=0)).nodes] == [live]
    assert abs(roster.now_ms - time.time() * 1000) < 60_000  # a clock, in epoch milliseconds


async def test_the_nodes_table_lives_beside_the_shards_and_is_none_of_them(
    open_membership: OpenMembership, backend: Backend, backend_url: str
) -> None:
    m = await open_membership()
    await join(m, "a")
    repo = make_repository(
        backend_url, SMS, ShardPolicy(), layout=backend.layout, driver=backend.driver
    )
    await repo.open()
    try:
        await repo.ensure_shards(1_795_000_000_000, 1_795_000_000_001)
        assert len(await repo.list_shards()) == 1
        assert repo.ignored_names == frozenset()
    finally:
        await repo.close()
    assert len((await m.list_nodes()).nodes) == 1


async def test_open_refuses_a_missing_store_and_makes_a_file_when_asked(
    tmp_path: Path, backend: Backend, mariadb: Any
) -> None:
    sqlite = backend.kind == "sqlite"
    url = f"sqlite:///{tmp_path}/missing/store.db" if sqlite else mariadb.url("ist_never_made")
    with pytest.raises(StoreMissing, match="does not exist"):
        await make_membership(url, driver=backend.driver).open()
    if sqlite:
        made = make_membership(url, create_missing=True)
        await made.open()
        try:
            assert await join(made, "a") > 0
        finally:
            await made.close()


# -- declare_gone, prune_nodes -----------------------------------------------------------------


async def test_declare_gone_kills_a_fresh_running_row_once_and_returns_it(
    open_membership: OpenMembership,
) -> None:
    """What a joiner does with the row of a process it found gone: DEAD at once, whatever the
    heartbeat's age; the row comes back, for its claims to be taken over, to one caller only."""
    a, b = await open_membership(), await open_membership()
    epoch = await join(a, "a", pid=4242)
    assert await a.heartbeat(epoch, 1_795_000_000_000)
    results = await asyncio.gather(a.declare_gone(epoch), b.declare_gone(epoch))
    [found] = [r for r in results if r is not None]
    assert (found.epoch, found.pid, found.state) == (epoch, 4242, NodeState.DEAD)
    assert found.holds_from_ms == 1_795_000_000_000
    assert not await a.heartbeat(epoch, 0)
    left = await join(b, "b")
    await b.set_state(left, NodeState.LEFT)
    assert await b.declare_gone(left) is None  # a row that left is not running


async def test_prune_deletes_old_left_and_dead_rows_only(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    m = await open_membership()
    old_ms = 3_600_000
    epochs = {}
    # Each row ends (or ages) before the next joins: SQLite takes one live node at a time.
    for name in ("left", "dead", "draining", "active", "young-left"):
        epochs[name] = epoch = await join(m, name)
        if name == "draining":
            await m.set_state(epoch, NodeState.DRAINING)
        elif name.endswith("left"):
            await m.set_state(epoch, NodeState.LEFT)
        if name != "young-left":  # running rows stay, however old their heartbeat
            await age(raw_sql, m, epoch, old_ms + 1_000)
    assert await m.declare_dead(epochs["dead"], TIMEOUT_MS)
    newest = await join(m, "newest")

    assert await m.prune_nodes(old_ms) == 2
    remaining = {n.epoch for n in (await m.list_nodes(finished=100)).nodes}
    assert remaining == {epochs["draining"], epochs["active"], epochs["young-left"], newest}
    assert await m.prune_nodes(old_ms) == 0


async def test_prune_keeps_the_newest_row_so_no_epoch_is_handed_out_twice(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    m = await open_membership()
    first = await join(m, "a")
    await m.set_state(first, NodeState.LEFT)
    last = await join(m, "b")
    await m.set_state(last, NodeState.LEFT)
    await raw_sql(m, "UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 10000")
    assert await m.prune_nodes(1_000) == 1
    assert [n.epoch for n in (await m.list_nodes()).nodes] == [last]
    assert await join(m, "c") > last


async def test_prune_revocations_deletes_those_of_epochs_no_longer_running(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    """Revocations posted to a node that left, died, or whose row is pruned already are never
    taken: they go; a running epoch's stay for it to take."""
    m = await open_membership()
    epochs = {}
    # Each row ends (or ages) before the next joins: SQLite takes one live node at a time.
    for name in ("left", "dead", "draining", "active"):
        epochs[name] = epoch = await join(m, name)
        if name == "draining":
            await m.set_state(epoch, NodeState.DRAINING)
        elif name == "left":
            await m.set_state(epoch, NodeState.LEFT)
        await age(raw_sql, m, epoch, TIMEOUT_MS + 1_000)
    assert await m.declare_dead(epochs["dead"], TIMEOUT_MS)
    gone = max(epochs.values()) + 100  # an epoch whose nodes row was pruned long ago
    posted = [*epochs.values(), gone]
    values = ", ".join(f"({epoch}, 'sms', '{epoch}', 1000)" for epoch in posted)
    await raw_sql(m, f"INSERT INTO revocations (epoch, entity, job_id, at_ms) VALUES {values}")

    assert await m.prune_revocations() == 3
    assert await m.prune_revocations() == 0
    for name in ("draining", "active"):
        [taken] = await m.take_revocations(epochs[name])
        assert (taken.epoch, taken.key) == (epochs[name], str(epochs[name]))
    for epoch in (epochs["left"], epochs["dead"], gone):
        assert await m.take_revocations(epoch) == []


# -- leases ------------------------------------------------------------------------------------

LEASE = "maintenance"
TTL_MS = 60_000


async def running_nodes(
    open_membership: OpenMembership, raw_sql: RawSql, *ids: str
) -> list[tuple[Membership, int]]:
    """A membership and an ACTIVE epoch for each id. Each but the last is aged past the
    timeout before the next joins (SQLite takes one live node at a time): still ACTIVE, and
    so, as far as leases go, running."""
    nodes = []
    for i, node_id in enumerate(ids):
        m = await open_membership()
        epoch = await join(m, node_id)
        if i < len(ids) - 1:
            await age(raw_sql, m, epoch, TIMEOUT_MS + 1_000)
        nodes.append((m, epoch))
    return nodes


async def expire_leases(raw_sql: RawSql, m: Membership) -> None:
    """Move every lease's expiry into the past, as if its holder had stopped renewing."""
    await raw_sql(m, f"UPDATE leases SET expires_at_ms = expires_at_ms - {TTL_MS + 1_000}")


async def test_a_lease_is_taken_when_free_renewed_by_its_holder_and_refused_to_others(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    (a, ea), (b, eb) = await running_nodes(open_membership, raw_sql, "a", "b")
    assert await a.acquire_lease(LEASE, ea, TTL_MS)
    assert not await b.acquire_lease(LEASE, eb, TTL_MS)
    for _ in range(3):  # renewals, within a millisecond maybe: each one says so
        assert await a.acquire_lease(LEASE, ea, TTL_MS)
    assert not await b.acquire_lease(LEASE, eb, TTL_MS)
    assert await b.acquire_lease("another chore", eb, TTL_MS)  # leases are by name


async def test_an_expired_lease_goes_to_the_next_taker(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    (a, ea), (b, eb) = await running_nodes(open_membership, raw_sql, "a", "b")
    assert await a.acquire_lease(LEASE, ea, TTL_MS)
    await expire_leases(raw_sql, a)  # a stopped renewing (killed, say): its row is still ACTIVE
    assert await b.acquire_lease(LEASE, eb, TTL_MS)
    assert not await a.acquire_lease(LEASE, ea, TTL_MS)  # a comes back: the lease is b's now
    await a.release_lease(LEASE, ea)  # a release by a non-holder frees nothing
    assert not await a.acquire_lease(LEASE, ea, TTL_MS)
    assert await b.acquire_lease(LEASE, eb, TTL_MS)


async def test_a_released_lease_is_free_at_once(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    (a, ea), (b, eb) = await running_nodes(open_membership, raw_sql, "a", "b")
    assert await a.acquire_lease(LEASE, ea, TTL_MS)
    await a.release_lease(LEASE, ea)
    assert await b.acquire_lease(LEASE, eb, TTL_MS)


@pytest.mark.parametrize("ends", ["left", "declared dead"])
async def test_a_lease_whose_holder_stopped_running_is_free_before_it_expires(
    open_membership: OpenMembership, raw_sql: RawSql, ends: str
) -> None:
    (a, ea), (b, eb) = await running_nodes(open_membership, raw_sql, "a", "b")
    assert await a.acquire_lease(LEASE, ea, TTL_MS)
    if ends == "left":
        await a.set_state(ea, NodeState.LEFT)
    else:
        assert await b.declare_dead(ea, TIMEOUT_MS)  # its heartbeat is old (running_nodes)
    assert await b.acquire_lease(LEASE, eb, TTL_MS)
    assert not await a.acquire_lease(LEASE, ea, TTL_MS)  # nor does a stopped epoch get it back


async def test_an_epoch_that_is_not_running_takes_no_lease(
    open_membership: OpenMembership,
) -> None:
    m = await open_membership()
    epoch = await join(m, "a")
    await m.set_state(epoch, NodeState.LEFT)
    assert not await m.acquire_lease(LEASE, epoch, TTL_MS)
    assert not await m.acquire_lease(LEASE, epoch + 1000, TTL_MS)  # no such epoch
    newer = await join(m, "a")
    assert await m.acquire_lease(LEASE, newer, TTL_MS)


async def test_the_lease_expires_by_the_database_clock(
    open_membership: OpenMembership, raw_sql: RawSql
) -> None:
    """A ttl of 300 ms: refused to another at once, taken by it once the database's clock
    passed the expiry (whatever this process's clock says)."""
    (a, ea), (b, eb) = await running_nodes(open_membership, raw_sql, "a", "b")
    assert await a.acquire_lease(LEASE, ea, 300)
    assert not await b.acquire_lease(LEASE, eb, TTL_MS)
    await asyncio.sleep(0.35)
    assert await b.acquire_lease(LEASE, eb, TTL_MS)


@pytest.mark.parametrize("lease_exists", [False, True], ids=["new", "expired"])
async def test_concurrent_takers_of_a_free_lease_have_exactly_one_winner(
    open_membership: OpenMembership, raw_sql: RawSql, lease_exists: bool
) -> None:
    """Two connections racing for a lease nobody holds: no row yet, or an expired one."""
    (a, ea), (b, eb), (c, ec) = await running_nodes(open_membership, raw_sql, "a", "b", "c")
    for i in range(10):
        name = f"chore-{i}"
        if lease_exists:
            assert await c.acquire_lease(name, ec, TTL_MS)
            await raw_sql(c, f"UPDATE leases SET expires_at_ms = 0 WHERE name = '{name}'")
        wins = await asyncio.gather(
            a.acquire_lease(name, ea, TTL_MS), b.acquire_lease(name, eb, TTL_MS)
        )
        assert sorted(wins) == [False, True], (i, wins)


@pytest.mark.mysql
async def test_a_nodes_table_of_the_version_before_galera_writers_gets_the_column(
    mariadb: Any, mysql_database: str, raw_sql: RawSql
) -> None:
    url = mariadb.url(mysql_database)
    old = make_membership(url)
    await old.open()
    try:
        first = await join(old, "node-a")
        await raw_sql(old, "ALTER TABLE nodes DROP COLUMN writer")
        upgraded = make_membership(url)
        await upgraded.open()
        try:
            second = await join(upgraded, "node-b")
            assert await upgraded.heartbeat(first, 0)
            assert [n.epoch for n in (await upgraded.list_nodes()).nodes] == [second, first]
        finally:
            await upgraded.close()
    finally:
        await old.close()
