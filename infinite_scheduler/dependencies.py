"""Dependencies between jobs, the pure part: the rows a job waits for and the cycles among them
(when it is stored), and what becomes of a waiting job once its dependencies were looked at.

No I/O here: infinite_scheduler/dependency_store.py stores jobs with dependencies, and
infinite_scheduler/dependency_release.py moves waiting jobs on. The rules:

- A dependency names a job by entity type and id; it stands for every row of that id stored
  when the waiting job is stored, or stored in the same call. None: the job is refused.
- Edges always point at rows that exist when they are written, so a cycle can only run through
  the jobs of one call (a job depending on itself included): it is refused, the call with it.
- A waiting job whose must-succeed dependency did not succeed fails at once, naming it; one
  whose dependencies all reached what they must becomes PENDING and fires at its own time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from infinite_scheduler.errors import DependencyRefused
from infinite_scheduler.job import DependsOn, Job
from repos.base import FINISHED, Status, status_label
from repos.dependencies import Edge, JobRef, Must

#: Jobs named in the message about a cycle, at most.
CYCLE_SHOWN = 8
#: Rows by (entity type, id): what a DependsOn stands for.
RowsById = Mapping[tuple[str, int | str], Sequence[JobRef]]


def resolve(waiting: Sequence[tuple[JobRef, Job[Any]]], rows: RowsById) -> list[Edge]:
    """The edges of the jobs about to be stored WAITING (each with its new row's ref), given
    the rows each id stands for; DependencyRefused for a dependency with no row, or for a cycle
    among them."""
    edges: list[Edge] = []
    for ref, job in waiting:
        for dep in job.depends_on:
            targets = rows.get((dep.entity, dep.id), ())
            if not targets:
                raise _refused(ref, dep, "no job of this id is stored, nor stored in this call")
            edges += [Edge(ref, target, dep.rule) for target in targets]
    _refuse_cycles(edges, {ref: job for ref, job in waiting})
    return edges


def _refuse_cycles(edges: Sequence[Edge], jobs: Mapping[JobRef, Job[Any]]) -> None:
    """DependencyRefused naming a job on a cycle and the dependency that closes it (a depth
    first walk, without recursion: a chain of thousands of jobs is fine)."""
    after: dict[JobRef, list[Edge]] = {}
    for edge in edges:
        after.setdefault(edge.job, []).append(edge)
    on_path: set[JobRef] = set()
    done: set[JobRef] = set()
    for start in after:
        if start in done:
            continue
        path: list[Edge] = []  # the edges walked from start to the job on top of the stack
        stack = [(start, iter(after[start]))]
        on_path.add(start)
        while stack:
            job, todo = stack[-1]
            step = next(todo, None)
            if step is None:
                stack.pop()
                on_path.discard(job)
                done.add(job)
                if path:
                    path.pop()
            elif step.on in on_path:
                raise _cycle(step, path, jobs)
            elif step.on in after and step.on not in done:
                path.append(step)
                on_path.add(step.on)
                stack.append((step.on, iter(after[step.on])))


def _cycle(
    closing: Edge, path: Sequence[Edge], jobs: Mapping[JobRef, Job[Any]]
) -> DependencyRefused:
    """The error for the edge `closing` a cycle with the end of `path`: ``a -> b -> a``."""
    first = next((i for i, e in enumerate(path) if e.job == closing.on), len(path))
    ring = [e.job for e in path[first:]] + [closing.job, closing.on]
    dep = next(d for d in jobs[closing.job].depends_on if _names(d, closing.on))
    names = list(map(_name, ring))
    if len(names) > CYCLE_SHOWN:  # a ring of thousands: its ends say enough
        names[CYCLE_SHOWN // 2 : -2] = [f"... {len(names) - CYCLE_SHOWN // 2 - 2} more"]
    return _refused(closing.job, dep, f"it makes a cycle ({' -> '.join(names)})")


def _names(dep: DependsOn, ref: JobRef) -> bool:
    return dep.entity == ref.entity and dep.id == ref.key


def _name(ref: JobRef) -> str:
    return f"{ref.entity} {ref.key!r}"


def _refused(ref: JobRef, dep: DependsOn, reason: str) -> DependencyRefused:
    return DependencyRefused(ref.entity, ref.key, str(dep), reason)


class Outcome(Enum):
    WAIT = "wait"  #: a dependency is not done yet
    READY = "ready"  #: every dependency reached what it must: to PENDING
    FAIL = "fail"  #: a must-succeed dependency did not succeed: to FAILED, with the reason
    DROP = "drop"  #: the job is no longer WAITING (cancelled, gone): only its edges go


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str = ""


WAIT = Decision(Outcome.WAIT)
READY = Decision(Outcome.READY)
DROP = Decision(Outcome.DROP)


def decide(
    status: Status | int | None, deps: Sequence[tuple[Edge, Status | int | None]]
) -> Decision:
    """What becomes of a job (its row's `status`; None: not stored any more) given each of its
    edges with its dependency row's status (None: gone with its shard)."""
    if status is not Status.WAITING:
        return DROP
    waiting = False
    for edge, dep_status in deps:
        verdict = _verdict(edge, dep_status)
        if verdict.outcome is Outcome.FAIL:
            return verdict
        waiting = waiting or verdict.outcome is Outcome.WAIT
    return WAIT if waiting else READY


def _verdict(edge: Edge, status: Status | int | None) -> Decision:
    """READY: this dependency reached what it must; WAIT: not yet; FAIL: it never will."""
    succeed = edge.must is Must.SUCCEED
    if status is None:  # past retention: it will never finish now
        if succeed:
            return Decision(Outcome.FAIL, f"dependency {_name(edge.on)} is no longer stored")
        return READY
    if status not in FINISHED:
        return WAIT
    if succeed and status is not Status.DONE:
        label = status_label(status)
        return Decision(Outcome.FAIL, f"dependency {_name(edge.on)} {label}; it had to succeed")
    return READY
