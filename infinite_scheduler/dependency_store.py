"""Storing jobs that wait for others: the part of schedule() / store() that only such jobs pay.

:func:`plan_waiting` checks the whole call before anything is stored (each dependency's entity
type served here, its id of that type's id type and stored, or stored in the same call; no
cycle), and resolves each dependency to the rows it stands for; :func:`store_waiting` then
stores the jobs WAITING, each lane's rows and edges in one transaction
(``ShardingRepository.insert_rows(..., edges=...)``). The caller stores the call's other
entities in between, so that a job waiting for one of them finds it stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infinite_scheduler.dependencies import resolve
from infinite_scheduler.errors import DependencyRefused
from infinite_scheduler.job import Job, entity_of, with_options
from repos.base import EncodedRow, ShardingRepository, encode_for
from repos.dependencies import Edge, JobRef

Repo = ShardingRepository[Any, Any]


@dataclass(frozen=True, slots=True)
class WaitingBatch:
    """One entity type's jobs to store WAITING, encoded, with their edges."""

    repo: Repo
    rows: list[EncodedRow]
    edges: list[Edge]


async def plan_waiting(
    repos: Mapping[str, Repo],
    names: Mapping[type, str],
    plain: Sequence[Any],
    waiting: Sequence[Job[Any]],
    *,
    now_ms: int,
    unknown: Callable[[list[str]], Exception],
) -> list[WaitingBatch]:
    """Check and resolve the `waiting` jobs of a call whose other items are `plain` (entities
    or Jobs without dependencies); raise
    DependencyRefused (or `unknown(names)` for an entity class not served) before anything is
    stored. `repos` by entity type name, `names` by entity class."""
    new: dict[tuple[str, int | str], list[JobRef]] = {}
    for name, entities in _by_type([entity_of(item) for item in plain], names, unknown).items():
        for row in encode_for(repos[name], entities, now_ms=now_ms):
            new.setdefault((name, row.key), []).append(JobRef(name, row.key, row.at_ms))
    jobs = _by_type(waiting, names, unknown, entity=lambda job: job.entity)
    batches: dict[str, list[EncodedRow]] = {}
    refs: list[tuple[JobRef, Job[Any]]] = []
    for name, some in jobs.items():
        rows = with_options(
            encode_for(repos[name], [job.entity for job in some], now_ms=now_ms),
            [(job.priority, job.category) for job in some],
        )
        batches[name] = rows
        for row, job in zip(rows, some, strict=True):
            ref = JobRef(name, row.key, row.at_ms)
            new.setdefault((name, row.key), []).append(ref)
            refs.append((ref, job))
    stored = await _stored_rows(repos, refs)
    rows_by_id = {k: [*stored.get(k, ()), *new.get(k, ())] for k in stored.keys() | new.keys()}
    edges = resolve(refs, rows_by_id)
    by_lane: dict[str, list[Edge]] = {}
    for edge in edges:
        by_lane.setdefault(edge.job.entity, []).append(edge)
    return [WaitingBatch(repos[name], rows, by_lane[name]) for name, rows in batches.items()]


async def store_waiting(batches: Sequence[WaitingBatch], *, now_ms: int) -> int:
    """Store what plan_waiting made: each type's rows WAITING with their edges, atomically."""
    stored = 0
    for batch in batches:
        stored += await batch.repo.insert_rows(batch.rows, now_ms=now_ms, edges=batch.edges)
    return stored


async def _stored_rows(
    repos: Mapping[str, Repo], refs: Sequence[tuple[JobRef, Job[Any]]]
) -> dict[tuple[str, int | str], list[JobRef]]:
    """The stored rows of every id the jobs depend on, found with one locate() per type;
    DependencyRefused for a dependency whose type is not served or whose id is not its type's."""
    ids: dict[str, set[int | str]] = {}
    for ref, job in refs:
        for dep in job.depends_on:
            repo = repos.get(dep.entity)
            if repo is None:
                served = ", ".join(map(repr, sorted(repos)))
                raise DependencyRefused(
                    ref.entity, ref.key, str(dep), f"unknown entity type (served: {served})"
                )
            key_type = repo.spec.key_type
            if type(dep.id) is not key_type:
                reason = f"{dep.entity} ids are of type {key_type.__name__}"
                raise DependencyRefused(ref.entity, ref.key, str(dep), reason)
            ids.setdefault(dep.entity, set()).add(dep.id)
    found: dict[tuple[str, int | str], list[JobRef]] = {}
    for name, keys in ids.items():
        for row in await repos[name].locate(sorted(keys, key=str)):
            found.setdefault((name, row.key), []).append(JobRef(name, row.key, row.at_ms))
    return found


def _by_type(
    items: Sequence[Any],
    names: Mapping[type, str],
    unknown: Callable[[list[str]], Exception],
    *,
    entity: Callable[[Any], Any] = lambda item: item,
) -> dict[str, list[Any]]:
    """The items grouped by the entity type name of their entity, in call order."""
    missing = sorted({type(entity(i)).__name__ for i in items if type(entity(i)) not in names})
    if missing:
        raise unknown(missing)
    grouped: dict[str, list[Any]] = {}
    for item in items:
        grouped.setdefault(names[type(entity(item))], []).append(item)
    return grouped
