"""An engine on a multi-host store URL whose writer goes away mid-run: it moves to the next
host without a restart, loses nothing and fires nothing twice.

On the shared MariaDB the two "hosts" are two proxies in this process in front of the same
server: cutting the first is its writer dying, just after a claim's COMMIT reached the server
and its reply was lost (a claim in doubt). tests/e2e/test_galera_failover.py does it with real
Galera nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from repos.base import Status
from repos.errors import StoreUnavailable
from repos.mysql.driver import Executor
from repos.urls import MysqlUrl, parse_store_url

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import (
        Engines,
        MariaDB,
        MysqlDatabases,
        RecordedEvents,
        StoreFor,
        StoreProxy,
        WallClock,
    )

pytestmark = [pytest.mark.timeout(90), pytest.mark.mysql]


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_the_engine_moves_to_the_next_host_when_its_writer_goes(
    store_proxies: Callable[[str], Awaitable[StoreProxy]],
    store_for: StoreFor,
    mariadb: MariaDB,
    mysql_databases: MysqlDatabases,
    engines: Engines,
    tmp_path: Path,
    wall: WallClock,
) -> None:
    first, second = await store_proxies("refuse"), await store_proxies("refuse")
    database = await mysql_databases()
    url = f"mysql://root@{first.address},{second.address}/{database}"
    store = await store_for(url, mariadb.url(database))
    t0 = wall.now_ms()
    seeded = await store.seed(t0 + 1_000 + i * 5 for i in range(1_200))  # due over 6 s
    engine = engines.start(store.config_path)
    await engine.wait_ready()

    await wall.sleep_until(t0 + 2_500)
    first.trap_next_claim_commit()
    assert await wait_for(lambda: first.trap_fired, 3), "no claim COMMIT went by"
    await first.cut()

    missing = await engine.wait_fired(seeded, 20)
    assert not missing, f"{len(missing)} never fired:\n{engine.stderr()}"
    assert engine.alive(), engine.stderr()
    fires = engine.fires_by_id()
    assert [i for i, f in fires.items() if len(f) > 1] == []
    rows = await store.rows(min(seeded.values()), max(seeded.values()) + 1)
    assert {r.status for r in rows} == {Status.DONE} and len(rows) == len(seeded)
    assert f"store writer moves from {first.address} to {second.address}" in engine.stderr()
    assert "released" in engine.stderr(), "the claim in doubt was not released"
    assert second.accepted > 0
    assert await engine.stop() == 0, engine.stderr()


async def test_a_failure_on_the_old_writer_does_not_move_the_new_one_on(
    store_proxies: Callable[[str], Awaitable[StoreProxy]],
    mysql_databases: MysqlDatabases,
    recorded_events: Callable[[], RecordedEvents],
) -> None:
    """A call that began on the writer that died fails after another call has moved the
    executor to the next host: its failure is the dead host's, so the writer stays put (it was
    blamed on the new writer, which the selector then left for a third host that was fine)."""
    a, b, c = [await store_proxies("refuse") for _ in range(3)]
    database = await mysql_databases()
    url = parse_store_url(f"mysql://root@{a.address},{b.address},{c.address}/{database}")
    assert isinstance(url, MysqlUrl)
    events = recorded_events()
    executor, other = Executor(url, events=events), Executor(url)
    await executor.open()
    await other.open()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            async with executor.transaction("begun on a") as tx:
                await tx.execute("SELECT 1")
                await a.cut()
                with pytest.raises(StoreUnavailable):
                    await other.run("finds a gone", lambda t: t.execute("SELECT 1"))
                # A call beside the first one follows the writer to b.
                assert await executor.run("on b", lambda t: t.fetch_all("SELECT 1")) == [(1,)]
                await tx.execute("SELECT 1")  # the first call's connection to a is gone
        assert caught.value.address == a.address
        assert [(f, t) for f, t, _ in events.failovers] == [(a.address, b.address)]
        assert executor.address == b.address
        assert await executor.run("still on b", lambda t: t.fetch_all("SELECT 1")) == [(1,)]
        assert c.accepted == 0
    finally:
        await executor.close()
        await other.close()
