"""The cluster's decisions, pure: who is dead, whether this node may fire, which timings work.

Two clocks, on purpose. Whether *another* node is dead is decided by the database's clock
(rows and the database's now, as the store read them): nodes whose clocks disagree still agree.
Whether *this* node may still fire is decided by its own monotonic clock: it cannot ask the
database when the database is what it lost, and a wall clock may jump.

Self-fencing: a node whose last renewal was sent more than ``node_timeout - margin`` ago stops
starting handlers. Others declare it dead only once its heartbeat is ``node_timeout`` old by
the database's clock, and that heartbeat was written after the renewal was sent, so the node
stops at least ``margin`` (one heartbeat interval) before anyone may take its claims over.

One exception to "dead by the database's clock": a joiner refused because of a live-looking row
of a process on its own host can ask the operating system, and a process that is not running
any more is dead now (:func:`gone_from_this_host`), not in node_timeout_s.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from infinite_scheduler.config_errors import Conflict
from repos.cluster import LiveNode, NodeInfo, Roster


def is_dead(node: NodeInfo, *, now_ms: int, node_timeout_ms: int) -> bool:
    """ACTIVE or DRAINING, and a heartbeat older than the timeout by the database's clock
    (`now_ms`): its claims may be taken over, once declare_dead makes one node the taker."""
    return node.running and node.heartbeat_age_ms(now_ms) > node_timeout_ms


def live_nodes(roster: Roster, *, node_timeout_ms: int) -> list[NodeInfo]:
    """The running nodes whose heartbeat is recent enough, newest epoch first."""
    now_ms = roster.now_ms
    return [
        n
        for n in roster.nodes
        if n.running and not is_dead(n, now_ms=now_ms, node_timeout_ms=node_timeout_ms)
    ]


def gone_from_this_host(
    holder: LiveNode,
    *,
    host: str,
    pid: int,
    running: Callable[[int], bool],
    ours: Container[tuple[str, int]],
) -> bool:
    """Whether the live-looking node in the way of a join by process `pid` of host `host` is a
    process of this very host that no longer runs: a crash, restarted before its heartbeat
    aged. Its pid names no `running` process; or it is `pid` itself, and none of the (node id,
    epoch) this process runs (`ours`): an earlier process that had the same pid (a container
    restarted, its app pid 1 again). Hostnames must tell machines and containers apart (they do
    by default): a pid means nothing elsewhere, and a node there is never judged by this one."""
    if holder.host != host:
        return False
    if holder.pid == pid:
        return (holder.node_id, holder.epoch) not in ours
    return not running(holder.pid)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """This node's self-fencing rule, on its monotonic clock (milliseconds)."""

    heartbeat_interval_ms: int
    node_timeout_ms: int

    @property
    def margin_ms(self) -> int:
        """One heartbeat interval: the node stops that long before others may declare it dead."""
        return self.heartbeat_interval_ms

    def deadline_ms(self, renewed_ms: int) -> int:
        """When a node last renewed at `renewed_ms` (when that renewal was sent) must stop."""
        return renewed_ms + self.node_timeout_ms - self.margin_ms

    def may_fire(self, *, renewed_ms: int, now_ms: int) -> bool:
        return now_ms < self.deadline_ms(renewed_ms)

    def heartbeat_due(self, *, attempted_ms: int, now_ms: int) -> bool:
        """Whether the next renewal is due, the last one having been sent at `attempted_ms`."""
        return now_ms - attempted_ms >= self.heartbeat_interval_ms


def timing_conflicts(
    *, heartbeat_interval_s: float, node_timeout_s: float, lookahead_s: float
) -> list[Conflict]:
    """The rules heartbeat_interval_s < node_timeout_s <= lookahead_s, broken ones with why (keys
    from the top of the config)."""
    conflicts = []
    if node_timeout_s <= heartbeat_interval_s:
        conflicts.append(
            Conflict(
                "cluster.node_timeout_s",
                node_timeout_s,
                (
                    f"must be greater than cluster.heartbeat_interval_s = {heartbeat_interval_s:g}:"
                    " a node renews its heartbeat once per interval, so a shorter timeout"
                    " declares live nodes dead (and a node stops firing one interval before"
                    " its timeout)"
                ),
                ("cluster.heartbeat_interval_s",),
            )
        )
    if node_timeout_s > lookahead_s:
        conflicts.append(
            Conflict(
                "cluster.node_timeout_s",
                node_timeout_s,
                (
                    f"must be at most lookahead_s = {lookahead_s:g}: the jobs a dead node held"
                    " are taken over only after node_timeout_s, so a longer timeout lets every"
                    " job of its window fire late"
                ),
                ("lookahead_s",),
            )
        )
    return conflicts
