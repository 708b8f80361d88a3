"""Store URLs and the one place that picks an adapter for them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from repos.base import ShardingRepository, ShardPolicy
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, EntitySpec
from repos.shards import check_identifier

Layout = Literal["multi-table", "partitioned"]
Driver = Literal["asyncmy", "aiomysql"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SqliteUrl:
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""

    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MysqlUrl:
    """``mysql://user:password@host:port/database``; the password never shows in repr."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_store_url(url: str) -> SqliteUrl | MysqlUrl:
    """Parse a store URL; raise ValueError saying what is wrong and what is expected."""
    expected = "expected sqlite:///PATH or mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite://") :]
        if not path.startswith("/") or len(path) < 2:
            raise ValueError(f"sqlite URL has no path; {expected}")
        return SqliteUrl(path=path[1:])
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"unknown scheme {parts.scheme!r}; {expected}")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError(f"port is not a number; {expected}") from None
    database = parts.path.lstrip("/")
    if not parts.hostname or not parts.username or not database:
        raise ValueError(f"host, user and database are required; {expected}")
    check_identifier("database name", database)
    return MysqlUrl(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
    )


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
    SQLite file and its directory. The shard tables inside are the engine's business."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite import create_file

        return await asyncio.to_thread(create_file, Path(target.path))
    from repos.mysql.driver import Executor

    executor = Executor(target, driver=driver, connect_timeout_s=connect_timeout_s)
    created = await executor.create_database()
    return StoreCreated(store=f"database {target.database!r} on {target.address}", created=created)


def make_repository(
    url: str,
    spec: EntitySpec[Any, Any],
    policy: ShardPolicy,
    *,
    layout: Layout = "multi-table",
    driver: Driver = "asyncmy",
    pool_size: int = 10,
    pool_recycle_s: int = 3600,
    batch_size: int = 1000,
    connect_timeout_s: float = 5.0,
    create_missing: bool = False,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> ShardingRepository[Any, Any]:
    """Build (not open) the adapter that serves `url` for one entity type. The store must exist
    unless `create_missing`; `connect_timeout_s` bounds a MySQL connect, handshake included."""
    target = parse_store_url(url)
    if isinstance(target, SqliteUrl):
        from repos.sqlite import SqliteRepository

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
    )
