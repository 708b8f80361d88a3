"""InfiniteScheduler: wires the lanes, the fetcher, the wheel loop, the dispatcher, the acker
and shard maintenance.

    async with InfiniteScheduler(config) as engine:      # opens stores, recovers, starts loops
        engine.register(SMS, send_sms)                   # or @engine.handler(SMS) before entering
        await engine.run()                               # until stop() or a loop dies

Start-up order matters: stores open, claims left by a previous run are released, the first
fetch runs, then the loops start; overdue rows found by that first fetch fire once, now.
Shutdown is the reverse: stop fetching, drain handlers (bounded), flush acks, hand unfired
claims back to the store, close the stores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

from infinite_scheduler.acker import Acker
from infinite_scheduler.clock import Clock, SystemClock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.decisions import MisfirePolicy, RetryPolicy
from infinite_scheduler.dispatch import Dispatcher, job_in_frame
from infinite_scheduler.errors import EngineNotRunning, HandlerMissing
from infinite_scheduler.fetcher import Fetcher, FetchSettings, wheel_key
from infinite_scheduler.jobs import Handler, Lane
from infinite_scheduler.loop_lag import LoopLagMonitor
from infinite_scheduler.maintenance import Maintenance, MaintenanceSettings
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.payloads import PayloadReader
from infinite_scheduler.waits import Backoff, StoreBack
from infinite_scheduler.wheel import TimerWheel
from repos.base import ClaimedJob, EntitySpec, RowRef, ShardingRepository, StoreError

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
    ) -> None:
        self.config = config
        self.node_id = config.resolved_node_id
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self._repositories = dict(repositories or {})
        self._lanes: dict[str, Lane] = {}
        self._by_model: dict[type, Lane] = {}
        self._stop = asyncio.Event()
        self._wheel_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack: AsyncExitStack | None = None
        self._failure: BaseException | None = None
        h = config.handlers
        # Shared by the loops that retry the store: once one finds it back, all of them go.
        self._store_back = StoreBack()
        self.acker = Acker(
            node_id=self.node_id,
            clock=self.clock,
            batch_size=config.batch_size,
            on_retry=self._retry_due,
            backoff=Backoff(0.05, store_back=self._store_back),
        )
        self.dispatcher = Dispatcher(
            acker=self.acker,
            clock=self.clock,
            metrics=self.metrics,
            retry=RetryPolicy(
                max_attempts=h.max_attempts,
                backoff_base_s=h.backoff_base_s,
                backoff_max_s=h.backoff_max_s,
            ),
            concurrency=h.concurrency,
            timeout_s=h.timeout_s,
            threads=h.threads,
        )
        self.loop_lag = LoopLagMonitor(
            warn_s=h.loop_lag_warn_s,
            metrics=self.metrics,
            node_id=self.node_id,
            find_job=job_in_frame,
        )
        self.payloads = PayloadReader(
            clock=self.clock,
            dispatcher=self.dispatcher,
            acker=self.acker,
            ahead_ms=int(config.payload_ahead_s * 1000),
            node_id=self.node_id,
            stop=self._stop,
            backoff=Backoff(store_back=self._store_back),
        )
        self.fetcher: Fetcher | None = None
        self.maintenance: Maintenance | None = None

    def __repr__(self) -> str:
        return f"<InfiniteScheduler node={self.node_id} held={self.held()} {self.dispatcher!r} {self.acker!r}>"

    # -- registration -----------------------------------------------------------------------

    def register(
        self,
        spec: EntitySpec[Any, Any],
        handler: Handler | None = None,
        *,
        repository: ShardingRepository[Any, Any] | None = None,
    ) -> None:
        """Serve an entity type; its repository comes from the config's store unless given."""
        lane = self._lanes.get(spec.name)
        if lane is None:
            repo = repository or self._repositories.get(spec.name) or self._make_repository(spec)
            lane = Lane(spec=spec, repo=repo, metrics=self.metrics.for_entity(spec.name))
            self._lanes[spec.name] = lane
            self._by_model[spec.model] = lane
        if handler is not None:
            lane.set_handler(handler)

    def handler(self, spec: EntitySpec[Any, Any]) -> Callable[[H], H]:
        """Decorator form of register()."""

        def decorate(fn: H) -> H:
            self.register(spec, fn)
            return fn

        return decorate

    def _make_repository(self, spec: EntitySpec[Any, Any]) -> ShardingRepository[Any, Any]:
        from repos.registry import make_repository

        store = self.config.store
        return make_repository(
            self.config.store_url,
            spec,
            self.config.shard_policy,
            layout=store.layout,
            driver=store.driver,
            pool_size=store.pool_size,
            pool_recycle_s=store.pool_recycle_s,
            batch_size=self.config.batch_size,
            connect_timeout_s=store.connect_timeout_s,
            create_missing=store.create_missing,
            max_payload_bytes=store.max_payload_bytes,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> InfiniteScheduler:
        missing = [name for name, lane in self._lanes.items() if lane.handler is None]
        if missing:
            raise HandlerMissing(missing)
        async with AsyncExitStack() as stack:
            # First: a port already taken must stop the start before any store is opened
            # or any job claimed (claims would only be handed back by the next start).
            self.metrics.serve(self.config.metrics_port)
            stack.callback(self.metrics.shutdown)
            self.loop_lag.start()
            stack.callback(self.loop_lag.stop)
            now_ms = self.clock.now_ms()
            for lane in self._lanes.values():
                await lane.repo.open()
                stack.push_async_callback(lane.repo.close)
                lane.wheel = TimerWheel(
                    now_ms=now_ms, tick_ms=1, slots=_slots(self.config.lookahead_s)
                )
                await self._recover(lane)
            self.fetcher = self._make_fetcher()
            self.maintenance = self._make_maintenance()
            await self.fetcher.fetch_once()
            self._start_loops()
            stack.push_async_callback(self._shutdown)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

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

    async def _recover(self, lane: Lane) -> None:
        # Single node: every claim in the store is a leftover of a previous run of this engine.
        released = await lane.repo.release(None)
        if released:
            logger.warning(
                "%s: released %d claims left by a previous run; they fire once, now",
                lane.name,
                released,
                extra={"action": "recover", "entity": lane.name, "node": self.node_id},
            )

    def _make_fetcher(self) -> Fetcher:
        c = self.config
        settings = FetchSettings(
            node_id=self.node_id,
            fetch_interval_s=c.fetch_interval_s,
            lookahead_ms=int(c.lookahead_s * 1000),
            payload_ahead_ms=int(c.payload_ahead_s * 1000),
            horizon_ms=int(c.misfire_horizon_s * 1000),
            batch_size=c.batch_size,
            max_jobs_per_fetch=c.max_jobs_per_fetch,
            max_held=c.max_held,
            misfire_policy=MisfirePolicy(c.misfire_policy),
            misfire_threshold_ms=int(c.misfire_threshold_s * 1000),
        )
        return Fetcher(
            list(self._lanes.values()),
            settings,
            clock=self.clock,
            payloads=self.payloads,
            acker=self.acker,
            metrics=self.metrics,
            held=self.held,
            on_added=self._wheel_changed.set,
            backoff=Backoff(store_back=self._store_back),
        )

    def _make_maintenance(self) -> Maintenance:
        settings = MaintenanceSettings(
            node_id=self.node_id,
            create_ahead=self.config.shards.create_ahead,
            interval_s=self.config.shards.maintenance_interval_s,
        )
        repos = [lane.repo for lane in self._lanes.values()]
        return Maintenance(repos, settings, clock=self.clock, metrics=self.metrics)

    def _start_loops(self) -> None:
        assert self.fetcher is not None and self.maintenance is not None
        loops = {
            "fetcher": self.fetcher.run(self._stop),
            "wheel": self._wheel_loop(),
            "payloads": self.payloads.run(),
            "acker": self.acker.run(self._stop),
            "maintenance": self.maintenance.run(self._stop),
        }
        for name, coro in loops.items():
            task = asyncio.create_task(coro, name=f"infinite-scheduler:{name}")
            task.add_done_callback(self._loop_ended)
            self._tasks.append(task)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        self._failure = task.exception() or RuntimeError(f"{task.get_name()} returned early")
        logger.critical(
            "%s died, stopping the engine: %r",
            task.get_name(),
            self._failure,
            extra={"action": "monitor", "node": self.node_id},
        )
        self.stop()

    async def _shutdown(self) -> None:
        self.stop()
        self._wheel_changed.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Before the drain: a payload read finishing during it would hand the dispatcher
        # jobs that neither run to their ack nor are handed back.
        held_back = self.payloads.take_held_back()
        cancelled = await self.dispatcher.drain(self.config.handlers.drain_timeout_s)
        await self.acker.flush()
        for name, refs in self._unfired(held_back).items():
            await self._lanes[name].repo.release(self.node_id, refs)
        if cancelled:  # handlers cut off mid-run: hand back their claims, attempts counted
            for lane in self._lanes.values():
                await lane.repo.release(self.node_id)
        logger.info(
            "stopped: %d fired, %d acked, %d handlers cut off",
            self.dispatcher.fired,
            self.acker.flushed,
            cancelled,
            extra={"action": "stop", "node": self.node_id},
        )

    def _unfired(self, held_back: list[tuple[Lane, list[ClaimedJob]]]) -> dict[str, list[RowRef]]:
        unfired: dict[str, list[RowRef]] = {name: [] for name in self._lanes}
        for lane, job in self.dispatcher.take_waiting():
            unfired[lane.name].append(job.ref)
        for lane, jobs in held_back:
            unfired[lane.name].extend(job.ref for job in jobs)
        for lane in self._lanes.values():
            unfired[lane.name].extend(job.ref for _, job in lane.wheel.pop_due(2**62))
        return {name: refs for name, refs in unfired.items() if refs}

    # -- the wheel loop -----------------------------------------------------------------------

    async def _wheel_loop(self) -> None:
        """Hand every due job to the dispatcher; sleep until the next one or a wake-up."""
        lanes = list(self._lanes.values())
        while not self._stop.is_set():
            self._wheel_changed.clear()
            now_ms = self.clock.now_ms()
            next_ms: int | None = None
            for lane in lanes:
                due = lane.wheel.pop_due(now_ms)
                if due:
                    self.payloads.hand_over(lane, [job for _, job in due])
                lane_next = lane.wheel.next_due_ms()
                if lane_next is not None and (next_ms is None or lane_next < next_ms):
                    next_ms = lane_next
            self.metrics.held.set(self.held())
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
        return (
            sum(len(lane.wheel) for lane in self._lanes.values() if hasattr(lane, "wheel"))
            + self.dispatcher.backlog
            + self.payloads.held_back
        )

    def _retry_due(self, at_ms: int) -> None:
        if self.fetcher is not None and at_ms < self.fetcher.window_end_ms:
            self.fetcher.wake()

    # -- the public API while running ---------------------------------------------------------

    async def schedule(self, entities: Iterable[Any]) -> int:
        """Store new jobs; those due inside the current window go straight into the wheel."""
        fetcher = self._running_fetcher("schedule")
        by_lane: dict[str, list[Any]] = {}
        for entity in entities:
            by_lane.setdefault(self._lane_of(entity).name, []).append(entity)
        stored = 0
        for name, batch in by_lane.items():
            stored += await self._schedule_lane(fetcher, self._lanes[name], batch)
        return stored

    async def _schedule_lane(self, fetcher: Fetcher, lane: Lane, entities: list[Any]) -> int:
        now_ms = self.clock.now_ms()
        # Checked whole before either insert below: a bad entity must not leave the others
        # of the call stored.
        rows = lane.spec.encode_many(
            entities,
            now_ms=now_ms,
            retention_ms=lane.repo.policy.retention_ms,
            max_payload_bytes=lane.repo.max_payload_bytes,
        )
        window_end_ms = fetcher.window_end_ms
        room = fetcher.room()
        soon = [i for i, r in enumerate(rows) if r.at_ms < window_end_ms][:room]
        later = sorted(set(range(len(rows))) - set(soon))
        stored = 0
        if later:
            stored += await lane.repo.insert([entities[i] for i in later], now_ms=now_ms)
        if soon:
            stamp = fetcher.claim_stamp()
            try:
                stored += await lane.repo.insert(
                    [entities[i] for i in soon], now_ms=stamp, claimed_by=self.node_id
                )
            except StoreError:
                lane.claims_in_doubt.add(stamp)
                raise
            jobs = [
                ClaimedJob(rows[i].key, rows[i].at_ms, rows[i].at_ms, 1, rows[i].payload)
                for i in soon
            ]
            fetcher.place(lane, jobs, now_ms)
        lane.metrics.scheduled.inc(stored)
        return stored

    async def cancel(self, spec: EntitySpec[Any, Any], keys: Iterable[Any]) -> int:
        """Cancel jobs by id: in the store, and in the wheel if held here."""
        self._running_fetcher("cancel")
        lane = self._lanes[spec.name]
        keys = list(keys)
        cancelled = await lane.repo.cancel(keys)
        for key in keys:
            lane.wheel.cancel(key)
        return cancelled

    def _running_fetcher(self, operation: str) -> Fetcher:
        # The stack is set once __aenter__ has started every loop and cleared on exit.
        if self._stack is None or self.fetcher is None:
            raise EngineNotRunning(operation)
        return self.fetcher

    def _lane_of(self, entity: Any) -> Lane:
        lane = self._by_model.get(type(entity))
        if lane is None:
            raise HandlerMissing([type(entity).__name__])
        return lane

    @property
    def lanes(self) -> Mapping[str, Lane]:
        return self._lanes


def _slots(lookahead_s: float) -> int:
    """One 1 ms slot per millisecond of the window, rounded up to a power of two."""
    return 1 << max(10, int(lookahead_s * 1000 * 1.25)).bit_length()


__all__ = ["InfiniteScheduler", "wheel_key"]
