"""What the dashboard shows of a store beside its schedules and jobs: the nodes, each entity
type's shards (rows by status, what retention drops next) and the execution history's figures,
now and over the last minutes.

Everything is read from the store, never from one engine's metrics registry: every node's API
and a standalone ``infinite-scheduler api`` show the same cluster-wide picture. Counting rows
by status is a scan of every shard, so the shard figures are kept for a couple of seconds and
shared by every dashboard polling meanwhile; a finished bucket of the throughput chart never
changes, so it is read once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from infinite_scheduler.clock import Clock
from infinite_scheduler.history import ExecutionHistory
from repos.base import ShardInfo, ShardingRepository, Status
from repos.cluster import Membership, NodeInfo, NodeState
from repos.history import FIRED, NOT_OK, SlaReport

Repo = ShardingRepository[Any, Any]
T = TypeVar("T")
#: Seconds the shard figures are reused: a scan of every shard per poll of every open page
#: would load the database for nothing the eye can tell apart.
SHARDS_FRESH_S = 2.0
#: The chart's buckets: 30 of 20 s, the last ten minutes.
BUCKET_MS = 20_000
BUCKETS = 30
#: A bucket is final this long after it ends: acks are written in group commits a moment
#: after the handler returns.
SETTLE_MS = 5_000
#: The "now" figures are over this window.
RECENT_MS = 60_000
#: LEFT and DEAD nodes listed below the running ones.
FINISHED_NODES = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    node_id: str
    epoch: int
    host: str
    pid: int
    version: str
    state: str
    started_at_ms: int
    heartbeat_age_ms: int
    #: Running, but its heartbeat is older than node_timeout_s: dead, not declared so yet.
    timed_out: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardView:
    name: str
    start_ms: int
    end_ms: int
    rows: dict[str, int]
    unfinished: int
    #: When retention drops it whole: its end plus the entity type's retention.
    drops_at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityView:
    entity: str
    granularity: str
    retention_ms: int
    shards: tuple[ShardView, ...]
    #: Rows by status over every live shard.
    rows: dict[str, int]
    #: The shard retention drops next (the oldest), None without shards.
    drops_next: ShardView | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    """Attempts that ended in [start_ms, start_ms + BUCKET_MS)."""

    start_ms: int
    fired: int
    failed: int


def node_view(node: NodeInfo, *, now_ms: int, node_timeout_ms: int) -> NodeView:
    age = node.heartbeat_age_ms(now_ms)
    state = node.state.name if isinstance(node.state, NodeState) else f"state {node.state}"
    return NodeView(
        node_id=node.node_id,
        epoch=node.epoch,
        host=node.host,
        pid=node.pid,
        version=node.version,
        state=state,
        started_at_ms=node.started_at_ms,
        heartbeat_age_ms=age,
        timed_out=node.running and age > node_timeout_ms,
    )


def entity_view(repo: Repo, shards: Sequence[ShardInfo]) -> EntityView:
    """One entity type's shards, oldest first, with totals by status (pure)."""
    retention_ms = repo.policy.retention_ms
    views = tuple(
        ShardView(
            name=s.name,
            start_ms=s.bounds.start_ms,
            end_ms=s.bounds.end_ms,
            rows=status_counts(s.rows),
            unfinished=s.unfinished,
            drops_at_ms=s.bounds.end_ms + retention_ms,
        )
        for s in shards
    )
    totals: dict[str, int] = {}
    for view in views:
        for status, n in view.rows.items():
            totals[status] = totals.get(status, 0) + n
    return EntityView(
        entity=repo.spec.name,
        granularity=str(repo.policy.granularity),
        retention_ms=retention_ms,
        shards=views,
        rows=totals,
        drops_next=views[0] if views else None,
    )


def status_counts(rows: Mapping[Status | int, int]) -> dict[str, int]:
    """Counts by status name; a status this version does not know keeps its number."""
    return {(s.name if isinstance(s, Status) else str(s)): n for s, n in rows.items() if n}


def bucket_starts(now_ms: int, *, width_ms: int = BUCKET_MS, count: int = BUCKETS) -> list[int]:
    """The starts of the `count` buckets ending with the one holding `now_ms`, oldest first."""
    last = now_ms - now_ms % width_ms
    return [last - width_ms * i for i in range(count - 1, -1, -1)]


@dataclass(slots=True)
class _Fresh(Generic[T]):
    """A value read at most once per `max_age_s`, however many callers ask meanwhile."""

    max_age_s: float
    read: Callable[[], Awaitable[T]]
    _value: T | None = None
    _at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> T:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._value is None or now - self._at >= self.max_age_s:
                self._value = await self.read()
                self._at = now
            return self._value


class StoreViews:
    """The store as the dashboard shows it; one per API process."""

    def __init__(
        self,
        membership: Membership,
        repos: Mapping[str, Repo],
        history: ExecutionHistory | None,
        *,
        clock: Clock,
        node_timeout_ms: int,
    ) -> None:
        self._membership = membership
        self._repos = dict(repos)
        self.history = history
        self._clock = clock
        self._node_timeout_ms = node_timeout_ms
        self._entities = _Fresh(SHARDS_FRESH_S, self._read_entities)
        self._buckets: dict[int, Bucket] = {}

    @property
    def entity_types(self) -> list[str]:
        return sorted(self._repos)

    def key_type(self, entity: str) -> type | None:
        repo = self._repos.get(entity)
        return None if repo is None else repo.spec.key_type

    async def nodes(self) -> tuple[int, list[NodeView]]:
        """The database's now and the nodes: the running ones and the last few gone."""
        roster = await self._membership.list_nodes(finished=FINISHED_NODES)
        views = [
            node_view(n, now_ms=roster.now_ms, node_timeout_ms=self._node_timeout_ms)
            for n in roster.nodes
        ]
        return roster.now_ms, views

    async def entities(self) -> list[EntityView]:
        return await self._entities.get()

    async def _read_entities(self) -> list[EntityView]:
        found = []
        for name in sorted(self._repos):
            repo = self._repos[name]
            found.append(entity_view(repo, await repo.list_shards(counts=True)))
        return found

    async def recent(self) -> SlaReport | None:
        """The SLA figures of the last RECENT_MS; None when the history is off."""
        if self.history is None:
            return None
        return await self.history.sla(window_ms=RECENT_MS)

    async def series(self) -> list[Bucket]:
        """Fired and failed attempts per BUCKET_MS over the last minutes, oldest first; empty
        when the history is off. Settled buckets come from memory."""
        if self.history is None:
            return []
        now_ms = self._clock.now_ms()
        starts = bucket_starts(now_ms)
        out = []
        for start in starts:
            bucket = self._buckets.get(start)
            if bucket is None:
                bucket = await self._bucket(start)
                if start + BUCKET_MS + SETTLE_MS <= now_ms:
                    self._buckets[start] = bucket
            out.append(bucket)
        for old in [s for s in self._buckets if s < starts[0]]:
            del self._buckets[old]
        return out

    async def _bucket(self, start_ms: int) -> Bucket:
        assert self.history is not None
        store = self.history.store
        counts = await store.sla_counts(
            start_ms=start_ms,
            end_ms=start_ms + BUCKET_MS,
            late_threshold_ms=self.history.late_threshold_ms,
        )
        fired = sum(c.attempts for c in counts if c.outcome in FIRED)
        failed = sum(c.attempts for c in counts if c.outcome in NOT_OK)
        return Bucket(start_ms=start_ms, fired=int(fired), failed=int(failed))
