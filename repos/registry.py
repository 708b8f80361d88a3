"""The one place that picks an adapter for a store URL: to make the store, a repository, the
store's membership (its nodes table), its dependencies table, its schedules and blockouts or
its API tokens and audit log, or to judge its server (the store guard)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repos.access import AccessStore
from repos.base import ShardingRepository, ShardPolicy
from repos.cluster import Membership
from repos.dependencies import DependencyStore
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, EntitySpec
from repos.events import NO_EVENTS, StoreEvents
from repos.history import HistoryStore
from repos.schedules import ScheduleStore
from repos.server_guard import Verdict
from repos.urls import Driver, LayoutName, SqliteUrl, parse_store_url


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreCreated:
    """What :func:`create_store` found and did."""

    store: str  #: ``database 'jobs' on db:3306`` or ``SQLite file 'var/jobs.db'``
    created: bool  #: False: it existed already, nothing was done
    directory: str | None = None  #: the outermost directory made for a SQLite file

    def __str__(self) -> str:
        if not self.created:
            return f"{self.store} already exists; nothing to do"
        made = f" (and directory {self.directory!r})" if self.directory else ""
        return f"created {self.store}{made}"


async def create_store(
    url: str, *, driver: Driver = "asyncmy", connect_timeout_s: float = 5.0
) -> StoreCreated:
    """Create the store `url` names unless it exists: the MySQL database (utf8mb4), or the
    SQLite file and its directory; then its store-wide tables (nodes, leases, schedules,
    blockouts, api_tokens, audit_log), if missing. The shard tables inside are the engine's business."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.connection import create_file

        path = Path(target.path)
        created, directory = await asyncio.to_thread(create_file, path)
        done = StoreCreated(
            store=f"SQLite file {str(path)!r}",
            created=created,
            directory=None if directory is None else str(directory),
        )
    else:
        from repos.mysql.driver import Executor

        executor = Executor(target, driver=driver, connect_timeout_s=connect_timeout_s)
        created = await executor.create_database()
        done = StoreCreated(
            store=f"database {target.database!r} on {target.address}", created=created
        )
    membership = make_membership(url, driver=driver, connect_timeout_s=connect_timeout_s)
    await membership.open()  # makes the nodes and leases tables
    await membership.close()
    schedules = make_schedule_store(url, driver=driver, connect_timeout_s=connect_timeout_s)
    await schedules.open()  # makes the schedules and blockouts tables
    await schedules.close()
    access = make_access_store(url, driver=driver, connect_timeout_s=connect_timeout_s)
    await access.open()  # makes the api_tokens and audit_log tables
    await access.close()
    return done


def make_repository(
    url: str,
    spec: EntitySpec[Any, Any],
    policy: ShardPolicy,
    *,
    layout: LayoutName = "multi-table",
    driver: Driver = "asyncmy",
    pool_size: int = 10,
    pool_recycle_s: int = 3600,
    batch_size: int = 1000,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    events: StoreEvents = NO_EVENTS,
) -> ShardingRepository[Any, Any]:
    """Build (not open) the adapter that serves `url` for one entity type. The store must exist
    unless `create_missing`; `connect_timeout_s` bounds a MySQL connect, handshake included;
    `events` hears of conflicts retried and writer hosts switched (MySQL only)."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.adapter import SqliteRepository

        return SqliteRepository(
            spec,
            policy,
            path=target.path,
            batch_size=batch_size,
            create_missing=create_missing,
            max_payload_bytes=max_payload_bytes,
        )
    from repos.mysql.adapter import MysqlRepository

    return MysqlRepository(
        spec,
        policy,
        url=target,
        layout=layout,
        driver=driver,
        pool_size=pool_size,
        pool_recycle_s=pool_recycle_s,
        batch_size=batch_size,
        connect_timeout_s=connect_timeout_s,
        create_missing=create_missing,
        max_payload_bytes=max_payload_bytes,
        events=events,
    )


def make_membership(
    url: str,
    *,
    driver: Driver = "asyncmy",
    pool_recycle_s: int = 3600,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    galera_multi_writer: bool = False,
    events: StoreEvents = NO_EVENTS,
) -> Membership:
    """Build (not open) the nodes table's adapter for the store `url` names; its own small
    pool on MySQL (two connections: a heartbeat and a listing), its own connection on SQLite.
    On MySQL its open runs the store guard (repos/server_guard.py), once per engine start."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.cluster import SqliteMembership

        return SqliteMembership(target.path, create_missing=create_missing)
    from repos.mysql.cluster import MysqlMembership

    return MysqlMembership(
        target,
        driver=driver,
        pool_recycle_s=pool_recycle_s,
        connect_timeout_s=connect_timeout_s,
        create_missing=create_missing,
        galera_multi_writer=galera_multi_writer,
        events=events,
    )


