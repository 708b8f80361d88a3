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

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import Engines, MariaDB, MysqlDatabases, StoreFor, StoreProxy, WallClock

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
