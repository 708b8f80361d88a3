"""The jobs due and waiting for a handler: which one runs next, and which may not start yet.

Pure: no clock, no asyncio; the dispatcher passes ``now_ms`` in.

Order. Whenever more jobs are due than handlers can run, the highest *effective* priority goes
first, ``priority + boost_per_minute * minutes overdue``, ties by due time. All the waiting jobs
are due, so at any one `now` that order is the order of repos/options.py's rank(): `now` drops
out, and a job's rank is fixed when it arrives. A heap on that rank needs no re-sorting as time
passes. The claims of a backlog order the rows still in the store by the same rank
(infinite_scheduler/fetcher.py).

The normal path pays nothing for it: while every waiting job has the defaults (priority 500, no
category, ``options == 0``), they wait in a FIFO deque in the order they came due, which is the
heap's order for them. The first job that does not switches the queue to ranked heaps (the
FIFO's jobs move in) until it empties.

Categories. Ranked jobs wait in one heap per category code (0: none). A category that may not
start a job now (paused, at its concurrency limit, or before the next start its rate allows:
:class:`CategoryGate`) is skipped, and the best job of the others runs: its jobs wait, neither
dropped nor failed, and nothing behind them waits for them.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any

from repos.base import ClaimedJob, category_code, code_of, priority_of, rank

#: (rank, due_ms, arrival, lane, job): the arrival number keeps equal ranks in arrival order and
#: never lets the comparison reach the lane.
_Entry = tuple[float, int, int, Any, ClaimedJob]


@dataclass(slots=True)
class _Limit:
    """One configured category's limits and what it runs now."""

    concurrency: int | None
    interval_ms: float  #: 1000 / rate: the least time between two starts (0: no rate limit)
    paused: bool = False
    running: int = 0
    next_start_ms: float = 0.0


class CategoryGate:
    """Whether a job of a category may start now: the node's concurrency and rate limits per
    category, and pauses. Categories it was not given have no limits."""

    def __init__(self, limits: Mapping[str, tuple[int | None, float | None]] | None = None) -> None:
        """`limits`: (concurrency, rate in jobs/s) by category name, either None for none."""
        self._limits = {
            category_code(name): _Limit(concurrency, 1000 / rate if rate else 0.0)
            for name, (concurrency, rate) in (limits or {}).items()
        }

    def __bool__(self) -> bool:
        return bool(self._limits)

    def may_start(self, code: int, now_ms: int) -> bool:
        limit = self._limits.get(code)
        if limit is None:
            return True
        return (
            not limit.paused
            and (limit.concurrency is None or limit.running < limit.concurrency)
            and now_ms >= limit.next_start_ms
        )

    def started(self, code: int, now_ms: int) -> None:
        limit = self._limits.get(code)
        if limit is not None:
            limit.running += 1
            if limit.interval_ms:
                limit.next_start_ms = max(now_ms, limit.next_start_ms) + limit.interval_ms

    def finished(self, code: int) -> None:
        limit = self._limits.get(code)
        if limit is not None:
            limit.running -= 1

    def set_paused(self, code: int, paused: bool) -> None:
        self._limits[code].paused = paused

    def paused(self, code: int) -> bool:
        limit = self._limits.get(code)
        return limit is not None and limit.paused

    def running(self, code: int) -> int:
        limit = self._limits.get(code)
        return 0 if limit is None else limit.running

    def opens_at_ms(self, code: int, now_ms: int) -> float | None:
        """When a category held back only by its rate may start its next job (None: it may
        start now, or it waits for something else: a pause, a handler finishing)."""
        limit = self._limits.get(code)
        if limit is None or limit.paused or now_ms >= limit.next_start_ms:
            return None
        if limit.concurrency is not None and limit.running >= limit.concurrency:
            return None
        return limit.next_start_ms


class Waiting:
    """The dispatcher's waiting jobs (see the module docstring)."""

    def __init__(self, *, boost_per_minute: float = 0.0, gate: CategoryGate | None = None) -> None:
        #: The jobs with the defaults, in the order they came, while no other job waits.
        self.fifo: deque[tuple[Any, ClaimedJob]] = deque()
        self.gate = CategoryGate() if gate is None else gate
        self._heaps: dict[int, list[_Entry]] = {}
        self._ranked = 0
        self._arrivals = count()
        self._boost_per_ms = boost_per_minute / 60_000

    def __len__(self) -> int:
        return len(self.fifo) + self._ranked

    def extend(self, lane: Any, jobs: Iterable[ClaimedJob]) -> None:
        if not self._ranked:
            jobs = list(jobs)
            if not any(job.options for job in jobs):
                self.fifo.extend([(lane, job) for job in jobs])
                return
            while self.fifo:  # ranked from now on: the FIFO's jobs join the heap
                self._push(*self.fifo.popleft())
        for job in jobs:
            self._push(lane, job)

    def pop(self, now_ms: int) -> tuple[Any, ClaimedJob] | None:
        """The next job to start, counted as started by its category; None if none may."""
        if self.fifo:
            return self.fifo.popleft()
        best: list[_Entry] | None = None
        for code, heap in self._heaps.items():
            if heap and (best is None or heap[0] < best[0]) and self.gate.may_start(code, now_ms):
                best = heap
        if best is None:
            return None
        _, _, _, lane, job = heapq.heappop(best)
        self._ranked -= 1
        self.gate.started(code_of(job.options), now_ms)
        return lane, job

    def finished(self, job: ClaimedJob) -> None:
        """A job pop() gave has finished (its category's concurrency counts it no more)."""
        if job.options:
            self.gate.finished(code_of(job.options))

    def held_back(self, now_ms: int) -> int:
        """Jobs waiting whose category may not start one now."""
        return sum(
            len(heap)
            for code, heap in self._heaps.items()
            if heap and not self.gate.may_start(code, now_ms)
        )

    def waiting(self, code: int) -> int:
        """Jobs of this category waiting (code 0: of none)."""
        heap = self._heaps.get(code)
        return (0 if heap is None else len(heap)) + (len(self.fifo) if code == 0 else 0)

    def opens_at_ms(self, now_ms: int) -> float | None:
        """The earliest time a category now held back by its rate alone, with jobs waiting,
        may start one (None: no such category)."""
        times = [
            at
            for code, heap in self._heaps.items()
            if heap and (at := self.gate.opens_at_ms(code, now_ms)) is not None
        ]
        return min(times, default=None)

    def take_all(self) -> list[tuple[Any, ClaimedJob]]:
        """Remove and return every waiting job, best first."""
        taken = list(self.fifo)
        self.fifo.clear()
        entries = sorted(entry for heap in self._heaps.values() for entry in heap)
        taken += [(lane, job) for _, _, _, lane, job in entries]
        self._heaps.clear()
        self._ranked = 0
        return taken

    def _push(self, lane: Any, job: ClaimedJob) -> None:
        entry = (
            rank(job.due_ms, priority_of(job.options), self._boost_per_ms),
            job.due_ms,
            next(self._arrivals),
            lane,
            job,
        )
        heapq.heappush(self._heaps.setdefault(code_of(job.options), []), entry)
        self._ranked += 1
