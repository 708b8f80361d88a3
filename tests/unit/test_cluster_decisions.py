"""The cluster's pure decisions (infinite_scheduler/membership.py) on a fake clock, and the
config's cluster timing rules with the message each refusal gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import ENV_PREFIX, load_config
from infinite_scheduler.errors import ConfigError
from infinite_scheduler.lease import maintenance_lease_ttl_ms
from infinite_scheduler.membership import Fence, gone_from_this_host, is_dead, live_nodes
from infinite_scheduler.node import pid_running
from repos.cluster import LiveNode, NodeInfo, NodeState, Roster

T0 = 1_795_000_000_000
TIMEOUT_MS = 10_000


def node(epoch: int, *, heartbeat_at_ms: int, state: NodeState = NodeState.ACTIVE) -> NodeInfo:
    return NodeInfo(
        epoch=epoch,
        node_id=f"n{epoch}",
        host="h",
        pid=epoch,
        version="v",
        started_at_ms=T0 - 60_000,
        heartbeat_at_ms=heartbeat_at_ms,
        state=state,
        holds_from_ms=0,
    )


# -- dead or alive: the database's clock -------------------------------------------------------


def test_a_running_node_is_dead_only_once_its_heartbeat_is_older_than_the_timeout() -> None:
    n = node(1, heartbeat_at_ms=T0)
    assert not is_dead(n, now_ms=T0 + TIMEOUT_MS, node_timeout_ms=TIMEOUT_MS)
    assert is_dead(n, now_ms=T0 + TIMEOUT_MS + 1, node_timeout_ms=TIMEOUT_MS)
    draining = node(2, heartbeat_at_ms=T0, state=NodeState.DRAINING)
    assert is_dead(draining, now_ms=T0 + TIMEOUT_MS + 1, node_timeout_ms=TIMEOUT_MS)


@pytest.mark.parametrize("state", [NodeState.LEFT, NodeState.DEAD])
def test_a_node_that_left_or_was_declared_dead_is_not_dead_again(state: NodeState) -> None:
    """Nothing is left to take over from it: it holds nothing, or its taker was chosen."""
    n = node(1, heartbeat_at_ms=T0, state=state)
    assert not is_dead(n, now_ms=T0 + 10 * TIMEOUT_MS, node_timeout_ms=TIMEOUT_MS)


def test_live_nodes_are_the_running_ones_with_a_recent_heartbeat() -> None:
    roster = Roster(
        now_ms=T0,
        nodes=(
            node(5, heartbeat_at_ms=T0 - 1_000),
            node(4, heartbeat_at_ms=T0 - 2_000, state=NodeState.DRAINING),
            node(3, heartbeat_at_ms=T0 - 20_000),  # dead, not declared yet
            node(2, heartbeat_at_ms=T0 - 1_000, state=NodeState.LEFT),
            node(1, heartbeat_at_ms=T0 - 1_000, state=NodeState.DEAD),
        ),
    )
    assert [n.epoch for n in live_nodes(roster, node_timeout_ms=TIMEOUT_MS)] == [5, 4]


# -- self-fencing: this node's monotonic clock ------------------------------------------------


def test_a_node_stops_firing_one_interval_before_others_may_declare_it_dead() -> None:
    clock = FakeClock(0)
    fence = Fence(heartbeat_interval_ms=2_000, node_timeout_ms=TIMEOUT_MS)
    renewed = clock.now_ms()
    assert fence.margin_ms == 2_000
    clock.advance(7_999)
    assert fence.may_fire(renewed_ms=renewed, now_ms=clock.now_ms())
    clock.advance(1)
    assert fence.deadline_ms(renewed) == clock.now_ms() == 8_000
    assert not fence.may_fire(renewed_ms=renewed, now_ms=clock.now_ms())
    renewed = clock.now_ms()  # a renewal got through: firing again
    assert fence.may_fire(renewed_ms=renewed, now_ms=clock.now_ms())


def test_a_heartbeat_is_due_one_interval_after_the_last_try() -> None:
    clock = FakeClock(1_000)
    fence = Fence(heartbeat_interval_ms=2_000, node_timeout_ms=TIMEOUT_MS)
    tried = clock.now_ms()
    clock.advance(1_999)
    assert not fence.heartbeat_due(attempted_ms=tried, now_ms=clock.now_ms())
    clock.advance(1)
    assert fence.heartbeat_due(attempted_ms=tried, now_ms=clock.now_ms())


# -- a restart on the host of a crashed process ------------------------------------------------


def holder(host: str, pid: int) -> LiveNode:
    return LiveNode(node_id="a", epoch=7, host=host, pid=pid, heartbeat_age_ms=400)


def test_only_a_process_of_this_host_that_no_longer_runs_is_gone() -> None:
    def gone(host: str, pid: int) -> bool:  # pid 41 runs on this host, 42 does not
        running = {41}.__contains__
        return gone_from_this_host(holder(host, pid), host="db1", pid=50, running=running, ours=())

    assert gone("db1", 42)
    assert not gone("db1", 41)
    assert not gone("db2", 42)  # another host's pid: not this host's to judge


def test_a_row_of_this_very_pid_is_gone_unless_this_process_runs_it() -> None:
    """A container restarted: its app is pid 1 again, and the crashed one's row names pid 1."""

    def gone(host: str, ours: set[tuple[str, int]]) -> bool:  # every pid runs
        mine = holder("db1", 50)  # node id "a", epoch 7
        return gone_from_this_host(mine, host=host, pid=50, running=lambda _: True, ours=ours)

    assert not gone("db1", {("a", 7)})  # this process's own engine
    assert gone("db1", {("a", 6)})
    assert not gone("db2", set())


