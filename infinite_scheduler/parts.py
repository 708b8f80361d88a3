"""The engine's composition root: every part it runs is built here, in one place.

Registration (``engine.register``) records entity types, their handlers and repositories (made
by infinite_scheduler/stores.py unless given; the shard commands use them without an engine),
and goes on until the engine starts. So the other parts are built then, by :func:`compose`, in
``__aenter__`` once the process has joined the store's membership (stores.store_membership)
and so has its epoch: the lanes with their wheels, the acker, the dispatcher, the payload
reader, the fetcher, the revoker (operators' changes to held jobs), shard maintenance (under
the store's maintenance lease), the dependency release (under its own lease), the loop-lag
watcher, the throttle monitor (the process's own CPU and memory, which slow the fetcher's
claims) and the node's heartbeat, wired to each other. Building them does no I/O, starts
nothing and installs no signal handler; the engine opens and starts them afterwards. A part
never exists half-built: either the engine has all of them or none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from infinite_scheduler.acker import Acker
from infinite_scheduler.categories import Categories
from infinite_scheduler.clock import Clock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.control_view import ControlView
from infinite_scheduler.decisions import MisfirePolicy, RetryPolicy
from infinite_scheduler.dependency_release import DependencyRelease, ReleaseSettings
from infinite_scheduler.dispatch import Dispatcher, job_in_frame
from infinite_scheduler.engine_control import EngineControl
from infinite_scheduler.errors import HandlerMissing
from infinite_scheduler.fetcher import Fetcher, FetchSettings
from infinite_scheduler.fire_blockouts import BlockoutGate
from infinite_scheduler.jobs import Handler, Lane
from infinite_scheduler.lease import DEPENDENCIES, MAINTENANCE, Lease, maintenance_lease_ttl_ms
from infinite_scheduler.loop_lag import LoopLagMonitor
from infinite_scheduler.maintenance import Maintenance, MaintenanceSettings
from infinite_scheduler.membership import Fence
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.node import Node
from infinite_scheduler.payloads import PayloadReader
from infinite_scheduler.revocations import Revoker
from infinite_scheduler.schedules.book import ScheduleBook
from infinite_scheduler.schedules.materialiser import (
    SCHEDULES_LEASE,
    Materialiser,
    MaterialiseSettings,
)
from infinite_scheduler.takeover import Takeover
from infinite_scheduler.throttle import Limits
from infinite_scheduler.throttle_monitor import ThrottleMonitor
from infinite_scheduler.waiting import CategoryGate, Waiting
from infinite_scheduler.waits import STORE_RETRY_MAX_S, Backoff, StoreBack
from infinite_scheduler.wheel import TimerWheel
from repos.base import EntitySpec, ShardingRepository, category_code
from repos.cluster import Membership
from repos.dependencies import DependencyStore
from repos.history import HistoryStore
from repos.schedules import ScheduleStore

Repo = ShardingRepository[Any, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """An entity type the engine is to serve; its handler may come later (a decorator)."""

    spec: EntitySpec[Any, Any]
    repo: Repo
    handler: Handler | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Wiring:
    """What the engine itself hands its parts."""

    config: SchedulerConfig
    node_id: str
    #: This process's epoch in the store's membership: the fencing token of its claims.
    epoch: int
    #: The store's nodes table, joined already.
    membership: Membership
    #: The store's dependencies table, opened already.
    dependencies: DependencyStore
    clock: Clock
    #: Where the node's self-fencing reads the time (monotonic; in manual mode, the clock's).
    monotonic_ms: Callable[[], int]
    #: When the join was sent, on monotonic_ms: the node's first renewal.
    joined_ms: int
    metrics: Metrics
    #: The engine's stop event: set, the payload reader stops retrying held-back reads.
    stop: asyncio.Event
    #: Called when jobs enter a wheel: wakes the wheel loop.
    on_added: Callable[[], None]
    #: Called when a heartbeat finds this epoch declared dead.
    on_declared_dead: Callable[[], None]
    #: The store's schedules and blockouts (opened by the engine).
    schedule_store: ScheduleStore
    #: The store's execution history tables (opened by the engine); None: [history] is off.
    history: HistoryStore | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """Everything one run of the engine uses; made by compose() alone, all of it at once."""

    lanes: Mapping[str, Lane]  #: by entity type name, in registration order
    by_model: Mapping[type, str]  #: lane names by the entity class, for schedule()
    acker: Acker
    dispatcher: Dispatcher
    payloads: PayloadReader
    fetcher: Fetcher
    maintenance: Maintenance
    dependencies: DependencyRelease
    loop_lag: LoopLagMonitor
    throttle: ThrottleMonitor
    takeover: Takeover
    node: Node
    materialiser: Materialiser
    schedules: ScheduleBook
    #: The node's view of the paused categories and blockouts, refreshed every heartbeat.
    control: ControlView
    #: Category pause and resume for every node of the store.
    categories: Categories
    #: Engine pause and resume (no claims) for every node of the store.
    engine_control: EngineControl
    revoker: Revoker

    def held(self) -> int:
        """Jobs claimed by this node and not finished: in the wheels, waiting or running."""
        return _held(self.lanes.values(), self.dispatcher, self.payloads)


def _held(lanes: Iterable[Lane], dispatcher: Dispatcher, payloads: PayloadReader) -> int:
    return sum(len(lane.wheel) for lane in lanes) + dispatcher.backlog + payloads.held_back


def check_handlers(registrations: Sequence[Registration]) -> None:
    """Raise HandlerMissing if a type has no handler: before the engine opens anything."""
    missing = [reg.spec.name for reg in registrations if reg.handler is None]
    if missing:
        raise HandlerMissing(missing)


def compose(registrations: Sequence[Registration], wiring: Wiring) -> Parts:
    """Build every part; raises HandlerMissing, building nothing, if a type has no handler."""
    check_handlers(registrations)
    lanes = _lanes(registrations, wiring)
    # Shared by the loops that retry the store: once one finds it back, all of them go.
    store_back = StoreBack()
    acker = Acker(
        node_id=wiring.node_id,
        epoch=wiring.epoch,
        clock=wiring.clock,
        batch_size=wiring.config.batch_size,
        # The fetcher is built below, before any outcome can be written.
        on_retry=lambda at_ms: fetcher.retry_due(at_ms),
        backoff=Backoff(0.05, store_back=store_back),
        history=wiring.history is not None,
    )
    dispatcher = _dispatcher(wiring, acker)
    payloads = _payloads(wiring, dispatcher, acker, Backoff(store_back=store_back))
    fetcher = Fetcher(
        list(lanes.values()),
        _fetch_settings(wiring),
        clock=wiring.clock,
        payloads=payloads,
        acker=acker,
        metrics=wiring.metrics,
        held=lambda: _held(lanes.values(), dispatcher, payloads),
        # Jobs a paused category (or one at its limit) holds back claim no room: the rest of
        # the jobs due go on being claimed (up to max_held).
        due_in_hand=lambda: dispatcher.backlog - dispatcher.held_back,
        on_added=wiring.on_added,
        backoff=Backoff(store_back=store_back),
    )
    takeover = _takeover(wiring, lanes, fetcher)
    control = _control(wiring, dispatcher, payloads.blockouts, fetcher)
    return Parts(
        lanes=lanes,
        by_model={lane.spec.model: lane.name for lane in lanes.values()},
        acker=acker,
        dispatcher=dispatcher,
        payloads=payloads,
        fetcher=fetcher,
        maintenance=_maintenance(wiring, lanes, takeover),
        dependencies=_dependencies(wiring, lanes),
        loop_lag=_loop_lag(wiring),
        throttle=_throttle(wiring, fetcher),
        takeover=takeover,
        node=_node(wiring, dispatcher, fetcher, store_back, takeover),
        materialiser=_materialiser(wiring, lanes),
        schedules=ScheduleBook(
            wiring.schedule_store,
            {name: lane.repo for name, lane in lanes.items()},
            clock=wiring.clock,
            categories=wiring.config.categories,
        ),
        control=control,
        categories=Categories(
            wiring.schedule_store,
            wiring.config.categories,
            clock=wiring.clock,
            changed=control.refresh,  # this node at once; the others at their next heartbeat
        ),
        engine_control=EngineControl(
            wiring.schedule_store, clock=wiring.clock, changed=control.refresh
        ),
        # Every near poll: a cancel or pause reaches a held job a second before it is due.
        revoker=Revoker(
            wiring.membership,
            lanes,
            node_id=wiring.node_id,
            epoch=wiring.epoch,
            interval_s=wiring.config.near_poll_interval_s,
            backoff=Backoff(store_back=store_back),
        ),
    )


def _control(
    wiring: Wiring, dispatcher: Dispatcher, blockouts: BlockoutGate, fetcher: Fetcher
) -> ControlView:
    return ControlView(
        wiring.schedule_store,
        dispatcher=dispatcher,
        blockouts=blockouts,
        categories=wiring.config.categories,
        interval_s=wiring.config.cluster.heartbeat_interval_s,
        node_id=wiring.node_id,
        fetcher=fetcher,
    )


def _lanes(registrations: Sequence[Registration], wiring: Wiring) -> dict[str, Lane]:
    now_ms = wiring.clock.now_ms()
    slots = _wheel_slots(wiring.config.lookahead_s)
    lanes: dict[str, Lane] = {}
    for reg in registrations:
        assert reg.handler is not None  # check_handlers
        lane = Lane(
            spec=reg.spec,
            repo=reg.repo,
            handler=reg.handler,
            metrics=wiring.metrics.for_entity(reg.spec.name),
            wheel=TimerWheel(now_ms=now_ms, tick_ms=1, slots=slots),
        )
        wiring.metrics.watch_backlog(reg.spec.name, partial(len, lane.in_hand))
        lanes[reg.spec.name] = lane
    return lanes


def _dispatcher(wiring: Wiring, acker: Acker) -> Dispatcher:
    h = wiring.config.handlers
    waiting = _waiting(wiring)
    return Dispatcher(
        acker=acker,
        clock=wiring.clock,
        metrics=wiring.metrics,
        retry=RetryPolicy(
            max_attempts=h.max_attempts,
            backoff_base_s=h.backoff_base_s,
            backoff_max_s=h.backoff_max_s,
        ),
        concurrency=h.concurrency,
        timeout_s=h.timeout_s,
        threads=h.threads,
        waiting=waiting,
    )


def _waiting(wiring: Wiring) -> Waiting:
    """The dispatcher's queue, with the configured categories' limits; their series read it."""
    categories = wiring.config.categories
    gate = CategoryGate({name: (c.concurrency, c.rate_per_s) for name, c in categories.items()})
    waiting = Waiting(boost_per_minute=wiring.config.priority.age_boost_per_minute, gate=gate)
    for name in categories:
        code = category_code(name)
        wiring.metrics.watch_category(
            name,
            running=partial(gate.running, code),
            waiting=partial(waiting.waiting, code),
            paused=partial(gate.paused, code),
        )
    return waiting


def _payloads(
    wiring: Wiring, dispatcher: Dispatcher, acker: Acker, backoff: Backoff
) -> PayloadReader:
    return PayloadReader(
        clock=wiring.clock,
        dispatcher=dispatcher,
        acker=acker,
        ahead_ms=int(wiring.config.payload_ahead_s * 1000),
        node_id=wiring.node_id,
        epoch=wiring.epoch,
        stop=wiring.stop,
        backoff=backoff,
        blockouts=BlockoutGate(acker, node_id=wiring.node_id),
    )


def _loop_lag(wiring: Wiring) -> LoopLagMonitor:
    return LoopLagMonitor(
        warn_s=wiring.config.handlers.loop_lag_warn_s,
        metrics=wiring.metrics,
        node_id=wiring.node_id,
        find_job=job_in_frame,
    )


def _throttle(wiring: Wiring, fetcher: Fetcher) -> ThrottleMonitor:
    t = wiring.config.throttle
    return ThrottleMonitor(
        limits=Limits(cpu_percent=t.cpu_percent, memory_mb=t.memory_mb),
        interval_s=t.check_interval_s,
        metrics=wiring.metrics,
        node_id=wiring.node_id,
        apply=fetcher.throttle,
    )


def _fetch_settings(wiring: Wiring) -> FetchSettings:
    c = wiring.config
    return FetchSettings(
        node_id=wiring.node_id,
        epoch=wiring.epoch,
        fetch_interval_s=c.fetch_interval_s,
        near_poll_interval_s=c.near_poll_interval_s,
        lookahead_ms=int(c.lookahead_s * 1000),
        payload_ahead_ms=int(c.payload_ahead_s * 1000),
        horizon_ms=int(c.misfire_horizon_s * 1000),
        batch_size=c.batch_size,
        max_jobs_per_fetch=c.max_jobs_per_fetch,
        max_held=c.max_held,
        misfire_policy=MisfirePolicy(c.misfire_policy),
        misfire_threshold_ms=int(c.misfire_threshold_s * 1000),
        age_boost_per_minute=c.priority.age_boost_per_minute,
    )


def _maintenance(wiring: Wiring, lanes: Mapping[str, Lane], takeover: Takeover) -> Maintenance:
    shards = wiring.config.shards
    settings = MaintenanceSettings(
        node_id=wiring.node_id,
        create_ahead=shards.create_ahead,
        interval_s=shards.maintenance_interval_s,
        nodes_retention_ms=shards.retention_s * 1000,
        history_retention_ms=wiring.config.history.retention_ms,
    )
    # One node of the store runs the passes: the holder of this lease.
    lease = Lease(
        wiring.membership,
        name=MAINTENANCE,
        epoch=wiring.epoch,
        ttl_ms=maintenance_lease_ttl_ms(
            interval_s=shards.maintenance_interval_s,
            node_timeout_s=wiring.config.cluster.node_timeout_s,
        ),
        node_id=wiring.node_id,
        metrics=wiring.metrics,
    )
    repos = [lane.repo for lane in lanes.values()]
    return Maintenance(
        repos,
        settings,
        clock=wiring.clock,
        metrics=wiring.metrics,
        lease=lease,
        takeover=takeover,
        history=wiring.history,
    )


def _dependencies(wiring: Wiring, lanes: Mapping[str, Lane]) -> DependencyRelease:
    c = wiring.config
    poll_s = c.dependencies.poll_interval_s
    # One node of the store releases waiting jobs: the holder of this lease.
    lease = Lease(
        wiring.membership,
        name=DEPENDENCIES,
        epoch=wiring.epoch,
        ttl_ms=maintenance_lease_ttl_ms(interval_s=poll_s, node_timeout_s=c.cluster.node_timeout_s),
        node_id=wiring.node_id,
        metrics=wiring.metrics,
    )
    settings = ReleaseSettings(
        node_id=wiring.node_id, poll_interval_s=poll_s, page_size=c.batch_size
    )
    repos = {name: lane.repo for name, lane in lanes.items()}
    return DependencyRelease(wiring.dependencies, repos, settings, lease=lease, clock=wiring.clock)


def _materialiser(wiring: Wiring, lanes: Mapping[str, Lane]) -> Materialiser:
    c = wiring.config
    interval_s = c.schedules.interval_s
    settings = MaterialiseSettings(
        node_id=wiring.node_id,
        epoch=wiring.epoch,
        interval_s=interval_s,
        # Stored before the fetch whose window first covers them, with a pass to spare.
        ahead_ms=int((c.lookahead_s + 2 * interval_s) * 1000),
        batch_size=c.schedules.batch_size,
        max_per_schedule=c.schedules.max_per_schedule,
        horizon_ms=c.misfire_horizon_s * 1000,
        threshold_ms=int(c.misfire_threshold_s * 1000),
    )
    lease = Lease(
        wiring.membership,
        name=SCHEDULES_LEASE,
        epoch=wiring.epoch,
        ttl_ms=maintenance_lease_ttl_ms(
            interval_s=interval_s, node_timeout_s=c.cluster.node_timeout_s
        ),
        node_id=wiring.node_id,
        metrics=wiring.metrics,
    )
    repos = {name: lane.repo for name, lane in lanes.items()}
    return Materialiser(
        wiring.schedule_store,
        repos,
        settings,
        clock=wiring.clock,
        lease=lease,
        metrics=wiring.metrics,
    )


def _takeover(wiring: Wiring, lanes: Mapping[str, Lane], fetcher: Fetcher) -> Takeover:
    c = wiring.config
    return Takeover(
        wiring.membership,
        lanes.values(),
        node_id=wiring.node_id,
        epoch=wiring.epoch,
        node_timeout_ms=c.cluster.node_timeout_ms,
        horizon_ms=int(c.misfire_horizon_s * 1000),
        clock=wiring.clock,
        wake=fetcher.wake,
        metrics=wiring.metrics,
    )


def _node(
    wiring: Wiring,
    dispatcher: Dispatcher,
    fetcher: Fetcher,
    store_back: StoreBack,
    takeover: Takeover,
) -> Node:
    c = wiring.config
    # A failed renewal is tried again within the interval (and at least once a second).
    retry_s = min(STORE_RETRY_MAX_S, c.cluster.heartbeat_interval_s)
    fence = Fence(
        heartbeat_interval_ms=c.cluster.heartbeat_interval_ms,
        node_timeout_ms=c.cluster.node_timeout_ms,
    )
    horizon_ms = c.misfire_horizon_s * 1000
    return Node(
        wiring.membership,
        node_id=wiring.node_id,
        epoch=wiring.epoch,
        fence=fence,
        monotonic_ms=wiring.monotonic_ms,
        renewed_ms=wiring.joined_ms,
        gate=dispatcher,
        # The earliest due time this epoch may hold claims for until its next heartbeat: a
        # claim takes rows overdue back to the misfire horizon, so that far back.
        holds_from_ms=lambda: wiring.clock.now_ms() - horizon_ms,
        on_declared_dead=wiring.on_declared_dead,
        on_live=fetcher.share_with,  # a burst's share of each node
        takeover=takeover,
        metrics=wiring.metrics,
        backoff=Backoff(min(0.1, retry_s), retry_s, store_back=store_back),
    )


def _wheel_slots(lookahead_s: float) -> int:
    """One 1 ms slot per millisecond of the window, rounded up to a power of two."""
    return 1 << max(10, int(lookahead_s * 1000 * 1.25)).bit_length()