def make_dependencies(
    url: str,
    *,
    driver: Driver = "asyncmy",
    pool_recycle_s: int = 3600,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    events: StoreEvents = NO_EVENTS,
) -> DependencyStore:
    """Build (not open) the dependencies table's adapter for the store `url` names: one
    connection of its own (MySQL: a pool of one)."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.dependencies import SqliteDependencies

        return SqliteDependencies(target.path, create_missing=create_missing)
    from repos.mysql.dependencies import MysqlDependencies

    return MysqlDependencies(
        target,
        driver=driver,
        pool_recycle_s=pool_recycle_s,
        connect_timeout_s=connect_timeout_s,
        create_missing=create_missing,
        events=events,
    )


def make_schedule_store(
    url: str,
    *,
    driver: Driver = "asyncmy",
    pool_recycle_s: int = 3600,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    events: StoreEvents = NO_EVENTS,
) -> ScheduleStore:
    """Build (not open) the schedules and blockouts tables' adapter for the store `url` names;
    its own small pool on MySQL, its own connection on SQLite."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.schedules import SqliteScheduleStore

        return SqliteScheduleStore(target.path, create_missing=create_missing)
    from repos.mysql.schedules import MysqlScheduleStore

    return MysqlScheduleStore(
        target,
        driver=driver,
        pool_recycle_s=pool_recycle_s,
        connect_timeout_s=connect_timeout_s,
        create_missing=create_missing,
        events=events,
    )


def make_access_store(
    url: str,
    *,
    driver: Driver = "asyncmy",
    pool_recycle_s: int = 3600,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    events: StoreEvents = NO_EVENTS,
) -> AccessStore:
    """Build (not open) the api_tokens and audit_log tables' adapter for the store `url`
    names; its own small pool on MySQL, its own connection on SQLite."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.access import SqliteAccessStore

        return SqliteAccessStore(target.path, create_missing=create_missing)
    from repos.mysql.access import MysqlAccessStore

    return MysqlAccessStore(
        target,
        driver=driver,
        pool_recycle_s=pool_recycle_s,
        connect_timeout_s=connect_timeout_s,
        create_missing=create_missing,
        events=events,
    )


def make_history_store(
    url: str,
    *,
    driver: Driver = "asyncmy",
    pool_recycle_s: int = 3600,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    events: StoreEvents = NO_EVENTS,
) -> HistoryStore:
    """Build (not open) the execution history's adapter for the store `url` names (its day
    tables: made ahead, dropped, read); its own small pool on MySQL, its own connection on
    SQLite. The acks write the rows through the entity repositories."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite.history import SqliteHistoryStore

        return SqliteHistoryStore(target.path, create_missing=create_missing)
    from repos.mysql.history import MysqlHistoryStore

    return MysqlHistoryStore(
        target,
        driver=driver,
        pool_recycle_s=pool_recycle_s,
        connect_timeout_s=connect_timeout_s,
        create_missing=create_missing,
        events=events,
    )


async def check_store(
    url: str,
    *,
    driver: Driver = "asyncmy",
    connect_timeout_s: float = 5.0,
    galera_multi_writer: bool = False,
    node_timeout_ms: int | None = None,
) -> Verdict | None:
    """The store guard's verdict on the MySQL server `url` names, without refusing anything
    (``infinite-scheduler store check``); None for SQLite, which the guard does not judge.
    With `node_timeout_ms`, the engines live on the store count too (on Galera: which node
    they write through)."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        return None
    from repos.mysql.driver import Executor
    from repos.mysql.identity import check_server

    executor = Executor(target, driver=driver, pool_size=1, connect_timeout_s=connect_timeout_s)
    await executor.open()
    try:
        return await check_server(
            executor, galera_multi_writer=galera_multi_writer, node_timeout_ms=node_timeout_ms
        )
    finally:
        await executor.close()
