"""Group-committed acknowledgements: many finished jobs, one statement per shard.

With history on, each outcome carries its attempt's history row (repos/history.py), and the
repository stores them in the ack's own transaction: one more multi-row INSERT per flush,
never a round trip per job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from infinite_scheduler.clock import Clock
from infinite_scheduler.fencing import report_fenced
from infinite_scheduler.jobs import Lane
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import Attempt, ClaimedJob, Failure, RowRef, StoreError, category_name, code_of
from repos.history import Outcome

logger = logging.getLogger(__name__)

#: Wait this long after the first outcome so that a flush carries many.
ACK_INTERVAL_S = 0.002


class Acker:
    """Buffers handler outcomes and writes them in batches; never drops one.

    If the store is down the outcomes stay buffered and the flush is retried with backoff: the
    rows stay CLAIMED meanwhile, so a crash then re-fires only those jobs (invariant 2). Writes
    are made under this node's epoch: a row taken over meanwhile is left alone, and reported
    (infinite_scheduler/fencing.py).
    """

    def __init__(
        self,
        *,
        node_id: str,
        epoch: int,
        clock: Clock,
        batch_size: int,
        on_retry: Callable[[int], None] = lambda at_ms: None,
        backoff: Backoff | None = None,
        history: bool = False,
    ) -> None:
        self.node_id = node_id
        #: Write a history row per attempt ([history] enabled).
        self.history = history
        self.epoch = epoch
        self.clock = clock
        self.batch_size = batch_size
        self.on_retry = on_retry
        self.backoff = backoff or Backoff(first_s=0.05)
        self._done: dict[str, tuple[Lane, list[RowRef], list[Attempt]]] = {}
        self._failed: dict[str, tuple[Lane, list[Failure]]] = {}
        self._pending = 0
        self._wake = asyncio.Event()
        self.flushed = 0

    def __repr__(self) -> str:
        return f"<Acker pending={self._pending} flushed={self.flushed}>"

    @property
    def pending(self) -> int:
        return self._pending

    def done(self, lane: Lane, job: ClaimedJob, fired_ms: int) -> None:
        """The job's handler returned (it started at fired_ms)."""
        entry = self._done.get(lane.name)
        if entry is None:
            entry = self._done[lane.name] = (lane, [], [])
        entry[1].append(job.ref)
        if self.history:
            entry[2].append(self._attempt(job, fired_ms, Outcome.OK, None))
        self._added()

    def attempt(
        self, job: ClaimedJob, fired_ms: int, outcome: Outcome, error: str | None
    ) -> Attempt | None:
        """The history row of an attempt ending now (fired_ms 0: it never fired), for a
        Failure's `history`; None with history off."""
        return self._attempt(job, fired_ms, outcome, error) if self.history else None

    def _attempt(
        self, job: ClaimedJob, fired_ms: int, outcome: Outcome, error: str | None
    ) -> Attempt:
        code = code_of(job.options) if job.options else 0
        return Attempt(
            job.key,
            job.at_ms,
            job.attempts,
            self.node_id,
            category_name(code) if code else "",
            job.due_ms,
            fired_ms,
            self.clock.now_ms(),
            outcome,
            error,
        )

    def failed(self, lane: Lane, failure: Failure) -> None:
        self._failed.setdefault(lane.name, (lane, []))[1].append(failure)
        self._added()

    def _added(self) -> None:
        self._pending += 1
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until `stop` is set; the engine calls flush() once more after that."""
        while not stop.is_set():
            await wait_any(stop, self._wake)
            if not self._pending:
                continue
            if self._pending < self.batch_size:
                await asyncio.sleep(ACK_INTERVAL_S)
            try:
                await self.flush()
            except StoreError as exc:
                logger.warning(
                    "ack flush failed, %d outcomes kept, retrying in %.1fs: %s",
                    self._pending,
                    self.backoff.delay_s,
                    exc,
                    extra={"action": "ack", "node": self.node_id},
                )
                await self.backoff.wait(stop)
                continue
            self.backoff.succeeded()

    async def flush(self) -> None:
        """Write every buffered outcome; on StoreError the unwritten ones stay buffered."""
        self._wake.clear()
        done, self._done = self._done, {}
        failed, self._failed = self._failed, {}
        try:
            await self._write(done, failed)
        except BaseException:
            self._requeue(done, failed)
            raise

    async def _write(
        self,
        done: dict[str, tuple[Lane, list[RowRef], list[Attempt]]],
        failed: dict[str, tuple[Lane, list[Failure]]],
    ) -> None:
        now_ms = self.clock.now_ms()
        while done:
            name, (lane, refs, attempts) = next(iter(done.items()))
            changed = await lane.repo.mark_done(
                self.epoch, refs, fired_at_ms=now_ms, history=attempts
            )
            if changed < len(refs):
                await self._fenced(lane, refs, "ack")
            lane.in_hand.difference_update(refs)  # a RowRef equals its (key, at_ms)
            del done[name]
            self._written(len(refs))
        while failed:
            name, (lane, failures) = next(iter(failed.items()))
            # A retried row is PENDING again the moment this commits, and a fetch of this
            # node may claim it before this coroutine resumes: it must not look held then.
            lane.in_hand.difference_update([f.ref for f in failures if f.retry_at_ms is not None])
            changed = await lane.repo.mark_failed(self.epoch, failures, now_ms=now_ms)
            if changed < len(failures):
                await self._fenced(lane, [f.ref for f in failures], "failure")
            lane.in_hand.difference_update([f.ref for f in failures])
            del failed[name]
            self._written(len(failures))
            for f in failures:
                if f.retry_at_ms is not None:
                    self.on_retry(f.retry_at_ms)

    async def _fenced(self, lane: Lane, refs: list[RowRef], write: str) -> None:
        """A write changed fewer rows than it named: report those taken over. A retry of the
        flush after a failure here writes nothing twice (the rows are no longer CLAIMED)."""
        await report_fenced(lane, refs, node_id=self.node_id, epoch=self.epoch, write=write)

    def _written(self, n: int) -> None:
        self._pending -= n
        self.flushed += n

    def _requeue(
        self,
        done: dict[str, tuple[Lane, list[RowRef], list[Attempt]]],
        failed: dict[str, tuple[Lane, list[Failure]]],
    ) -> None:
        for name, (lane, refs, attempts) in done.items():
            entry = self._done.setdefault(name, (lane, [], []))
            entry[1].extend(refs)
            entry[2].extend(attempts)
        for name, (lane, failures) in failed.items():
            self._failed.setdefault(name, (lane, []))[1].extend(failures)
        if self._pending:
            self._wake.set()
