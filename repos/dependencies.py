"""Dependencies between jobs: the store-wide ``dependencies`` table, its contract and values.

A job stored with dependencies is a WAITING row (repos/base.py) plus one **edge** per row it
waits for, in this table beside ``nodes`` and ``leases``. The repository's insert writes the
edges in the transaction that stores the row (``ShardingRepository.insert(..., edges=...)``):
a row is never WAITING without its edges, and an insert rolled back leaves no edge behind.

An edge names both rows exactly, by entity type, id and sharding time. A dependency given by id
is resolved when the job is stored, to every row of that id stored then or in the same call (ids
are unique per shard only): so an id reused later in another shard is never waited for by
mistake, and a cycle can only run through the jobs of one call, which is refused whole.

Each edge carries ``check_at``: when the release is to look at it next (0 when stored). The
release reads only the edges due by it, and parks the others: an edge whose dependency is due
later until that time, one whose dependency waits itself until the release moves that one on.
So a pass reads the edges whose dependencies may have finished, not every edge stored.

The table holds the edges of waiting jobs only. The dependency release
(infinite_scheduler/dependency_release.py) removes a job's edges once it moved the job on
(to PENDING or FAILED) or found it no longer WAITING (cancelled, or gone with its shard): the
table does not grow with the jobs that passed through it.

Ids are stored as text (an entity's ids are ints or strings); :meth:`JobRef.typed` turns one
read back into the entity's key type.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

#: The store's dependencies table (beside the shards; both MySQL layouts share it).
DEPENDENCIES_TABLE = "dependencies"


class Must(IntEnum):
    """What a dependency must reach before its dependent may fire, stored as a TINYINT."""

    COMPLETE = 0  #: finished, whatever the outcome: DONE, FAILED, CANCELLED or MISSED
    SUCCEED = 1  #: DONE; FAILED, CANCELLED or MISSED fails the dependent


class JobRef(NamedTuple):
    """One stored row of any entity type: entity type name, id, sharding time."""

    entity: str
    key: int | str
    at_ms: int

    def typed(self, key_type: type) -> JobRef:
        """This ref with its id as the entity's key type (the table keeps ids as text)."""
        if type(self.key) is key_type:
            return self
        return JobRef(self.entity, key_type(self.key), self.at_ms)

    def __str__(self) -> str:
        return f"{self.entity} {self.key!r} (at {self.at_ms})"


class Edge(NamedTuple):
    """`job` waits for `on`, which must reach `must`."""

    job: JobRef
    on: JobRef
    must: Must


class DependencyStore(Protocol):
    """The dependencies table of one store: read and pruned by the dependency release (edges
    are written by the repositories' insert). Driver errors surface as StoreError
    (StoreUnavailable when the database cannot be reached), as in ShardingRepository."""

    async def open(self) -> None:
        """Connect and make the table if missing. Idempotent. The store itself must exist
        (StoreMissing), unless built with ``create_missing=True``."""

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def due(self, *, before_ms: int, limit: int) -> list[Edge]:
        """Every edge of up to `limit` waiting jobs that have an edge whose check_at is before
        before_ms, by job: all edges of each job, so that a decision about one sees everything
        it waits for. Read through an index on check_at: edges parked for later cost nothing.
        Ids come back as text. A new edge's check_at is 0 (looked at by the next pass)."""
        ...

    async def postpone(self, edges: Sequence[Edge], *, at_ms: int, their_time: bool = False) -> int:
        """Look at these edges again from at_ms on (their_time: from their dependency's own
        time, on_at, if that is earlier); return edges changed."""
        ...

    async def check_dependents(
        self, on: Sequence[JobRef], *, at_ms: int, their_time: bool = False
    ) -> int:
        """Look at the edges waiting for these rows again from at_ms on (their_time: from the
        row's own time, if earlier): a dependency the release just moved on. Read through an
        index on (on_entity, on_id, on_at); returns edges changed."""
        ...

    async def remove(self, jobs: Sequence[JobRef]) -> int:
        """Delete every edge of these jobs (ids compared as text); return edges deleted."""
        ...

    async def count(self) -> int:
        """Edges stored (for tests and the metrics)."""
        ...


#: The table's columns, in order.
COLUMNS = ("entity", "job_id", "job_at", "on_entity", "on_id", "on_at", "must")


def edge_row(edge: Edge) -> tuple[str, str, int, str, str, int, int]:
    """An edge as the table's columns, in COLUMNS order."""
    job, on = edge.job, edge.on
    return (job.entity, str(job.key), job.at_ms, on.entity, str(on.key), on.at_ms, int(edge.must))


def job_columns(job: JobRef) -> dict[str, str | int]:
    """A waiting job as the table's first three columns, by name."""
    return {"entity": job.entity, "job_id": str(job.key), "job_at": job.at_ms}


def edge_of(row: Sequence[Any]) -> Edge:
    """An edge from the table's columns (edge_row's order); ids as text."""
    entity, key, at_ms, on_entity, on_key, on_at_ms, must = row
    return Edge(
        JobRef(entity, str(key), int(at_ms)),
        JobRef(on_entity, str(on_key), int(on_at_ms)),
        Must(int(must)),
    )
