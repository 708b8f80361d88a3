"""InfiniteScheduler: registration, start-up and shutdown, the wheel loop, schedule and cancel.

    engine = InfiniteScheduler(config)      # no I/O, no parts yet
    engine.register(SMS, send_sms)          # or @engine.handler(SMS); all before starting
    async with engine:                      # builds the parts, opens stores, recovers, loops
        await engine.run()                  # until stop() or a loop dies

The parts (lanes, fetcher, payload reader, dispatcher, acker, maintenance, the node's
heartbeat) are built together by infinite_scheduler/parts.py when the engine starts, once the
registered types are final. Start-up order matters: the process joins the store's membership
(a new epoch, the fencing token of its claims; refused while a live node has its id), its
heartbeat starts, stores open, the claims of dead nodes and of this node id's earlier runs are
taken over, the first fetch runs, then the loops start; overdue rows found by that first fetch
fire once, now. Shutdown is the reverse: stop fetching, drain handlers (bounded), flush acks,
hand unfired claims back to the store, release the maintenance lease (another node takes it at
its next pass), stop the heartbeat and mark the epoch LEFT, close the stores.

Manual mode (``InfiniteScheduler(config, clock=FakeClock(...), manual=True)``, like arq's
burst mode) starts everything but the loops; ``await engine.run_until_idle()`` then does their
work in turns, in the order a job travels: a fetch round, the payload reads coming due, the
jobs due at the clock's now out of the wheels, the handlers run to their end, the outcomes
written; again, until a turn moves nothing. Tests then ``clock.advance(ms)`` and call it again:
what fires, when, and in which order follows from the clock alone, never from sleeps. Not
driven by a loop, a failing store call raises out of run_until_idle() instead of being retried,
and shard maintenance does not run (``engine.parts.maintenance.maintain(now_ms)`` runs a pass,
under the lease, when a test says so). Handler timeouts and sync handlers' threads still take
real time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

from infinite_scheduler.categories import Categories
from infinite_scheduler.clock import Clock, SystemClock, monotonic_ms
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.dependency_store import plan_waiting, store_waiting
from infinite_scheduler.engine_control import EngineControl
from infinite_scheduler.errors import (
    EngineNotRunning,
    HandlerMissing,
    NodeDeclaredDead,
)
from infinite_scheduler.job import check_categories, group_jobs, split_jobs
from infinite_scheduler.jobs import Handler, Lane
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.node import Identity, join, stopped
from infinite_scheduler.parts import (
    Parts,
    Registration,
    Wiring,
    check_handlers,
    compose,
)
from infinite_scheduler.schedules.book import ScheduleBook
from infinite_scheduler.stores import (
    store_dependencies,
    store_history,
    store_membership,
    store_repository,
    store_schedules,
)
from infinite_scheduler.version import __version__
from repos.base import (
    ClaimedJob,
    EntitySpec,
    HeldJob,
    RowRef,
    ShardingRepository,
    StoreError,
)
from repos.cluster import Membership, NodeState
from repos.dependencies import DependencyStore
from repos.history import HistoryStore
from repos.schedules import ScheduleStore

logger = logging.getLogger(__name__)
H = TypeVar("H", bound=Handler)
#: Longest idle sleep of the wheel loop; new jobs wake it earlier.
IDLE_TICK_S = 1.0


class InfiniteScheduler:
    """The engine: one process firing every stored job of its entity types at its time."""

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        repositories: Mapping[str, ShardingRepository[Any, Any]] | None = None,
        clock: Clock | None = None,
        manual: bool = False,
    ) -> None:
        """No I/O and no signal handler here; `manual`: start no loops (run_until_idle)."""
        self.config = config
        self.node_id = config.resolved_node_id
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self._repositories = dict(repositories or {})
        self._registrations: dict[str, Registration] = {}
        self._stop = asyncio.Event()
        self._wheel_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = AsyncExitStack()  # the started parts, unwound by __aexit__
        #: Built by __aenter__, all at once; kept after the run, for its counters.
        self._parts: Parts | None = None
        self._running = False
        self._manual = manual
        self._failure: BaseException | None = None
        #: The node's self-fencing clock: monotonic, or in manual mode the engine's own clock.
        self._monotonic_ms = self.clock.now_ms if manual else monotonic_ms
        self._epoch: int | None = None
        self._declared_dead = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._heartbeat_stop = asyncio.Event()
        #: The start reached its first claim: from then on only a drained stop may leave.
        self._claiming = False

    def __repr__(self) -> str:
        if self._parts is None:
            return f"<InfiniteScheduler node={self.node_id} not started>"
        parts = self._parts
        return f"<InfiniteScheduler node={self.node_id} epoch={self._epoch} held={parts.held()} {parts.dispatcher!r} {parts.acker!r}>"

    # -- registration -----------------------------------------------------------------------

    def register(
        self,
        spec: EntitySpec[Any, Any],
        handler: Handler | None = None,
        *,
        repository: ShardingRepository[Any, Any] | None = None,
    ) -> None:
        """Serve an entity type; its repository comes from the config's store unless given
        (made now, not opened: the shard commands use it without starting the engine).

        Types registered by the time the engine starts are the ones it serves."""
        known = self._registrations.get(spec.name)
        if known is None:
            repo = (
                repository
                or self._repositories.get(spec.name)
                or store_repository(self.config, spec, self.metrics.store_events)
            )
            known = Registration(spec=spec, repo=repo)
        if handler is not None:
            known = replace(known, handler=handler)
        self._registrations[spec.name] = known

    def handler(self, spec: EntitySpec[Any, Any]) -> Callable[[H], H]:
        """Decorator form of register()."""

        def decorate(fn: H) -> H:
            self.register(spec, fn)
            return fn

        return decorate

    @property
    def repositories(self) -> Mapping[str, ShardingRepository[Any, Any]]:
        """The repository of each entity type registered, by name (not opened here)."""
        return {name: reg.repo for name, reg in self._registrations.items()}

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> InfiniteScheduler:
        registrations = list(self._registrations.values())
        check_handlers(registrations)
        membership = store_membership(self.config, self.metrics.store_events)
        schedule_store = store_schedules(self.config, self.metrics.store_events)
        self._claiming = False
        self._declared_dead.clear()
        async with AsyncExitStack() as stack:
            # First: a port already taken must stop the start before any store is opened
            # or any job claimed (claims would only be handed back by the next start).
            self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
            stack.callback(self.metrics.shutdown)
            await membership.open()
            stack.push_async_callback(membership.close)
            joined_ms = self._monotonic_ms()  # when sent: the fence counts from before the write
            joined = await join(membership, self._identity(), node_timeout_ms=self._node_timeout_ms)
            self._epoch = joined.epoch
            stack.callback(stopped, self.node_id, joined.epoch)
            stack.push_async_callback(self._leave_unless_claiming, membership)
            dependencies = store_dependencies(self.config, self.metrics.store_events)
            await dependencies.open()
            stack.push_async_callback(dependencies.close)
            await schedule_store.open()
            stack.push_async_callback(schedule_store.close)
            history = None
            if self.config.history.enabled:
                history = store_history(self.config, self.metrics.store_events)
                await history.open()
                stack.push_async_callback(history.close)
            wiring = self._wiring(membership, dependencies, joined_ms, schedule_store, history)
            parts = compose(registrations, wiring)
            if not self._manual:
                self._start_heartbeat(parts)
                stack.push_async_callback(self._stop_heartbeat)
            parts.loop_lag.start()
            stack.callback(parts.loop_lag.stop)
            parts.throttle.start()
            stack.callback(parts.throttle.stop)
            for lane in parts.lanes.values():
                await lane.repo.open()
                stack.push_async_callback(lane.repo.close)
            roster = await membership.list_nodes(finished=0)
            parts.node.count_live(roster)  # the first claims take their share of a burst
            await parts.takeover.at_start(roster)
            self._claiming = True
            await parts.control.refresh()  # paused categories and blockouts, before any fire
            # Before the first fetch: occurrences made ahead before a downtime are folded
            # into one (fire-once-now) before any of them is claimed.
            await parts.materialiser.materialise_safely(self.clock.now_ms())
            await parts.fetcher.fetch_once()
            self._parts = parts
            if not self._manual:
                self._start_loops(parts)
            stack.push_async_exit(self._leave)
            stack.push_async_callback(self._shutdown, parts)
            self._stack = stack.pop_all()
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        self.stop()
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

    def _wiring(
        self,
        membership: Membership,
        dependencies: DependencyStore,
        joined_ms: int,
        schedule_store: ScheduleStore,
        history: HistoryStore | None,
    ) -> Wiring:
        assert self._epoch is not None
        return Wiring(
            config=self.config,
            node_id=self.node_id,
            epoch=self._epoch,
            membership=membership,
            dependencies=dependencies,
            clock=self.clock,
            monotonic_ms=self._monotonic_ms,
            joined_ms=joined_ms,
            metrics=self.metrics,
            stop=self._stop,
            on_added=self._wheel_changed.set,
            on_declared_dead=self._on_declared_dead,
            schedule_store=schedule_store,
            history=history,
        )

    def _identity(self) -> Identity:
        return Identity(
            node_id=self.node_id, host=socket.gethostname(), pid=os.getpid(), version=__version__
        )

    @property
    def _node_timeout_ms(self) -> int:
        return self.config.cluster.node_timeout_ms

    @property
    def epoch(self) -> int:
        """This process's epoch in the store's membership, from the start on (the last run's
        after it): the fencing token of its claims."""
        if self._epoch is None:
            raise RuntimeError("the engine has not started: `async with engine:` joins the store")
        return self._epoch

    @property
    def declared_dead(self) -> asyncio.Event:
        """Set when a heartbeat found this epoch declared dead by another node (which may be
        taking its claims over): the engine fires nothing more from then on."""
        return self._declared_dead

    def _start_heartbeat(self, parts: Parts) -> None:
        self._heartbeat_stop = asyncio.Event()
        task = asyncio.create_task(
            parts.node.run(self._heartbeat_stop), name="infinite-scheduler:heartbeat"
        )
        task.add_done_callback(self._loop_ended)
        self._heartbeat = task

    async def _stop_heartbeat(self) -> None:
        """Last of the loops to stop: the node stays live while it drains and hands back."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            self._heartbeat_stop.set()
            await asyncio.gather(task, return_exceptions=True)
        if self._parts is not None:
            await self._parts.node.stop_taking_over()

    async def _leave_unless_claiming(self, membership: Membership) -> None:
        """A start that failed before its first claim holds nothing: its epoch leaves, and the
        node id is free at once. Past that point only a drained stop leaves (_shutdown); a
        failed one's epoch ages out and is taken over."""
        if self._claiming or self._epoch is None:
            return
        try:
            await membership.set_state(self._epoch, NodeState.LEFT)
        except StoreError as exc:
            logger.warning(
                "could not mark epoch %d LEFT after a failed start: %s",
                self._epoch,
                exc,
                extra={"action": "leave", "node": self.node_id, "epoch": self._epoch},
            )

    def _on_declared_dead(self) -> None:
        """Another node declared this epoch dead and took its claims over: stop, and make
        run() raise NodeDeclaredDead (what this engine still holds is not its own any more;
        the stop's writes about it are fenced, and the new epoch is a new engine's)."""
        self._declared_dead.set()
        if self._failure is None:
            self._failure = NodeDeclaredDead(self.node_id, self.epoch)
        self.stop()

    def stop(self) -> None:
        """Ask the engine to stop; run() returns and the context exit drains."""
        self._stop.set()

    @property
    def stopping(self) -> asyncio.Event:
        """Set once stop() was called: side tasks (producers, status lines) watch it."""
        return self._stop

    async def run(self) -> None:
        """Wait until stop() is called; re-raise if one of the loops died."""
        await self._stop.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def parts(self) -> Parts:
        """The lanes, fetcher, dispatcher, acker, ... of the engine, built when it starts;
        those of the last run stay readable after it."""
        if self._parts is None:
            raise RuntimeError("the engine has not started: `async with engine:` builds its parts")
        return self._parts

    def _start_loops(self, parts: Parts) -> None:
        loops = {
            "fetcher": parts.fetcher.run(self._stop),
            "wheel": self._wheel_loop(parts),
            "payloads": parts.payloads.run(),
            "acker": parts.acker.run(self._stop),
            "maintenance": parts.maintenance.run(self._stop),
            "dependencies": parts.dependencies.run(self._stop),
            "schedules": parts.materialiser.run(self._stop),
            "control": parts.control.run(self._stop),
            "revocations": parts.revoker.run(self._stop),
        }
        for name, coro in loops.items():
            task = asyncio.create_task(coro, name=f"infinite-scheduler:{name}")
            task.add_done_callback(self._loop_ended)
            self._tasks.append(task)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set() or self._heartbeat_stop.is_set():
            return
        self._failure = task.exception() or RuntimeError(f"{task.get_name()} returned early")
        logger.critical(
            "%s died, stopping the engine: %r",
            task.get_name(),
            self._failure,
            extra={"action": "monitor", "node": self.node_id},
        )
        self.stop()

    async def _shutdown(self, parts: Parts) -> None:
        self.stop()
        self._wheel_changed.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await parts.node.drain()
        # Before the drain: a payload read finishing during it would hand the dispatcher
        # jobs that neither run to their ack nor are handed back.
        parts.payloads.take_held_back()
        cancelled = await parts.dispatcher.drain(self.config.handlers.drain_timeout_s)
        await parts.acker.flush()
        for name, refs in _unfired(parts).items():
            await parts.lanes[name].repo.release(self.epoch, refs)
        logger.info(
            "stopped: %d fired, %d acked, %d handlers cut off",
            parts.dispatcher.fired,
            parts.acker.flushed,
            cancelled,
            extra={"action": "stop", "node": self.node_id},
        )

    async def _leave(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Right after _shutdown: release the maintenance and dependency leases (whatever
        happened: they hold no claim), stop the heartbeat (the node stayed live while it drained and handed back) and,
        if _shutdown handed everything back, mark the epoch LEFT. A stop that failed leaves the
        epoch to age out: its claims are taken over."""
        if self._parts is not None:
            await self._parts.maintenance.release()
            await self._parts.dependencies.release()
            await self._parts.materialiser.release()
        await self._stop_heartbeat()
        if exc is None and self._parts is not None:
            await self._parts.node.leave()

    # -- the wheel loop -----------------------------------------------------------------------

    async def _wheel_loop(self, parts: Parts) -> None:
        """Hand every due job to the dispatcher; sleep until the next one or a wake-up."""
        while not self._stop.is_set():
            self._wheel_changed.clear()
            _, next_ms = _fire_due(parts, self.clock.now_ms())
            self.metrics.held.set(parts.held())
            delay_s = (
                IDLE_TICK_S if next_ms is None else max(0.0, (next_ms - self.clock.now_ms()) / 1000)
            )
            if delay_s > 0:
                try:
                    await asyncio.wait_for(
                        self._wheel_changed.wait(), timeout=min(delay_s, IDLE_TICK_S)
                    )
                except TimeoutError:
                    pass

    def held(self) -> int:
        """Jobs claimed by this node and not finished: in the wheels, waiting or running."""
        return 0 if self._parts is None else self._parts.held()

    # -- manual mode --------------------------------------------------------------------------

    async def run_until_idle(self, timeout_s: float = 3.0) -> None:
        """Manual mode: turn until nothing is due at the clock's now and nothing is in flight
        (see the module docstring). TimeoutError after timeout_s: a handler that never returns,
        or a payload read that keeps failing."""
        parts = self._parts
        if not (self._manual and self._running and parts is not None):
            raise RuntimeError(
                "run_until_idle() drives an engine built with manual=True, "
                "inside `async with engine:`"
            )
        async with asyncio.timeout(timeout_s):
            await parts.control.refresh()  # what the control loop's last pass would have read
            await parts.materialiser.materialise(self.clock.now_ms())
            while await self._turn(parts):
                pass

    async def _turn(self, parts: Parts) -> bool:
        """What every loop does once, in the order a job travels; True if anything moved."""
        await parts.node.beat_if_due()
        await parts.node.settle()  # a takeover the renewal started
        released = await parts.dependencies.release_once()  # before the fetch that claims them
        claimed = await parts.fetcher.fetch_once()
        revoked = await parts.revoker.take_once()  # before the jobs due leave the wheel
        await parts.payloads.read_due()
        fired, _ = _fire_due(parts, self.clock.now_ms())
        await parts.payloads.settle()  # held-back jobs reach the dispatcher once read
        parts.dispatcher.wake()  # the clock moved: a category's rate may allow a start
        await parts.dispatcher.settle()
        outcomes = parts.acker.pending
        await parts.acker.flush()
        self.metrics.held.set(parts.held())
        return bool(claimed or fired or outcomes or released or revoked)

    # -- the public API while running ---------------------------------------------------------

    async def schedule(self, entities: Iterable[Any]) -> int:
        """Store new jobs: entities, and Jobs (infinite_scheduler/job.py: a priority, a
        category, dependencies) mixed; those due inside the current window go straight into
        the wheel. Jobs with dependencies are stored WAITING, after the call's other jobs (which
        they may wait for). The whole call is checked first: a bad Job or a DependencyRefused
        stores none of it."""
        parts = self._running_parts("schedule")
        plain, waiting = split_jobs(list(entities))
        batches = []
        if waiting:
            check_categories(waiting, self.config.categories)
            repos = {name: lane.repo for name, lane in parts.lanes.items()}
            batches = await plan_waiting(
                repos,
                parts.by_model,
                plain,
                waiting,
                now_ms=self.clock.now_ms(),
                unknown=HandlerMissing,
            )
        stored = 0
        groups = group_jobs(plain, parts.by_model, HandlerMissing, self.config.categories)
        for name, (batch, options) in groups.items():
            lane = parts.lanes[name]
            lane_stored = await parts.fetcher.store_new(lane, batch, options)
            lane.metrics.scheduled.inc(lane_stored)
            stored += lane_stored
        if batches:
            stored += await store_waiting(batches, now_ms=self.clock.now_ms())
        return stored

    async def cancel(self, spec: EntitySpec[Any, Any], keys: Iterable[Any]) -> int:
        """Cancel jobs by id (in every shard): in the store, and in the wheel if held here."""
        lane = self._running_parts("cancel").lanes[spec.name]
        keys = list(keys)
        cancelled = await lane.repo.cancel(keys)
        for key in keys:
            lane.wheel.cancel(key)
            for at_ms in lane.twins.pop(key, ()):
                lane.wheel.cancel((key, at_ms))
        return cancelled

    @property
    def categories(self) -> Categories:
        """Pause and resume categories on every node of the store (``await
        engine.categories.pause("reports")``, ``.resume(...)``, ``.paused()``):
        infinite_scheduler/categories.py. While running."""
        return self._running_parts("categories").categories

    @property
    def engine_control(self) -> EngineControl:
        """Pause and resume claiming on every node of the store (``await
        engine.engine_control.pause()``, ``.resume()``, ``.paused_since()``):
        infinite_scheduler/engine_control.py. While running."""
        return self._running_parts("engine_control").engine_control

    @property
    def paused(self) -> bool:
        """Whether this node applies an engine pause now (claims nothing, drains)."""
        return self._parts is not None and self._parts.fetcher.paused

    @property
    def schedules(self) -> ScheduleBook:
        """Recurring schedules and blockouts (create, get, list, update, pause, resume, delete,
        add_blockout, ...): infinite_scheduler/schedules/book.py. While running."""
        return self._running_parts("schedules").schedules

    def _running_parts(self, operation: str) -> Parts:
        # Running: from the end of a successful __aenter__ to the start of __aexit__.
        if self._parts is None or not self._running:
            raise EngineNotRunning(operation)
        return self._parts


def _fire_due(parts: Parts, now_ms: int) -> tuple[int, int | None]:
    """Hand the jobs due by now_ms out of every wheel; return how many, and the earliest due
    time left in the wheels (None: they are empty)."""
    fired, next_ms = 0, None
    for lane in parts.lanes.values():
        due = lane.wheel.pop_due(now_ms)
        if due and lane.twins:
            _forget_twins(lane, due)
        if due:
            parts.payloads.hand_over(lane, [ClaimedJob.from_held(held) for _, held in due])
            fired += len(due)
        lane_next = lane.wheel.next_due_ms()
        if lane_next is not None and (next_ms is None or lane_next < next_ms):
            next_ms = lane_next
    return fired, next_ms


def _forget_twins(lane: Lane, due: list[tuple[Any, HeldJob]]) -> None:
    for key, _ in due:
        if type(key) is tuple:
            ats = lane.twins.get(key[0])
            if ats is not None:
                ats.discard(key[1])
                if not ats:
                    del lane.twins[key[0]]


def _unfired(parts: Parts) -> dict[str, list[RowRef]]:
    """The jobs claimed whose outcome is not written (once the drain and the last flush are
    over), by entity type: still in a wheel, or out of it (lane.in_hand): waiting for a
    handler or for their payload, or cut off mid-run by the drain."""
    parts.dispatcher.take_waiting()  # none of them may start now
    unfired = {
        name: [RowRef(*held[:2]) for _, held in lane.wheel.pop_due(2**62)]
        + [RowRef(*ref) for ref in lane.in_hand]
        for name, lane in parts.lanes.items()
    }
    return {name: refs for name, refs in unfired.items() if refs}


__all__ = ["InfiniteScheduler"]
