"""The dependency release: waiting jobs whose dependencies are done become PENDING (or FAILED).

Every ``dependencies.poll_interval_s``, the node holding the lease ``dependencies``
(infinite_scheduler/lease.py) reads the edges due to be looked at (repos/dependencies.py,
``check_at``), with every other edge of their jobs, a page of jobs at a time; looks up the rows of
those jobs and of their dependencies (one ``locate`` per entity type and page), decides each job
(infinite_scheduler/dependencies.py ``decide``) and writes the outcome: ready jobs become PENDING
(``end_waits``), and the normal claim fires them at their own time, never before; a job whose
must-succeed dependency did not succeed becomes FAILED, its last_error naming that dependency;
then the edges of every job decided, or found no longer WAITING (cancelled, gone with its
shard), are removed. The claim and the ack pay nothing for any of it: WAITING rows sit outside
the claim index's PENDING range, and finishing a job writes nothing about the jobs waiting for
it.

What a pass reads is bounded by what may have moved, not by the edges stored. An edge of a job
still waiting is parked until its dependency may have finished: at the next pass while that one
runs or is overdue, at its time while it is due later, until the release moves it on while it
waits itself (RECHECK_MS at the latest, for either: a cancel is noticed then), for good once it
finished (the job's other edges bring the job back). A job released wakes its dependents' edges
for its time; one failed or gone wakes them now, and the pass goes on in rounds until nothing is
due, so a failure runs down a whole must-succeed chain in one pass. A chain of jobs due at once
advances a link per pass after each link finishes.

Each step is idempotent (``end_waits`` moves WAITING rows only, edges are removed after it, and
a parked edge is only ever looked at again too early or once more), so a pass cut short, or two
passes at once from a holder whose lease lapsed, repeat work and never a fire. A node with no
edges due reads one empty page per poll and takes no lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infinite_scheduler.clock import Clock
from infinite_scheduler.dependencies import Decision, Outcome, decide
from infinite_scheduler.lease import Lease
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import FINISHED, Failure, RowRef, ShardingRepository, Status, StoreError
from repos.dependencies import DependencyStore, Edge, JobRef

logger = logging.getLogger(__name__)

Repo = ShardingRepository[Any, Any]
#: An edge whose dependency is due later, or waits itself, is looked at again after this long at
#: the latest: a dependency cancelled before its time is noticed then (or at its time).
RECHECK_MS = 300_000
#: When an edge whose dependency finished is looked at: never by itself (the waiting job's other
#: edges bring the job back).
PARKED_MS = 2**62
#: Rounds of one pass at most (a page of jobs each).
MAX_ROUNDS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseSettings:
    node_id: str
    poll_interval_s: float
    page_size: int  #: waiting jobs looked at per page


@dataclass(slots=True)
class PassReport:
    """What one pass did."""

    ready: int = 0  #: jobs moved to PENDING
    failed: int = 0  #: jobs moved to FAILED
    dropped: int = 0  #: jobs found no longer WAITING, whose edges went

    def __bool__(self) -> bool:
        return bool(self.ready or self.failed or self.dropped)


class DependencyRelease:
    """Moves waiting jobs on; `release_once` runs a pass (under the lease), `run` loops."""

    def __init__(
        self,
        store: DependencyStore,
        repos: Mapping[str, Repo],
        settings: ReleaseSettings,
        *,
        lease: Lease,
        clock: Clock,
    ) -> None:
        self.store = store
        self.repos = dict(repos)
        self.settings = settings
        self.lease = lease
        self.clock = clock
        self.passes = 0
        #: Edges read from the store, over every pass (tests, and the metrics, may watch it).
        self.edges_read = 0
        self._unserved: set[str] = set()

    def __repr__(self) -> str:
        return f"<DependencyRelease passes={self.passes} lease={self.lease!r}>"

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every poll interval; a pass the store failed is retried sooner (backoff)."""
        interval_s = self.settings.poll_interval_s
        backoff = Backoff(min(1.0, interval_s), max(interval_s, 1.0))
        while not stop.is_set():
            try:
                await self.release_once()
            except StoreError as exc:
                logger.warning("dependency release failed, retrying: %s", exc, extra=self._extra())
                await backoff.wait(stop)
                continue
            backoff.succeeded()
            await wait_any(stop, timeout_s=interval_s)

    async def release_once(self) -> PassReport:
        """One pass over the edges due to be looked at, if this node holds (or takes) the
        lease: rounds of a page of jobs each until none is left, so that a failure cascading
        down a chain (must succeed) fails every link in the one pass."""
        report = PassReport()
        now_ms = self.clock.now_ms()
        edges = await self._due(now_ms + 1)
        if not edges or not await self.lease.acquire():
            return report
        for _ in range(MAX_ROUNDS):
            await self._page(edges, report, now_ms)
            # Later rounds: only what this pass woke (before now); what it parked at now (a
            # dependency running or overdue) waits for the next pass.
            edges = await self._due(now_ms)
            if not edges:
                break
        self.passes += 1
        if report:
            logger.info(
                "dependencies: %d jobs ready, %d failed, %d no longer waiting",
                report.ready,
                report.failed,
                report.dropped,
                extra=self._extra(),
            )
        return report

    async def release(self) -> None:
        """A graceful stop: give the lease up, so that another node takes it at its next try."""
        await self.lease.release()

    async def _due(self, before_ms: int) -> list[Edge]:
        edges = await self.store.due(before_ms=before_ms, limit=self.settings.page_size)
        self.edges_read += len(edges)
        return edges

    async def _page(self, edges: Sequence[Edge], report: PassReport, now_ms: int) -> None:
        """Decide the page's jobs; write what moved on; park every edge still waiting until
        its dependency may have finished (nothing read here comes back in this pass, but the
        dependents of what failed or went, which are looked at next round)."""
        by_job, unserved = self._typed(edges)
        statuses = await self._statuses(by_job)
        decided: dict[JobRef, Decision] = {}
        later: dict[tuple[int, bool], list[Edge]] = {}
        for job, job_edges in by_job.items():
            deps = [(e, statuses.get(e.on)) for e in job_edges]
            decision = decide(statuses.get(job), deps)
            if decision.outcome is not Outcome.WAIT:
                decided[job] = decision
                continue
            for edge, status in deps:
                later.setdefault(self._next_look(edge, status, now_ms), []).append(edge)
        if unserved:
            later.setdefault((now_ms + RECHECK_MS, False), []).extend(unserved)
        await self._write(decided, report)
        await self.store.remove(list(decided))
        for (at_ms, their_time), parked in later.items():
            await self.store.postpone(parked, at_ms=at_ms, their_time=their_time)
        await self._wake_dependents(decided, now_ms)

    def _next_look(self, edge: Edge, status: Status | int | None, now_ms: int) -> tuple[int, bool]:
        """(when, their_time) to look at an edge of a job still waiting again: its dependency
        running or overdue, next pass; due later, at its time; finished, never (the job's
        other edges bring it back); waiting itself, when the release moves it on (and at the
        latest after RECHECK_MS, as for one due later: a cancel is noticed then)."""
        if status is None or status in FINISHED:
            return PARKED_MS, False
        if status is Status.CLAIMED or (status is Status.PENDING and edge.on.at_ms <= now_ms):
            return now_ms, False
        return now_ms + RECHECK_MS, status is Status.PENDING

    async def _wake_dependents(self, decided: Mapping[JobRef, Decision], now_ms: int) -> None:
        """The jobs waiting for those just decided: for one released, from its time (the next
        pass if that has come); for one failed or gone, at once (the next round of this
        pass)."""
        now: list[JobRef] = []
        due_now: list[JobRef] = []
        due_later: list[JobRef] = []
        for job, decision in decided.items():
            if decision.outcome is not Outcome.READY:
                now.append(job)
            else:
                (due_now if job.at_ms <= now_ms else due_later).append(job)
        if now:
            await self.store.check_dependents(now, at_ms=now_ms - 1)
        if due_now:
            await self.store.check_dependents(due_now, at_ms=now_ms)
        if due_later:
            await self.store.check_dependents(due_later, at_ms=now_ms + RECHECK_MS, their_time=True)

    def _typed(self, edges: Sequence[Edge]) -> tuple[dict[JobRef, list[Edge]], list[Edge]]:
        """The page's edges by job, ids as their entity's key type; and the edges of jobs of (or
        waiting for) an entity type this node does not serve, left whole to a node that does."""
        skipped = {
            edge.job
            for edge in edges
            if not self._served(edge.job.entity) or not self._served(edge.on.entity)
        }
        by_job: dict[JobRef, list[Edge]] = {}
        for edge in edges:
            if edge.job not in skipped:
                job, on = self._key_typed(edge.job), self._key_typed(edge.on)
                by_job.setdefault(job, []).append(Edge(job, on, edge.must))
        return by_job, [edge for edge in edges if edge.job in skipped]

    async def _statuses(self, by_job: Mapping[JobRef, Sequence[Edge]]) -> dict[JobRef, Any]:
        """The status of every row the page names, jobs and dependencies: one locate() per
        entity type. A row absent from the answer is gone (None)."""
        keys: dict[str, set[int | str]] = {}
        for job, job_edges in by_job.items():
            keys.setdefault(job.entity, set()).add(job.key)
            for edge in job_edges:
                keys.setdefault(edge.on.entity, set()).add(edge.on.key)
        found: dict[JobRef, Status | int] = {}
        for entity, some in keys.items():
            located = await self.repos[entity].locate(sorted(some, key=str))
            found.update({JobRef(entity, r.key, r.at_ms): s for r, s in located.items()})
        return found

    async def _write(self, decided: Mapping[JobRef, Decision], report: PassReport) -> None:
        by_entity: dict[str, tuple[list[RowRef], list[Failure]]] = {}
        for job, decision in decided.items():
            ready, failed = by_entity.setdefault(job.entity, ([], []))
            ref = RowRef(job.key, job.at_ms)
            if decision.outcome is Outcome.READY:
                ready.append(ref)
                report.ready += 1
            elif decision.outcome is Outcome.FAIL:
                failed.append(Failure(ref=ref, error=decision.reason, retry_at_ms=None))
                report.failed += 1
                self._log_failed(job, decision.reason)
            else:
                report.dropped += 1
        for entity, (ready, failed) in by_entity.items():
            await self.repos[entity].end_waits(ready, failed)

    def _served(self, entity: str) -> bool:
        if entity in self.repos:
            return True
        if entity not in self._unserved:
            self._unserved.add(entity)
            logger.warning(
                "dependencies: jobs of entity type %r wait here, which this node does not"
                " serve; a node that serves it releases them",
                entity,
                extra=self._extra(entity=entity),
            )
        return False

    def _key_typed(self, ref: JobRef) -> JobRef:
        return ref.typed(self.repos[ref.entity].spec.key_type)

    def _log_failed(self, job: JobRef, reason: str) -> None:
        logger.warning(
            "%s %r failed without firing: %s",
            job.entity,
            job.key,
            reason,
            extra=self._extra(entity=job.entity, job_id=job.key),
        )

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"action": "dependencies", "node": self.settings.node_id, **more}