def test_pid_running_asks_the_operating_system() -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    assert ended.wait(timeout=30) == 0  # waited for: gone, not a zombie
    assert not pid_running(ended.pid)
    assert pid_running(os.getpid())
    assert pid_running(1)  # init: runs, as another user (PermissionError) or ours
    assert pid_running(0) and pid_running(-1)  # not a process id: cannot tell, so "running"


# -- the maintenance lease ---------------------------------------------------------------------


def test_the_maintenance_lease_lasts_two_intervals_and_the_node_timeout() -> None:
    assert maintenance_lease_ttl_ms(interval_s=300, node_timeout_s=10) == 610_000
    assert maintenance_lease_ttl_ms(interval_s=0.1, node_timeout_s=0.5) == 700


# -- the [cluster] timings ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_cluster_defaults() -> None:
    cluster = load_config().cluster
    assert (cluster.heartbeat_interval_s, cluster.node_timeout_s) == (2.0, 10.0)


def test_a_timeout_not_above_the_heartbeat_interval_is_refused_with_why(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cluster]\nheartbeat_interval_s = 5\nnode_timeout_s = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    [problem] = exc.value.errors
    assert str(problem) == (
        f"cluster.node_timeout_s = 5.0 [{path}]: must be greater than"
        " cluster.heartbeat_interval_s = 5: a node renews its heartbeat once per interval, so a"
        " shorter timeout declares live nodes dead (and a node stops firing one interval before"
        f" its timeout) (cluster.heartbeat_interval_s [{path}])"
    )


def test_a_timeout_above_the_lookahead_is_refused_with_why(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("fetch_interval_s = 1\nlookahead_s = 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    [problem] = exc.value.errors
    assert str(problem) == (
        "cluster.node_timeout_s = 10.0 [default]: must be at most lookahead_s = 2: the jobs a"
        " dead node held are taken over only after node_timeout_s, so a longer timeout lets"
        f" every job of its window fire late (lookahead_s [{path}])"
    )


def test_both_rules_broken_are_both_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_CLUSTER__NODE_TIMEOUT_S", "40")
    with pytest.raises(ConfigError) as exc:
        load_config(cluster={"heartbeat_interval_s": 50})
    reasons = [(p.key, p.source, p.reason.split(":")[0]) for p in exc.value.errors]
    assert reasons == [
        (
            "cluster.node_timeout_s",
            "env INFINITE_SCHEDULER_CLUSTER__NODE_TIMEOUT_S",
            "must be greater than cluster.heartbeat_interval_s = 50",
        ),
        (
            "cluster.node_timeout_s",
            "env INFINITE_SCHEDULER_CLUSTER__NODE_TIMEOUT_S",
            "must be at most lookahead_s = 30",
        ),
    ]


def test_a_timeout_equal_to_the_lookahead_is_allowed() -> None:
    config = load_config(lookahead_s=10, fetch_interval_s=5)
    assert config.cluster.node_timeout_s == config.lookahead_s == 10


def test_a_misspelt_cluster_variable_gets_the_section_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_CLUSTER_NODE_TIMEOUT_S", "5")
    with pytest.raises(ConfigError, match="INFINITE_SCHEDULER_CLUSTER__NODE_TIMEOUT_S"):
        load_config()
