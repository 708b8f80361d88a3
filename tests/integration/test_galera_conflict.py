"""A certification conflict on the real Galera cluster, made on purpose: the store's retry
runs the loser again, reports it, and the row holds both writes.

Deterministic where the two-writer engines of tests/e2e/test_galera_failover.py depend on
their claims overlapping in time: here the other node's write lands while the first
transaction holds the row."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from repos.mysql.driver import Executor
from repos.urls import MysqlUrl, parse_store_url

if TYPE_CHECKING:
    from conftest import Galera, RecordedEvents

pytestmark = [pytest.mark.galera, pytest.mark.timeout(120)]


def executor_on(galera: Galera, n: int, database: str, **kwargs: Any) -> Executor:
    url = parse_store_url(galera.node_url(n, database))
    assert isinstance(url, MysqlUrl)
    return Executor(url, **kwargs)


async def test_a_write_that_loses_certification_is_run_again_and_reported(
    galera: Galera, galera_database: str, recorded_events: Callable[[], RecordedEvents]
) -> None:
    events = recorded_events()
    on_n1, on_n2 = (
        executor_on(galera, 1, galera_database, events=events),
        executor_on(galera, 2, galera_database),
    )
    await on_n1.open()
    await on_n2.open()
    try:
        await on_n1.execute_ddl("t", "CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        await on_n1.run("t", lambda tx: tx.execute("INSERT INTO t VALUES (1, 0)"))
        attempts = 0

        async def add_one(tx: Any) -> int:
            nonlocal attempts
            attempts += 1
            await tx.execute("UPDATE t SET v = v + 1 WHERE id = 1")
            if attempts == 1:
                # n2 commits a write of the same row: certified first, it aborts n1's.
                await on_n2.run(
                    "other", lambda t: t.execute("UPDATE t SET v = v + 10 WHERE id = 1")
                )
            return attempts

        assert await on_n1.run("claim", add_one) == 2
        assert events.conflicts == ["claim"]
        assert await on_n1.run("t", lambda tx: tx.fetch_all("SELECT v FROM t")) == [(11,)]
    finally:
        await on_n1.close()
        await on_n2.close()
