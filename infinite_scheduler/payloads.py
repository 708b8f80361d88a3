"""Reads the payloads of held jobs shortly before they are due.

A fetch claims the whole lookahead window, but only the jobs due within `payload_ahead_s` come
with their payload. The rest wait in the wheel without it (the payload is the largest part of a
held job: ~400 bytes per job with it, ~240 without, in W5) and are read here, one statement per
claim batch, once the batch's earliest job is within `payload_ahead_s`. A job that comes due
before its read went through (the store was down) is held back until it is read, then fires: it
is late, never lost. A job whose row is no longer claimed by this node by then (cancelled,
handed back, taken over by another node, or dropped with its shard) is not fired; one taken
over is reported as a fenced read (infinite_scheduler/fencing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from infinite_scheduler.acker import Acker
from infinite_scheduler.clock import Clock
from infinite_scheduler.dispatch import Dispatcher
from infinite_scheduler.fencing import report_fenced
from infinite_scheduler.fire_blockouts import BlockoutGate
from infinite_scheduler.jobs import Lane
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import ClaimedJob, Failure, RowRef, StoreError

logger = logging.getLogger(__name__)

#: Look at least this often when nothing is tracked (a claim wakes the loop anyway).
IDLE_S = 1.0


class PayloadReader:
    """Tracks the claim batches whose payloads are still to be read, and reads them in time."""

    def __init__(
        self,
        *,
        clock: Clock,
        dispatcher: Dispatcher,
        acker: Acker,
        ahead_ms: int,
        node_id: str,
        epoch: int,
        stop: asyncio.Event,
        backoff: Backoff | None = None,
        blockouts: BlockoutGate | None = None,
    ) -> None:
        self.clock = clock
        self.dispatcher = dispatcher
        self.acker = acker
        self.ahead_ms = ahead_ms
        self.node_id = node_id
        self.epoch = epoch
        #: Claim batches with jobs held without their payload: the earliest due time and the
        #: jobs' wheel keys (the wheel holds the jobs themselves, as plain tuples).
        self._batches: list[tuple[Lane, int, list[object]]] = []
        #: Jobs due already, out of the wheel, waiting for their read before they fire.
        self._held_back: list[tuple[Lane, list[ClaimedJob]]] = []
        self._reads: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        #: The engine's: set, it ends run() and the retries of held-back reads. Given here, not
        #: to run(), because the start-up fetch hands jobs over before the loops start.
        self._stop = stop
        #: run()'s; each held-back read has another() of its own.
        self._backoff = backoff or Backoff()
        #: The blockouts of jobs about to fire: the one check every due job passes.
        self.blockouts = blockouts or BlockoutGate(acker, node_id=node_id)
        self.reads = 0

    def __repr__(self) -> str:
        return f"<PayloadReader batches={len(self._batches)} held_back={self.held_back}>"

    @property
    def held_back(self) -> int:
        return sum(len(jobs) for _, jobs in self._held_back)

    def track(self, lane: Lane, earliest_ms: int, keys: list[object]) -> None:
        """Remember the wheel keys of a claim batch's jobs held without their payload."""
        self._batches.append((lane, earliest_ms, keys))
        self._wake.set()

    def hand_over(self, lane: Lane, jobs: list[ClaimedJob]) -> None:
        """Jobs due now to the dispatcher: at once if every payload is here, else once read;
        those a blockout holds (infinite_scheduler/fire_blockouts.py) go to the acker instead."""
        lane.in_hand.update([(job.key, job.at_ms) for job in jobs])
        if self.blockouts:
            jobs = self.blockouts.screen(lane, jobs, self.clock.now_ms())
            if not jobs:
                return
        if all(job.payload is not None for job in jobs):
            self.dispatcher.submit(lane, jobs)
            return
        entry = (lane, jobs)
        self._held_back.append(entry)
        task = asyncio.create_task(self._read_then_submit(entry), name="infinite-scheduler:read")
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    def take_held_back(self) -> list[tuple[Lane, list[ClaimedJob]]]:
        """Remove and return the jobs held back for their read (shutdown hands them back)."""
        for task in self._reads:
            task.cancel()
        held, self._held_back = self._held_back, []
        return held

    async def run(self) -> None:
        """Read each tracked batch once its earliest job is within ahead_ms of now."""
        stop, backoff = self._stop, self._backoff
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.read_due()
            except StoreError as exc:
                self._warn(exc, backoff.delay_s)
                await backoff.wait(stop)
                continue
            backoff.succeeded()
            await wait_any(stop, self._wake, timeout_s=self._sleep_s())

    async def read_due(self) -> None:
        """Read the tracked batches whose earliest job is within ahead_ms of now (one turn of
        run(), which an engine in manual mode takes itself)."""
        horizon_ms = self.clock.now_ms() + self.ahead_ms
        for batch in [b for b in self._batches if b[1] < horizon_ms]:
            await self._fill(batch[0], batch[2])
            self._batches = [b for b in self._batches if b is not batch]

    async def settle(self) -> None:
        """Wait until every job held back for its read has been read and handed over, or
        given up (an engine in manual mode; a read that keeps failing keeps this waiting)."""
        while self._reads:
            await asyncio.wait(set(self._reads))

    async def read(self, lane: Lane, jobs: Sequence[ClaimedJob]) -> None:
        """Fill in the payloads these jobs lack; a job whose row is no longer claimed here
        (cancelled, handed back, taken over, dropped with its shard) keeps None."""
        missing = [job for job in jobs if job.payload is None]
        if not missing:
            return
        found = await lane.repo.read_payloads(self.epoch, [job.ref for job in missing])
        self.reads += 1
        for job in missing:
            job.payload = found.get(job.ref)

    async def _fill(self, lane: Lane, keys: list[object]) -> None:
        """Read the payloads of jobs held in the wheel, by wheel key. A job gone from the wheel
        meanwhile (fired, cancelled) is left out; one whose row is no longer claimed here
        keeps None and is held back when it comes due."""
        wheel = lane.wheel
        unread = [(key, held) for key in keys if (held := wheel.get(key)) and held[4] is None]
        if not unread:
            return
        found = await lane.repo.read_payloads(self.epoch, [RowRef(*h[:2]) for _, h in unread])
        self.reads += 1
        for key, held in unread:
            payload = found.get(RowRef(*held[:2]))
            if payload is not None and wheel.get(key) is held:  # not fired or replaced meanwhile
                wheel.replace(key, (held[0], held[1], held[2], held[3], payload))

    def _sleep_s(self) -> float:
        if not self._batches:
            return IDLE_S
        earliest = min(earliest_ms for _, earliest_ms, _ in self._batches)
        return max(0.0, (earliest - self.ahead_ms - self.clock.now_ms()) / 1000)

    async def _read_then_submit(self, entry: tuple[Lane, list[ClaimedJob]]) -> None:
        lane, jobs = entry
        backoff = self._backoff.another()
        while True:
            if self._stop.is_set():
                return  # stopping: the engine hands these jobs back to the store
            try:
                await self.read(lane, jobs)
                fenced = await self._fenced(lane, jobs)
                backoff.succeeded()
                break
            except Exception as exc:  # whatever failed, these jobs must not be dropped
                self._warn(exc, backoff.delay_s)
                await backoff.wait(self._stop)
        self._held_back = [e for e in self._held_back if e is not entry]
        for job in jobs:
            if job.ref in fenced:  # another node has it: nothing of it is this node's to write
                lane.in_hand.discard(job.ref)
            elif job.payload is None:
                self._give_up(lane, job)
        self.dispatcher.submit(lane, [job for job in jobs if job.payload is not None])

    async def _fenced(self, lane: Lane, jobs: Sequence[ClaimedJob]) -> set[RowRef]:
        """The jobs left without their payload whose rows another node holds now, reported."""
        unread = [job.ref for job in jobs if job.payload is None]
        if not unread:
            return set()
        rows = await report_fenced(
            lane, unread, node_id=self.node_id, epoch=self.epoch, write="payload read"
        )
        return {RowRef(row.key, row.at_ms) for row in rows}

    def _give_up(self, lane: Lane, job: ClaimedJob) -> None:
        error = (
            "no longer claimed by this node when its payload was read"
            " (cancelled, handed back, or its shard dropped)"
        )
        logger.warning(
            "%s %s not fired: %s",
            lane.name,
            job.key,
            error,
            extra={"action": "fail", "entity": lane.name, "job_id": job.key, "node": self.node_id},
        )
        lane.metrics.failed.inc()
        self.acker.failed(lane, Failure(ref=job.ref, error=error, retry_at_ms=None))

    def _warn(self, exc: Exception, backoff_s: float) -> None:
        logger.warning(
            "payload read failed, retrying in %.1fs: %s",
            backoff_s,
            exc,
            extra={"action": "read", "node": self.node_id},
        )
