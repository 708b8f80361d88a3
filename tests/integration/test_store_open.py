"""Opening the store: a server that never answers, a store that does not exist, `store init`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncmy
import pytest

from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import PayloadTooLarge, StoreMissing, StoreUnavailable
from infinite_scheduler.jobs import JobContext
from repos.base import ShardingRepository, ShardPolicy
from repos.entity import PAYLOAD_BYTES_CEILING
from repos.examples import SMS, SmsEntity
from repos.mysql.literals import ROW_OVERHEAD, STATEMENT_OVERHEAD
from repos.registry import make_repository
from repos.urls import Driver
from tests.cli_in_process import cli

pytestmark = pytest.mark.timeout(60)
DRIVERS: tuple[Driver, ...] = ("asyncmy", "aiomysql")
Repo = ShardingRepository[Any, Any]


class SilentServer(Protocol):
    """tests/conftest.py's `silent_server`: accepts connections on 127.0.0.1, never answers."""

    port: int
    accepted: int
    connected: asyncio.Event


def mysql_url(database: str, port: int = 3306) -> str:
    return f"mysql://root@127.0.0.1:{port}/{database}"


async def ignore(ctx: JobContext[Any]) -> None:
    pass


def engine_on(url: str, **store: Any) -> InfiniteScheduler:
    engine = InfiniteScheduler(load_config(None, store={"url": url, **store}, metrics_port=0))
    engine.register(SMS, ignore)
    return engine


# -- connect_timeout_s ----------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_server_that_never_answers_fails_the_start_after_connect_timeout_s(
    silent_server: SilentServer, driver: Driver
) -> None:
    engine = engine_on(mysql_url("jobs", silent_server.port), driver=driver, connect_timeout_s=1)
    with pytest.raises(StoreUnavailable) as caught:
        async with asyncio.timeout(15):  # without the bound the handshake read hangs for minutes
            async with engine:
                pass
    assert str(caught.value) == (
        f"connect (127.0.0.1:{silent_server.port} unreachable) failed: timed out after 1 s"
    )
    assert caught.value.address == f"127.0.0.1:{silent_server.port}"
    assert silent_server.accepted == 1


# -- a store that does not exist ------------------------------------------------------------


def hint(store: str) -> str:
    return (
        f"open failed: {store} does not exist; create it with `infinite-scheduler store init`, "
        "or set store.create_missing = true"
    )


async def tables(database: str) -> list[str]:
    """The tables of a MySQL database."""
    conn = await asyncmy.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (database,),
            )
            return sorted(name for (name,) in await cur.fetchall())
    finally:
        conn.close()


