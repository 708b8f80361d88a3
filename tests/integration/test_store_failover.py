"""A multi-host store URL on the real MariaDB: the store writes through the first host that
answers, every pool of the URL through the same one, and a conflict run again is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from repos.base import ShardPolicy
from repos.errors import StoreUnavailable
from repos.examples import SMS
from repos.mysql.driver import Executor
from repos.registry import make_membership, make_repository
from repos.urls import MysqlUrl, parse_store_url

if TYPE_CHECKING:
    from conftest import MariaDB, RecordedEvents

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(60)]
DEAD = "127.0.0.1:1"  # nothing listens there: refused at once


def multi_host(mariadb: MariaDB, database: str, *first: str) -> str:
    hosts = ",".join([*first, f"{mariadb.host}:{mariadb.port}"])
    return f"mysql://root@{hosts}/{database}"


async def test_a_dead_first_host_moves_every_pool_of_the_url_to_the_next(
    mariadb: MariaDB, mysql_database: str, recorded_events: Callable[[], RecordedEvents]
) -> None:
    url, live = multi_host(mariadb, mysql_database, DEAD), f"{mariadb.host}:{mariadb.port}"
    repo_events, membership_events = recorded_events(), recorded_events()
    membership = make_membership(url, events=membership_events)
    repo = make_repository(url, SMS, ShardPolicy(), events=repo_events)
    await membership.open()
    try:
        await repo.open()
        try:
            assert live in repr(repo) and live in repr(membership)
            joined = await membership.join("n1", host="h", pid=1, version="t", node_timeout_ms=9)
            assert joined.epoch >= 1
        finally:
            await repo.close()
    finally:
        await membership.close()
    # One switch, made by the first pool opened; the repository opened on the new writer
    # straight away (listening from then on: the engine gives both the same listener).
    assert membership_events.failovers == [(DEAD, live, membership_events.failovers[0][2])]
    assert "[2003]" in membership_events.failovers[0][2]
    assert membership_events.writers == [DEAD, live]
    assert (repo_events.failovers, repo_events.writers) == ([], [live])


async def test_no_host_answering_fails_naming_the_host_tried(mariadb: MariaDB) -> None:
    url = parse_store_url("mysql://root@127.0.0.1:1,127.0.0.1:2/nothing")
    assert isinstance(url, MysqlUrl)
    executor = Executor(url, connect_timeout_s=2)
    with pytest.raises(StoreUnavailable) as caught:
        await executor.open()
    assert caught.value.address in (DEAD, "127.0.0.1:2")
    assert "unreachable" in str(caught.value)


async def test_a_single_host_url_has_no_selector(mariadb: MariaDB, mysql_database: str) -> None:
    """A plain URL keeps its one pool and the hot path never looks at a selector."""
    url = parse_store_url(mariadb.url(mysql_database))
    assert isinstance(url, MysqlUrl)
    executor = Executor(url)
    await executor.open()
    try:
        assert executor._selector is None
        assert await executor.run("t", lambda tx: tx.fetch_all("SELECT 1")) == [(1,)]
    finally:
        await executor.close()


async def test_a_deadlock_is_run_again_and_reported(
    mariadb: MariaDB, mysql_database: str, recorded_events: Callable[[], RecordedEvents]
) -> None:
    """A real InnoDB deadlock: the body's first attempt locks row 1 then row 2, while another
    transaction that holds row 2 (and wrote more, so it is not the victim) waits for row 1."""
    url = parse_store_url(mariadb.url(mysql_database))
    assert isinstance(url, MysqlUrl)
    events = recorded_events()
    executor, other = Executor(url, events=events), Executor(url)
    await executor.open()
    await other.open()
    table = "CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"
    await executor.execute_ddl("t", table)
    await executor.run("t", lambda tx: tx.execute("INSERT INTO t VALUES (1, 0), (2, 0)"))
    attempts: list[int] = []

    async def deadlocking(tx: Any) -> int:
        attempts.append(1)
        await tx.execute("UPDATE t SET v = v + 1 WHERE id = 1")
        if len(attempts) == 1:
            async with other.transaction("holder") as holder:
                await holder.execute("UPDATE t SET v = v + 10 WHERE id = 2")
                await holder.execute("INSERT INTO t SELECT id + 100, v FROM t")  # weigh it
                waiting = asyncio.ensure_future(
                    holder.execute("UPDATE t SET v = v + 10 WHERE id = 1")
                )
                await asyncio.sleep(0.3)
                try:
                    await tx.execute("UPDATE t SET v = v + 1 WHERE id = 2")
                finally:
                    await waiting
        return int(await tx.execute("UPDATE t SET v = v + 1 WHERE id = 2"))

    try:
        assert await executor.run("claim", deadlocking) == 1
        assert len(attempts) == 2
        assert events.conflicts == ["claim"]
    finally:
        await executor.close()
        await other.close()
