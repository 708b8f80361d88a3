"""Runs handlers: bounded concurrency, a timeout per job, retry decisions, outcomes to the acker.

The wheel never runs user code; only this module does. A handler that raises, hangs or
returns garbage affects its own job and nothing else.

Sync handlers run on the dispatcher's own threads, as many as it may run handlers at once
unless configured lower. A thread cannot be stopped: a sync handler past its timeout is
reported (log, ``handler_overruns_total``, ``handlers_overrunning``) and stays in flight until
it returns, and its outcome is what it really did. Cutting it loose instead would start the next
attempt beside the one still running.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

from infinite_scheduler.acker import Acker
from infinite_scheduler.clock import Clock
from infinite_scheduler.decisions import GiveUp, RetryPolicy
from infinite_scheduler.jobs import JobContext, Lane
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.waiting import Waiting
from repos.base import ClaimedJob, Failure
from repos.history import Outcome

logger = logging.getLogger(__name__)


#: A worker whose handlers never wait lets the loop run (fetcher, acker, timers) this often.
YIELD_EVERY = 64
#: Loop seconds after which a worker asks the node's fence again before starting a handler:
#: far below the fence's margin (a heartbeat interval), and a float compare per job otherwise.
FENCE_LOOK_S = 0.05
#: The timeout watchdog looks this often (at most): handlers overrun timeout_s by up to it.
WATCH_MAX_S = 1.0


@dataclass(slots=True)
class _ThreadCall:
    """A sync handler call: queued for a thread until `started` (loop time) is set."""

    lane: Lane
    job: ClaimedJob
    started: float = 0.0
    overran: bool = False


class Dispatcher:
    """Runs at most `concurrency` handlers at once; the rest wait, in due order while all have
    the default priority and no category, else by effective priority, each category within its
    limits (infinite_scheduler/waiting.py).

    Workers are tasks that take job after job from the FIFO and exit when it is empty. There
    are only as many as there are handlers waiting on something: a new one starts when every
    worker sits in a handler that waits, so a burst of handlers that finish at once costs one
    task, not one per job (task creation was a tenth of the engine's CPU in a W2 burst). The
    timeout is one watchdog over all workers rather than a timer per job, for the same reason.
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
        threads: int = 0,
        waiting: Waiting | None = None,
    ) -> None:
        self.acker = acker
        self.clock = clock
        self.metrics = metrics
        self.retry = retry
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._timed_out_error = f"handler timed out after {timeout_s}s"  # not built per job
        self._waiting = Waiting() if waiting is None else waiting
        #: Wakes the workers when a category held back by its rate may start again.
        self._gate_timer: asyncio.TimerHandle | None = None
        #: Each worker and the loop time its current handler must finish by (0: between jobs).
        self._workers: dict[asyncio.Task[None], float] = {}
        self._timed_out: set[asyncio.Task[None]] = set()
        self._grow_pending = False
        self._closing = False
        #: Self-fenced (the node could not renew its heartbeat): no handler starts.
        self._paused = False
        #: The node's fence, asked by workers when the loop's clock jumped (see guard()).
        self._fence: Callable[[], bool] | None = None
        self._fence_asked = 0.0
        self._watch: asyncio.TimerHandle | None = None
        #: Threads are started on demand, so a pool as large as `concurrency` costs nothing idle.
        self._threads = ThreadPoolExecutor(
            max_workers=threads or concurrency, thread_name_prefix="infinite-scheduler-handler"
        )
        #: Workers waiting for a sync handler's thread, with that call.
        self._in_thread: dict[asyncio.Task[None], _ThreadCall] = {}
        self.overrunning = 0
        self.running = 0
        self.fired = 0
        self.succeeded = 0
        self.retried = 0
        self.failed = 0
        metrics.in_flight.set_function(lambda: self.running)
        metrics.overrunning.set_function(lambda: self.overrunning)

    def __repr__(self) -> str:
        paused = " paused" if self._paused else ""
        return f"<Dispatcher running={self.running} waiting={len(self._waiting)} fired={self.fired}{paused}>"

    @property
    def backlog(self) -> int:
        """Jobs handed over and not finished: waiting plus running."""
        return len(self._waiting) + self.running

    @property
    def held_back(self) -> int:
        """Jobs waiting whose category may not start one now (paused, or at a limit)."""
        return self._waiting.held_back(self.clock.now_ms()) if self._waiting.gate else 0

    @property
    def workers(self) -> int:
        return len(self._workers)

    def submit(self, lane: Lane, jobs: Iterable[ClaimedJob]) -> None:
        self._waiting.extend(lane, jobs)
        self._grow_if_all_wait()

    def wake(self) -> None:
        """Look again at the jobs held back by their category (an engine in manual mode, whose
        clock moved: a rate limit may allow the next start now)."""
        self._grow_if_all_wait()

    def set_category_paused(self, code: int, paused: bool) -> None:
        """Start no job of this category until resumed (those running go on); KeyError for a
        category not configured."""
        self._waiting.gate.set_paused(code, paused)
        if not paused:
            self._grow_if_all_wait()

    async def settle(self) -> None:
        """Wait until every job handed over has finished (an engine in manual mode), or, while
        paused, until the handlers running have. A worker exits only once no waiting job may
        start (or the dispatcher paused or draining), so no job waits when none is left unless
        paused or held back by its category."""
        while self._workers:
            await asyncio.wait(set(self._workers))

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Start no handler until resume(): jobs handed over wait in the FIFO, in due order
        (those running go on). The node's self-fencing calls this when it may no longer fire."""
        self._paused = True

    def guard(self, fence: Callable[[], bool]) -> None:
        """`fence()` says whether handlers may start now (and pauses the dispatcher if not).
        A worker asks it before its next job once the loop's clock moved on by FENCE_LOOK_S
        since anyone last did: after the process was stopped (SIGSTOP, a frozen VM) or its loop
        blocked, a worker going on from its last handler runs before the fence's timer, and
        would fire a job another node may have taken over meanwhile."""
        self._fence = fence

    def resume(self) -> None:
        """Start handlers again, for the jobs that waited first."""
        self._paused = False
        self._grow_if_all_wait()

    def take_waiting(self) -> list[tuple[Lane, ClaimedJob]]:
        """Remove and return the jobs not started yet (shutdown hands them back to the store)."""
        return self._waiting.take_all()

    async def drain(self, timeout_s: float) -> int:
        """Wait for running handlers up to timeout_s, then cancel the rest; return how many.

        No worker starts from here on, and none takes another job: one started now would take
        a job that neither take_waiting() hands back nor this drain waits for, and a job taken
        now may still run when the drain times out, cut off after its side effect and handed
        back, to fire again elsewhere. The jobs waiting stay for take_waiting()."""
        self._closing = True
        if self._gate_timer is not None:
            self._gate_timer.cancel()
            self._gate_timer = None
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=timeout_s)
        late = list(self._workers)
        for worker in late:
            worker.cancel()
        if late:
            await asyncio.wait(late)
        # Threads still in a handler run on; the interpreter waits for them at exit.
        self._threads.shutdown(wait=False, cancel_futures=True)
        return len(late)

    def _spawn(self) -> None:
        worker = asyncio.create_task(self._work(), name="infinite-scheduler:handler")
        self._workers[worker] = 0.0
        worker.add_done_callback(self._retire)
        if self._watch is None:
            period = min(self.timeout_s / 4, WATCH_MAX_S)
            self._watch = asyncio.get_running_loop().call_later(period, self._check, period)

    def _retire(self, worker: asyncio.Task[None]) -> None:
        """A worker leaves the pool the moment it finds no job to start, not a loop turn later
        (its done-callback): a job submitted in between must find no worker and start one."""
        self._workers.pop(worker, None)
        self._timed_out.discard(worker)

    def _grow(self) -> None:
        """Runs once the loop is back after a handler started (see _work)."""
        self._grow_pending = False
        self._grow_if_all_wait()

    def _grow_if_all_wait(self) -> None:
        """One more worker if jobs wait while every worker waits inside a handler
        (a worker between jobs takes the next one itself). The new worker's first handler
        asks again, so workers grow one per loop turn while handlers keep waiting."""
        if self._closing or self._paused:
            return
        if self._waiting and self.running >= len(self._workers) < self.concurrency:
            if self._waiting.fifo or len(self._waiting) > self.held_back:
                self._spawn()
            else:
                self._arm_gate_timer()

    def _arm_gate_timer(self) -> None:
        """Every worker found nothing it may start: if a category waits for its rate alone,
        look again when it allows the next start."""
        if self._gate_timer is not None or not self._waiting.gate:
            return
        now_ms = self.clock.now_ms()
        at_ms = self._waiting.opens_at_ms(now_ms)
        if at_ms is not None:
            delay_s = max(0.001, (at_ms - now_ms) / 1000)
            loop = asyncio.get_running_loop()
            self._gate_timer = loop.call_later(delay_s, self._gate_opened)

    def _gate_opened(self) -> None:
        self._gate_timer = None
        self._grow_if_all_wait()

    def _check(self, period: float) -> None:
        """The watchdog: cancel the handlers past their deadline, then look again later.
        A sync handler cannot be cancelled: it is reported, once."""
        now = asyncio.get_running_loop().time()
        for worker, deadline in self._workers.items():
            if 0 < deadline < now and worker not in self._timed_out:
                call = self._in_thread.get(worker)
                if call is None:
                    self._timed_out.add(worker)
                    worker.cancel()
                elif not call.overran:
                    self._overran(call)
        self._watch = None
        if self._workers:
            self._watch = asyncio.get_running_loop().call_later(period, self._check, period)

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        waiting, workers = self._waiting, self._workers
        fifo = waiting.fifo
        finished = 0
        try:
            while not (self._paused or self._closing):
                if self._fence is not None and loop.time() - self._fence_asked > FENCE_LOOK_S:
                    self._fence_asked = loop.time()
                    if not self._fence():
                        break
                if fifo:  # the usual case: every job waiting has the defaults
                    lane, job = fifo.popleft()
                else:
                    picked = waiting.pop(self.clock.now_ms())
                    if picked is None:
                        self._arm_gate_timer()
                        break
                    lane, job = picked
                self.running += 1
                if not self._grow_pending:
                    self._grow_pending = True
                    loop.call_soon(self._grow)
                workers[me] = loop.time() + self.timeout_s
                try:
                    await self._run(lane, job, me)
                finally:
                    workers[me] = 0.0
                    self.running -= 1
                    if job.options:
                        waiting.finished(job)
                finished += 1
                if finished % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            self._retire(me)

    async def _run(self, lane: Lane, job: ClaimedJob, me: asyncio.Task[None]) -> None:
        fired_ms = self.clock.now_ms()
        self.fired += 1
        lane.metrics.fired.inc()
        self.metrics.lateness.observe(max(0, fired_ms - job.due_ms) / 1000)
        try:
            ctx = lane.context(job, fired_ms)
        except Exception as exc:  # a payload that no longer decodes can never succeed
            self._give_up(lane, job, f"payload does not decode: {exc!r}", fired_ms)
            return
        try:
            if lane.is_async:
                await lane.call(ctx)
            else:
                await self._call_in_thread(lane, job, ctx, me)
        except asyncio.CancelledError:
            if not self._expired(me) or me.cancelling():
                raise  # shutdown (maybe besides the watchdog): the worker stops here
            self._failed(lane, job, self._timed_out_error, fired_ms, timed_out=True)
        except Exception as exc:
            # A handler may turn the watchdog's cancel into an error of its own.
            if self._expired(me):
                self._failed(lane, job, self._timed_out_error, fired_ms, timed_out=True)
            else:
                self._failed(lane, job, f"{type(exc).__name__}: {exc}", fired_ms)
        else:
            self._expired(me)  # a handler that swallowed the cancel and finished: it finished
            self.succeeded += 1
            lane.metrics.succeeded.inc()
            self.acker.done(lane, job, fired_ms)

    async def _call_in_thread(
        self, lane: Lane, job: ClaimedJob, ctx: JobContext[Any], me: asyncio.Task[None]
    ) -> None:
        """Run a sync handler on a thread; its deadline starts when a thread takes it:
        waiting for a free thread is not handler time."""
        loop = asyncio.get_running_loop()
        handler = lane.handler
        call = _ThreadCall(lane, job)

        def started() -> None:
            if self._in_thread.get(me) is call:  # not a later job of the same worker
                call.started = loop.time()
                self._workers[me] = call.started + self.timeout_s

        def run() -> object:
            loop.call_soon_threadsafe(started)
            return handler(ctx)

        self._workers[me] = 0.0
        self._in_thread[me] = call
        try:
            result = await loop.run_in_executor(self._threads, run)
        finally:
            del self._in_thread[me]
            if call.overran:
                self._overrun_ended(call, loop.time())
        if inspect.isawaitable(result):
            await result

    def _overran(self, call: _ThreadCall) -> None:
        call.overran = True
        self.overrunning += 1
        call.lane.metrics.overran.inc()
        logger.warning(
            "%s %s attempt %d: sync handler still running after its timeout of %ss; a thread "
            "cannot be stopped, so the job stays in flight and no retry starts until it returns",
            call.lane.name,
            call.job.key,
            call.job.attempts,
            self.timeout_s,
            extra=_extra("overrun", call.lane, call.job),
        )

    def _overrun_ended(self, call: _ThreadCall, now: float) -> None:
        self.overrunning -= 1
        logger.warning(
            "%s %s attempt %d: sync handler returned after %.1fs (timeout %ss); its outcome is recorded",
            call.lane.name,
            call.job.key,
            call.job.attempts,
            now - call.started,
            self.timeout_s,
            extra=_extra("overrun", call.lane, call.job),
        )

    def _expired(self, worker: asyncio.Task[None]) -> bool:
        """Whether the watchdog cancelled this worker's handler; takes the cancel back if so."""
        if worker not in self._timed_out:
            return False
        self._timed_out.discard(worker)
        worker.uncancel()
        return True

    def _failed(
        self, lane: Lane, job: ClaimedJob, error: str, fired_ms: int, *, timed_out: bool = False
    ) -> None:
        decision = self.retry.next_attempt(job.attempts, self.clock.now_ms())
        if isinstance(decision, GiveUp):
            outcome = Outcome.TIMEOUT if timed_out else Outcome.FAILED
            self._give_up(lane, job, error, fired_ms, outcome)
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
        history = self.acker.attempt(job, fired_ms, Outcome.RETRY, error)
        failure = Failure(ref=job.ref, error=error, retry_at_ms=decision.at_ms, history=history)
        self.acker.failed(lane, failure)

    def _give_up(
        self,
        lane: Lane,
        job: ClaimedJob,
        error: str,
        fired_ms: int,
        outcome: Outcome = Outcome.FAILED,
    ) -> None:
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
        history = self.acker.attempt(job, fired_ms, outcome, error)
        self.acker.failed(
            lane, Failure(ref=job.ref, error=error, retry_at_ms=None, history=history)
        )


def job_in_frame(frame: FrameType) -> tuple[str, int | str] | None:
    """The (entity type, job id) a frame of the loop's stack is running, if it is the frame
    of Dispatcher._run (the loop-lag watcher walks the stack of a blocked loop with this)."""
    if frame.f_code is not _RUN_CODE:
        return None
    lane, job = frame.f_locals.get("lane"), frame.f_locals.get("job")
    if isinstance(lane, Lane) and isinstance(job, ClaimedJob):
        return lane.name, job.key
    return None


_RUN_CODE = Dispatcher._run.__code__


def _extra(action: str, lane: Lane, job: ClaimedJob) -> dict[str, object]:
    return {"action": action, "entity": lane.name, "job_id": job.key, "shard_at_ms": job.at_ms}
