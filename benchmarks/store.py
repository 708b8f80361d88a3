"""The databases the workloads run in: made per run as ``ist_bench_*``, dropped after it.

Besides the repository (the engine's own adapter), the ceiling and the storage workloads talk
to MariaDB through the bare driver: :class:`Bare` is that thin connection, with no pool, no
retries and no engine code between the statement and the server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import Options
from repos.base import ShardingRepository, ShardPolicy
from repos.examples import SMS
from repos.mysql import sql
from repos.registry import create_store, make_repository
from repos.shards import ShardBounds
from repos.urls import Driver

MYSQL_HOST = "127.0.0.1"
#: Another server for a quiet measurement (one that no test suite shares): BENCH_MYSQL_PORT.
MYSQL_PORT = int(os.environ.get("BENCH_MYSQL_PORT", "3306"))
MYSQL_USER = "root"
#: The engine's default shard policy (one shard per UTC day), which the bench configs keep.
POLICY = ShardPolicy()


def database_name(workload: str) -> str:
    return f"ist_bench_{workload}_{os.getpid()}"


def store_url(opts: Options, database: str) -> str:
    if opts.is_mysql:
        return f"mysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{database}"
    return f"sqlite:///{opts.workdir / database}.db"


@asynccontextmanager
async def bench_store(opts: Options, workload: str) -> AsyncIterator[str]:
    """A fresh, empty store for one run; yields its URL and drops it afterwards.

    Made here: the adapters and the engine open only a store that exists (create_missing off).
    """
    database = database_name(workload)
    await drop_store(opts, database)
    url = store_url(opts, database)
    await create_store(url, driver=_driver(opts))
    try:
        yield url
    finally:
        await drop_store(opts, database)


async def drop_store(opts: Options, database: str) -> None:
    if not opts.is_mysql:
        _remove_sqlite_files(opts.workdir / database)
        return
    async with bare(opts.driver, None) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS `{database}`")


def _remove_sqlite_files(stem: Path) -> None:
    for suffix in (".db", ".db-wal", ".db-shm"):
        Path(f"{stem}{suffix}").unlink(missing_ok=True)


def make_repo(opts: Options, url: str, *, pool_size: int = 4) -> ShardingRepository[Any, Any]:
    """The engine's own adapter for the example SMS entity, as the engine would build it."""
    return make_repository(
        url,
        SMS,
        POLICY,
        layout="partitioned" if opts.layout == "partitioned" else "multi-table",
        driver=_driver(opts),
        pool_size=pool_size,
        batch_size=opts.batch_size,
    )


def _driver(opts: Options) -> Driver:
    return "aiomysql" if opts.driver == "aiomysql" else "asyncmy"


@asynccontextmanager
async def opened(
    repo: ShardingRepository[Any, Any],
) -> AsyncIterator[ShardingRepository[Any, Any]]:
    await repo.open()
    try:
        yield repo
    finally:
        await repo.close()


class Bare:
    """One autocommit connection of the bare driver (asyncmy or aiomysql, same API)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(
        self, statement: str, args: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> int:
        async with self.conn.cursor() as cursor:
            await cursor.execute(statement, args or None)
            return int(cursor.rowcount)

    async def fetch_all(
        self, statement: str, args: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[Any]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(statement, args or None)
            return list(await cursor.fetchall())

    async def begin(self) -> None:
        await self.conn.begin()

    async def commit(self) -> None:
        await self.conn.commit()


@asynccontextmanager
async def bare(driver: str, database: str | None) -> AsyncIterator[Bare]:
    kwargs: dict[str, Any] = {
        "host": MYSQL_HOST,
        "port": MYSQL_PORT,
        "user": MYSQL_USER,
        "password": "",
        "autocommit": True,
        "init_command": sql.SESSION_INIT,  # the adapter's own session settings
    }
    if database is not None:
        kwargs["db"] = database
    if driver == "aiomysql":
        import aiomysql

        conn = await aiomysql.connect(**kwargs)
    else:
        import asyncmy

        conn = await asyncmy.connect(**kwargs)
    try:
        yield Bare(conn)
    finally:
        conn.close()


def shard_target(layout: str, bounds: ShardBounds) -> tuple[str, str, tuple[int, ...]]:
    """Where the adapter writes a shard's rows: (insert target, statement target, extra values).

    Mirrors repos/mysql/layouts.py: a table ``sms_YYYYMMDD``, or the table ``sms`` with its
    partition ``pYYYYMMDD`` and the extra ``shard_at`` column.
    """
    prefix = SMS.table_prefix
    if layout == "partitioned":
        return f"`{prefix}`", f"`{prefix}` PARTITION (`p{bounds.suffix}`)", (bounds.start_ms,)
    table = f"`{prefix}_{bounds.suffix}`"
    return table, table, ()


def sql_names() -> dict[str, str]:
    """The SMS entity's id and sharding-time columns, as the sql templates name them."""
    return {"id": SMS.id_field, "at": SMS.time_field}
