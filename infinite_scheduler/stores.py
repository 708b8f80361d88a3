"""The configured store's adapters, built from a SchedulerConfig (not opened): an entity type's
repository and the store-wide tables (nodes, dependencies, schedules, access, history). The
engine, the client, the API server and the commands all reach the store through these, so that
one config gives every one of them the same store, driver, pool and timeouts.
"""

from __future__ import annotations

from typing import Any

from infinite_scheduler.config import SchedulerConfig
from repos.access import AccessStore
from repos.base import NO_EVENTS, EntitySpec, ShardingRepository, StoreEvents
from repos.cluster import Membership
from repos.dependencies import DependencyStore
from repos.history import HistoryStore
from repos.schedules import ScheduleStore

Repo = ShardingRepository[Any, Any]


def store_repository(
    config: SchedulerConfig, spec: EntitySpec[Any, Any], events: StoreEvents = NO_EVENTS
) -> Repo:
    """The repository of `spec` on the configured store (built, not opened); `events` (the
    engine's metrics) hears of its conflicts and failovers."""
    from repos.registry import make_repository

    store = config.store
    return make_repository(
        config.store_url,
        spec,
        config.shard_policy,
        layout=store.layout,
        driver=store.driver,
        pool_size=store.pool_size,
        pool_recycle_s=store.pool_recycle_s,
        batch_size=config.batch_size,
        connect_timeout_s=store.connect_timeout_s,
        create_missing=store.create_missing,
        max_payload_bytes=store.max_payload_bytes,
        events=events,
    )


def store_dependencies(config: SchedulerConfig, events: StoreEvents = NO_EVENTS) -> DependencyStore:
    """The configured store's dependencies table (built, not opened)."""
    from repos.registry import make_dependencies

    return make_dependencies(config.store_url, **_table_options(config, events))


def store_schedules(config: SchedulerConfig, events: StoreEvents = NO_EVENTS) -> ScheduleStore:
    """The configured store's schedules and blockouts tables (built, not opened)."""
    from repos.registry import make_schedule_store

    return make_schedule_store(config.store_url, **_table_options(config, events))


def store_access(config: SchedulerConfig, events: StoreEvents = NO_EVENTS) -> AccessStore:
    """The configured store's api_tokens and audit_log tables (built, not opened)."""
    from repos.registry import make_access_store

    return make_access_store(config.store_url, **_table_options(config, events))


def store_history(config: SchedulerConfig, events: StoreEvents = NO_EVENTS) -> HistoryStore:
    """The configured store's execution history tables (built, not opened)."""
    from repos.registry import make_history_store

    return make_history_store(config.store_url, **_table_options(config, events))


def store_membership(config: SchedulerConfig, events: StoreEvents = NO_EVENTS) -> Membership:
    """The configured store's nodes table (built, not opened)."""
    from repos.registry import make_membership

    return make_membership(
        config.store_url,
        galera_multi_writer=config.store.galera_multi_writer,
        **_table_options(config, events),
    )


def _table_options(config: SchedulerConfig, events: StoreEvents) -> dict[str, Any]:
    """How a store-wide table's adapter (nodes, dependencies, schedules) reaches the store."""
    store = config.store
    return {
        "driver": store.driver,
        "pool_recycle_s": store.pool_recycle_s,
        "connect_timeout_s": store.connect_timeout_s,
        "create_missing": store.create_missing,
        "events": events,
    }
