"""The dependency release: waiting jobs whose dependencies are done become PENDING (or FAILED).

Every ``dependencies.poll_interval_s``, the node holding the lease ``dependencies``
(infinite_scheduler/lease.py) reads the store's dependencies table a page of waiting jobs at a
time, looks up the rows of those jobs and of their dependencies (one ``locate`` per entity type
and page), decides each job (infinite_scheduler/dependencies.py ``decide``) and writes the
outcome: ready jobs become PENDING (``end_waits``), and the normal claim fires them at their own
time, never before; a job whose must-succeed dependency did not succeed becomes FAILED, its
last_error naming that dependency; then the edges of every job decided, or found no longer
WAITING (cancelled, gone with its shard), are removed. The claim and the ack pay nothing for
any of it: WAITING rows sit outside the claim index's PENDING range, and finishing a job writes
nothing about the jobs waiting for it.

Each step is idempotent (``end_waits`` moves WAITING rows only, and edges are removed after
it), so a pass cut short, or two passes at once from a holder whose lease lapsed, repeat work
and never a fire. A node with no waiting jobs in the store reads one empty page per poll and
takes no lease. Chains (a -> b -> c) move a link per pass at least: b's release makes it
PENDING, it fires, and the pass after its ack releases a.
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
from repos.base import Failure, RowRef, ShardingRepository, Status, StoreError
from repos.dependencies import DependencyStore, Edge, JobRef

logger = logging.getLogger(__name__)

Repo = ShardingRepository[Any, Any]


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
        """One pass over every waiting job, if this node holds (or takes) the lease."""
        report = PassReport()
        edges = await self.store.waiting(after=None, limit=self.settings.page_size)
        if not edges or not await self.lease.acquire():
            return report
        while edges:
            await self._page(edges, report)
            if len({e.job for e in edges}) < self.settings.page_size:
                break
            edges = await self.store.waiting(after=edges[-1].job, limit=self.settings.page_size)
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

    async def _page(self, edges: Sequence[Edge], report: PassReport) -> None:
        by_job = self._typed(edges)
        statuses = await self._statuses(by_job)
        decided: dict[JobRef, Decision] = {}
        for job, job_edges in by_job.items():
            deps = [(e, statuses.get(e.on)) for e in job_edges]
            decision = decide(statuses.get(job), deps)
            if decision.outcome is not Outcome.WAIT:
                decided[job] = decision
        await self._write(decided, report)
        await self.store.remove(list(decided))

    def _typed(self, edges: Sequence[Edge]) -> dict[JobRef, list[Edge]]:
        """The page's edges by job, ids as their entity's key type; jobs of (or waiting for) an
        entity type this node does not serve are left to a node that does."""
        by_job: dict[JobRef, list[Edge]] = {}
        for edge in edges:
            if not self._served(edge.job.entity) or not self._served(edge.on.entity):
                continue
            job, on = self._key_typed(edge.job), self._key_typed(edge.on)
            by_job.setdefault(job, []).append(Edge(job, on, edge.must))
        return by_job

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
