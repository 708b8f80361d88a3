"""What a handler receives, and the per-entity-type lane the engine keeps for each type."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from infinite_scheduler.metrics import EntityMetrics
from infinite_scheduler.wheel import TimerWheel
from repos.base import ClaimedJob, EntitySpec, HeldJob, ShardingRepository

TEntity = TypeVar("TEntity")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobContext(Generic[TEntity]):
    """Everything a handler needs to do its job once, and to notice when it is a repeat.

    `idempotency_key` is the same for the same attempt of the same job: a handler that reaches
    the outside world should pass it along, because a crash between the handler finishing and
    its ack being written makes the engine fire that attempt again.

    Times are kept as epoch milliseconds and become datetimes when a handler asks: one context
    is built per fire, and three datetimes a job cost a burst more than its whole dispatch.
    """

    entity: TEntity
    entity_type: str
    job_id: int | str
    attempt: int
    scheduled_ms: int
    due_ms: int
    fired_ms: int

    @property
    def scheduled_at(self) -> datetime:
        return _utc(self.scheduled_ms)

    @property
    def due_at(self) -> datetime:
        return _utc(self.due_ms)

    @property
    def fired_at(self) -> datetime:
        return _utc(self.fired_ms)

    @property
    def idempotency_key(self) -> str:
        return f"{self.entity_type}:{self.job_id}:{self.attempt}"

    def log_context(self) -> dict[str, Any]:
        return {"action": "fire", "entity": self.entity_type, "job_id": self.job_id}


Handler = Callable[[JobContext[Any]], Awaitable[object] | object]


@dataclass(slots=True, kw_only=True)
class Lane:
    """One entity type inside the engine: its spec, store, handler and the jobs it holds.

    Built whole when the engine starts (infinite_scheduler/parts.py), with a wheel whose time
    is the start's: a job the first fetch finds due is refused by it, so it fires once, now.
    """

    spec: EntitySpec[Any, Any]
    repo: ShardingRepository[Any, Any]
    handler: Handler
    metrics: EntityMetrics
    wheel: TimerWheel[Any, HeldJob]
    #: Whether the handler is awaited on the loop (else it runs on the dispatcher's threads):
    #: asked once here, not per job.
    is_async: bool = field(init=False)
    #: Claim stamps (claimed_at) of claims that failed without telling whether they committed,
    #: and the earliest due time of the rows each could take: rows they may have left CLAIMED
    #: by this node are released before the next claim.
    claims_in_doubt: dict[int, int] = field(init=False, default_factory=dict)
    #: (id, sharding time) of the jobs out of the wheel whose outcome is not written yet:
    #: with the wheel, what this node holds, so that a row claimed again is not held twice.
    in_hand: set[tuple[int | str, int]] = field(init=False, default_factory=set)
    #: Sharding times of the jobs held under (id, sharding time), because a job of the same id
    #: from another shard was held under the plain id already: a cancel by id finds them here.
    twins: dict[int | str, set[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        call = getattr(self.handler, "__call__", None)  # noqa: B004 - async callable objects count too
        self.is_async = inspect.iscoroutinefunction(self.handler) or inspect.iscoroutinefunction(
            call
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def context(self, job: ClaimedJob, fired_ms: int) -> JobContext[Any]:
        """Decode the payload (lazily, now that the job fires) and build the handler's context."""
        if job.payload is None:  # the engine reads it before the job is due: a bug if not
            raise RuntimeError(f"{self.name} job {job.key} fired before its payload was read")
        return JobContext(
            self.spec.decode(job.key, job.at_ms, job.payload),
            self.spec.name,
            job.key,
            job.attempts,
            job.at_ms,
            job.due_ms,
            fired_ms,
        )

    async def call(self, ctx: JobContext[Any]) -> None:
        """Run an async handler (sync ones run on the dispatcher's threads)."""
        result = self.handler(ctx)
        if inspect.isawaitable(result):
            await result


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def by_type(
    entities: list[Any], known: Mapping[type, T], unknown: Callable[[list[str]], Exception]
) -> dict[T, list[Any]]:
    """The entities grouped by what `known` maps their class to, in call order; `unknown(names)`
    is raised, before anything is grouped, for classes it does not know. A call of one type,
    the usual one, costs no step per entity (at ingest rates a dict lookup per job shows)."""
    types = set(map(type, entities))
    missing = [t.__name__ for t in types if t not in known]
    if missing:
        raise unknown(sorted(missing))
    if len(types) == 1:
        return {known[type(entities[0])]: entities}
    grouped: dict[T, list[Any]] = {}
    for entity in entities:
        grouped.setdefault(known[type(entity)], []).append(entity)
    return grouped