async def schemata(name: str) -> list[tuple[Any, ...]]:
    """The database's row in information_schema (name, default charset), if it exists."""
    conn = await asyncmy.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT schema_name, default_character_set_name FROM information_schema.schemata"
                " WHERE schema_name = %s",
                (name,),
            )
            return list(await cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
async def typo_database(mysql_database: str) -> AsyncIterator[str]:
    """The name of a database that does not exist (one letter off an existing one); dropped
    after the test in case something created it."""
    typo = mysql_database + "x"
    yield typo
    conn = await asyncmy.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{typo}`")
    finally:
        conn.close()


@pytest.mark.mysql
@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_missing_mysql_database_is_an_error_and_is_not_created(
    typo_database: str, driver: Driver
) -> None:
    engine = engine_on(mysql_url(typo_database), driver=driver)
    with pytest.raises(StoreMissing) as caught:
        async with engine:
            pass
    assert str(caught.value) == hint(f"database {typo_database!r} on 127.0.0.1:3306")
    assert await schemata(typo_database) == []


@pytest.mark.parametrize("where", ["store.db", "no/such/dir/store.db"])
async def test_a_missing_sqlite_file_is_an_error_and_nothing_is_created(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / where
    engine = engine_on(f"sqlite:///{path}")
    with pytest.raises(StoreMissing) as caught:
        async with engine:
            pass
    assert str(caught.value) == hint(f"SQLite file {str(path)!r}")
    assert os.listdir(tmp_path) == []


@pytest.mark.mysql
@pytest.mark.parametrize("driver", DRIVERS)
async def test_create_missing_makes_the_mysql_database(typo_database: str, driver: Driver) -> None:
    async with engine_on(mysql_url(typo_database), driver=driver, create_missing=True):
        pass
    assert await schemata(typo_database) == [(typo_database, "utf8mb4")]
    assert await tables(typo_database) == [
        "blockouts",
        "category_pauses",
        "dependencies",
        "leases",
        "nodes",
        "revocations",
        "schedules",
    ]  # the store's own; shards later


async def test_create_missing_makes_the_sqlite_file_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    async with engine_on(f"sqlite:///{path}", create_missing=True) as engine:
        await engine.schedule(
            [SmsEntity(id=1, scheduled_at=datetime.now(UTC), phone="+1", message="m")]
        )
    assert path.is_file()


def store_init(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    return cli("store", "init", "--config", str(config))


@pytest.mark.mysql
async def test_store_init_creates_the_mysql_database_once(
    tmp_path: Path, typo_database: str
) -> None:
    first = store_init(tmp_path, mysql_url(typo_database))
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == f"created database {typo_database!r} on 127.0.0.1:3306\n"
    assert await schemata(typo_database) == [(typo_database, "utf8mb4")]
    assert await tables(typo_database) == [
        "api_tokens",
        "audit_log",
        "blockouts",
        "category_pauses",
        "leases",
        "nodes",
        "revocations",
        "schedules",
    ]  # the store's own
    again = store_init(tmp_path, mysql_url(typo_database))
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == (
        f"database {typo_database!r} on 127.0.0.1:3306 already exists; nothing to do\n"
    )
    async with engine_on(mysql_url(typo_database)):  # create_missing off: it opens
        pass


async def test_store_init_creates_the_sqlite_file_and_its_directory_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "data" / "store.db"
    first = store_init(tmp_path, f"sqlite:///{path}")
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == (
        f"created SQLite file {str(path)!r} (and directory {str(tmp_path / 'var')!r})\n"
    )
    with closing(sqlite3.connect(path)) as db:  # made with the adapter's settings
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        names = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert {("nodes",), ("leases",)} <= set(names)  # the store's own; shards come later
    again = store_init(tmp_path, f"sqlite:///{path}")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"SQLite file {str(path)!r} already exists; nothing to do\n"
    async with engine_on(f"sqlite:///{path}") as engine:  # create_missing off: it opens
        await engine.schedule(
            [SmsEntity(id=1, scheduled_at=datetime.now(UTC), phone="+1", message="m")]
        )


# -- payload size, capped at open by what the server takes ----------------------------------


def sms_of_payload(key: int, size: int) -> SmsEntity:
    """An SMS due in an hour whose encoded payload is exactly `size` bytes."""
    at = datetime.now(UTC) + timedelta(hours=1)
    bare = len(SMS.encode(SmsEntity(id=key, scheduled_at=at, phone="+1", message="")).payload)
    return SmsEntity(id=key, scheduled_at=at, phone="+1", message="x" * (size - bare))


async def max_allowed_packet() -> int:
    conn = await asyncmy.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@max_allowed_packet")
            [(packet,)] = await cur.fetchall()
            return int(packet)
    finally:
        conn.close()


@asynccontextmanager
async def opened(url: str, driver: Driver, **options: Any) -> AsyncIterator[Repo]:
    repo = make_repository(url, SMS, ShardPolicy(), driver=driver, **options)
    await repo.open()
    try:
        yield repo
    finally:
        await repo.close()


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.mysql
@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_17_mb_payload_is_refused_by_the_limit_before_the_server_sees_it(
    mysql_database: str, driver: Driver
) -> None:
    async with opened(mysql_url(mysql_database), driver) as repo:
        batch = [sms_of_payload(1, 100), sms_of_payload(2, 17_000_000)]
        with pytest.raises(PayloadTooLarge) as caught:
            await repo.insert(batch, now_ms=now_ms())
        assert str(caught.value) == (
            "entity 'sms', job 2, field 'payload': encoded size 17000000 bytes is over the limit"
            " of 1048576 bytes"
        )
        assert await repo.get(1) == [] and await repo.list_shards() == []


@pytest.mark.mysql
@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_limit_above_what_the_server_takes_is_lowered_to_it_at_open(
    mysql_database: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    packet = await max_allowed_packet()
    cap = (packet - STATEMENT_OVERHEAD - ROW_OVERHEAD) // 2  # hex literals: 2 bytes per byte
    async with opened(
        mysql_url(mysql_database), driver, max_payload_bytes=PAYLOAD_BYTES_CEILING
    ) as repo:
        assert repo.max_payload_bytes == cap < PAYLOAD_BYTES_CEILING
        assert (
            f"sms: max_payload_bytes {PAYLOAD_BYTES_CEILING} lowered to {cap}: the server's"
            f" max_allowed_packet is {packet} and payloads travel hex-encoded, at twice their"
            " size"
        ) in caplog.messages
        with pytest.raises(PayloadTooLarge) as caught:
            await repo.insert([sms_of_payload(1, cap + 1)], now_ms=now_ms())
        assert caught.value.limit == cap
        at_cap = sms_of_payload(2, cap)  # the largest the server takes: stored whole
        assert await repo.insert([at_cap], now_ms=now_ms()) == 1
        [row] = await repo.get(2)
        assert row.payload == SMS.encode(at_cap).payload
