"""Runs handlers: bounded concurrency, a timeout per job, retry decisions, outcomes to the acker.

The wheel never runs user code; only this module does. A handler that raises, hangs or
returns garbage affects its own job and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable

from infinite_scheduler.acker import Acker
from infinite_scheduler.clock import Clock
from infinite_scheduler.decisions import GiveUp, RetryPolicy
from infinite_scheduler.jobs import Lane
from infinite_scheduler.metrics import Metrics
from repos.base import ClaimedJob, Failure

logger = logging.getLogger(__name__)


class Dispatcher:
    """Runs at most `concurrency` handlers at once; the rest wait in a FIFO, in due order.

    Handlers run on a pool of worker tasks that each take job after job from the FIFO and exit
    when it is empty: a burst of 20,000 due jobs costs `concurrency` tasks, not 20,000.
    """

    def __init__(
        self,
        *,
        acker: Acker,
        clock: Clock,
        metrics: Metrics,
        retry: RetryPolicy,
        concurrency: int,
        timeout_s: float,
    ) -> None:
        self.acker = acker
        self.clock = clock
        self.metrics = metrics
        self.retry = retry
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._ready: deque[tuple[Lane, ClaimedJob]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self.running = 0
        self.fired = 0
        self.succeeded = 0
        self.retried = 0
        self.failed = 0
        metrics.in_flight.set_function(lambda: self.running)

    def __repr__(self) -> str:
        return f"<Dispatcher running={self.running} waiting={len(self._ready)} fired={self.fired}>"

    @property
    def backlog(self) -> int:
        """Jobs handed over and not finished: waiting plus running."""
        return len(self._ready) + self.running

    def submit(self, lane: Lane, jobs: Iterable[ClaimedJob]) -> None:
        self._ready.extend((lane, job) for job in jobs)
        for _ in range(min(self.concurrency - len(self._workers), len(self._ready))):
            worker = asyncio.create_task(self._work(), name="infinite-scheduler:handler")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    def take_waiting(self) -> list[tuple[Lane, ClaimedJob]]:
        """Remove and return the jobs not started yet (shutdown hands them back to the store)."""
        waiting = list(self._ready)
        self._ready.clear()
        return waiting

    async def drain(self, timeout_s: float) -> int:
        """Wait for running handlers up to timeout_s, then cancel the rest; return how many."""
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=timeout_s)
        late = list(self._workers)
        for worker in late:
            worker.cancel()
        if late:
            await asyncio.wait(late)
        return len(late)

    async def _work(self) -> None:
        ready = self._ready
        while ready:
            lane, job = ready.popleft()
            self.running += 1
            try:
                await self._run(lane, job)
            finally:
                self.running -= 1

    async def _run(self, lane: Lane, job: ClaimedJob) -> None:
        fired_ms = self.clock.now_ms()
        self.fired += 1
        lane.metrics.fired.inc()
        self.metrics.lateness.observe(max(0, fired_ms - job.due_ms) / 1000)
        try:
            ctx = lane.context(job, fired_ms)
        except Exception as exc:  # a payload that no longer decodes can never succeed
            self._give_up(lane, job, f"payload does not decode: {exc!r}")
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await lane.call(ctx)
        except TimeoutError:
            self._failed(lane, job, f"handler timed out after {self.timeout_s}s")
        except Exception as exc:
            self._failed(lane, job, f"{type(exc).__name__}: {exc}")
        else:
            self.succeeded += 1
            lane.metrics.succeeded.inc()
            self.acker.done(lane, job.ref)

    def _failed(self, lane: Lane, job: ClaimedJob, error: str) -> None:
        decision = self.retry.next_attempt(job.attempts, self.clock.now_ms())
        if isinstance(decision, GiveUp):
            self._give_up(lane, job, error)
            return
        logger.info(
            "%s %s attempt %d failed, retry at %d: %s",
            lane.name,
            job.key,
            job.attempts,
            decision.at_ms,
            error,
            extra=_extra("retry", lane, job),
        )
        self.retried += 1
        lane.metrics.retried.inc()
        self.acker.failed(lane, Failure(ref=job.ref, error=error, retry_at_ms=decision.at_ms))

    def _give_up(self, lane: Lane, job: ClaimedJob, error: str) -> None:
        logger.warning(
            "%s %s failed after %d attempts: %s",
            lane.name,
            job.key,
            job.attempts,
            error,
            extra=_extra("fail", lane, job),
        )
        self.failed += 1
        lane.metrics.failed.inc()
        self.acker.failed(lane, Failure(ref=job.ref, error=error, retry_at_ms=None))


def _extra(action: str, lane: Lane, job: ClaimedJob) -> dict[str, object]:
    return {"action": action, "entity": lane.name, "job_id": job.key, "shard_at_ms": job.at_ms}
