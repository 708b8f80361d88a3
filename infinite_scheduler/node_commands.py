"""``infinite-scheduler nodes list``: the nodes of the configured store, as its nodes table says.

Every running node (ACTIVE or DRAINING), with its heartbeat's age by the database's clock, the
ones whose heartbeat timed out (dead, not declared so yet) marked, and the last few that left
or were declared dead. "claims" counts the CLAIMED rows of that node id in the live shards of
the entity types served (the examples unless ``--app`` registers the user's own).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.membership import is_dead
from infinite_scheduler.shard_commands import missing_sqlite_store, served_repositories
from infinite_scheduler.stores import store_membership
from repos.base import RowRef, ShardingRepository, Status
from repos.cluster import NodeInfo, NodeState, Roster
from repos.errors import utc_text

Repo = ShardingRepository[Any, Any]
#: LEFT and DEAD rows shown below the running ones, newest first.
FINISHED_SHOWN = 10
PAGE = 1000
HEADER = (
    f"  {'node':<32} {'epoch':>7}  {'host':<20} {'pid':>7}  {'state':<9} {'heartbeat':>12}"
    f" {'claims':>8}\n"
)


def nodes_main(
    config: SchedulerConfig,
    *,
    setup: Callable[[InfiniteScheduler], None] | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Print the nodes table; store errors propagate (the caller maps them to exit 1)."""
    if missing_sqlite_store(config, "nodes", out):
        return
    repos = served_repositories(config, setup)
    roster, claims = asyncio.run(_read(config, repos))
    out.write(render(roster, claims, node_timeout_ms=config.cluster.node_timeout_ms))


async def _read(config: SchedulerConfig, repos: Sequence[Repo]) -> tuple[Roster, Counter[str]]:
    membership = store_membership(config)
    await membership.open()
    try:
        roster = await membership.list_nodes(finished=FINISHED_SHOWN)
    finally:
        await membership.close()
    claims: Counter[str] = Counter()
    for repo in repos:
        await repo.open()
        try:
            claims.update(await claims_by_node(repo))
        finally:
            await repo.close()
    return roster, claims


async def claims_by_node(repo: Repo) -> Counter[str]:
    """CLAIMED rows by claimed_by, over every live shard of the repository."""
    shards = await repo.list_shards()
    found: Counter[str] = Counter()
    if not shards:
        return found
    start_ms, end_ms = shards[0].bounds.start_ms, shards[-1].bounds.end_ms
    after: RowRef | None = None
    while True:
        rows = await repo.page(
            start_ms=start_ms, end_ms=end_ms, status=Status.CLAIMED, after=after, limit=PAGE
        )
        found.update(r.claimed_by or "" for r in rows)
        if len(rows) < PAGE:
            return found
        after = RowRef(rows[-1].key, rows[-1].at_ms)


def render(roster: Roster, claims: Mapping[str, int], *, node_timeout_ms: int) -> str:
    """The listing: a title line with the database's clock and how many nodes are live, then
    one line per node row, newest epoch first."""
    now_ms = roster.now_ms
    running = [n for n in roster.nodes if n.running]
    dead = [n for n in running if is_dead(n, now_ms=now_ms, node_timeout_ms=node_timeout_ms)]
    title = (
        f"{len(running) - len(dead)} live node{'' if len(running) - len(dead) == 1 else 's'}"
        f" (database clock {utc_text(now_ms)[:19]}Z, node_timeout_s {node_timeout_ms / 1000:g})\n"
    )
    if not roster.nodes:
        return title
    lines = [_line(n, now_ms, claims, timed_out=n in dead) for n in roster.nodes]
    note = (
        "  TIMED OUT: heartbeat older than node_timeout_s; dead, its claims to be taken over\n"
        if dead
        else ""
    )
    return title + HEADER + "".join(lines) + note


def _line(node: NodeInfo, now_ms: int, claims: Mapping[str, int], *, timed_out: bool) -> str:
    state = (
        "TIMED OUT"
        if timed_out
        else node.state.name
        if isinstance(node.state, NodeState)
        else f"state {node.state}"
    )
    held = str(claims.get(node.node_id, 0)) if node.running else "-"
    age = _age(node.heartbeat_age_ms(now_ms)) + " ago"
    return (
        f"  {node.node_id:<32} {node.epoch:>7}  {node.host[:20]:<20} {node.pid:>7}"
        f"  {state:<9} {age:>12} {held:>8}\n"
    )


def _age(ms: int) -> str:
    """``0.4 s``, ``95 s``, ``12 min``, ``3 h``, ``2 d``: as precise as a person needs."""
    seconds = max(0, ms) / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    for unit, span in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * span:
            return f"{int(seconds // span)} {unit}"
    return f"{int(seconds)} s"
