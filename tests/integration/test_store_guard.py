"""The store guard on real servers: the shared MariaDB and the local Galera cluster accepted
by the membership's open and by `store check` (the refusals: tests/unit/test_server_guard.py,
on recorded identities)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from repos.cluster import Membership, NodeState
from repos.errors import UnsafeStore
from repos.registry import check_store, make_membership
from tests.cli_in_process import cli

if TYPE_CHECKING:
    from conftest import Galera

pytestmark = pytest.mark.timeout(60)


def store_check(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    return cli("store", "check", "--config", str(config))


@pytest.mark.mysql
async def test_the_shared_mariadb_is_accepted(mariadb: Any, mysql_database: str) -> None:
    verdict = await check_store(mariadb.url(mysql_database))
    assert verdict is not None and verdict.accepted
    assert verdict.identity.flavor == "MariaDB"
    assert verdict.identity.version_tuple() >= (10, 6, 0)  # type: ignore[operator]
    assert not verdict.identity.galera
    assert verdict.warnings == ()


@pytest.mark.mysql
def test_store_check_prints_the_shared_mariadb_accepted(
    tmp_path: Path, mariadb: Any, mysql_database: str
) -> None:
    done = store_check(tmp_path, mariadb.url(mysql_database))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "  server   MariaDB"
    assert lines[2].startswith("  version  10.")
    assert lines[4] == "  galera   no"
    assert lines[-1] == "ACCEPTED"


async def test_sqlite_is_not_judged(tmp_path: Path) -> None:
    assert await check_store(f"sqlite:///{tmp_path}/store.db") is None


@pytest.mark.galera
async def test_a_galera_node_is_accepted_with_the_failover_warning(
    galera: Galera, galera_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = galera.node_url(1, galera_database)
    verdict = await check_store(url)
    assert verdict is not None and verdict.accepted
    found = verdict.identity
    assert (found.galera, found.wsrep_cluster_size, found.wsrep_ready) == (True, 3, True)
    assert found.wsrep_local_state_comment == "Synced"
    hosts = ",".join(f"{h}:{p}" for h, p in galera.nodes)
    # In the order the members joined: a node restarted by another test comes last.
    assert sorted(found.wsrep_incoming_addresses.split(",")) == sorted(hosts.split(","))

    membership = make_membership(url)
    with caplog.at_level(logging.WARNING, logger="repos.mysql.identity"):
        await membership.open()
    await membership.close()
    # The one about the URL; n1 may also have a conflict behind it from another test (the
    # guard then warns of those too: tests/unit/test_server_guard.py).
    [warning] = [
        r
        for r in caplog.records
        if r.name == "repos.mysql.identity"
        and "names one host of a 3-node Galera cluster" in r.getMessage()
    ]
    assert warning.__dict__["store"] == f"127.0.0.1:{galera.ports[0]}"


@pytest.mark.galera
async def test_declared_multi_writer_is_accepted_and_logged(
    galera: Galera, galera_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    membership = make_membership(galera.node_url(2, galera_database), galera_multi_writer=True)
    with caplog.at_level(logging.WARNING, logger="repos.mysql.identity"):
        await membership.open()
    await membership.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "repos.mysql.identity"]
    assert len(messages) == 1 and "multi-writer Galera" in messages[0]


@pytest.mark.galera
def test_store_check_prints_the_galera_node(
    tmp_path: Path, galera: Galera, galera_database: str
) -> None:
    done = store_check(tmp_path, galera.node_url(3, galera_database))
    assert done.returncode == 0, done.stderr
    assert "  galera   node n3, cluster size 3, state Synced, ready ON\n" in done.stdout
    assert "  warning  the store URL names one host of a 3-node Galera cluster" in done.stdout
    assert done.stdout.endswith("ACCEPTED\n")


@pytest.mark.galera
async def test_a_join_through_another_node_than_the_live_engines_is_refused_unless_declared(
    tmp_path: Path, galera: Galera, galera_database: str
) -> None:
    first = make_membership(galera.node_url(1, galera_database))
    await first.open()
    second = make_membership(galera.node_url(2, galera_database))
    await second.open()
    declared = make_membership(galera.node_url(2, galera_database), galera_multi_writer=True)
    await declared.open()
    try:
        a = await join(first, "a")
        with pytest.raises(UnsafeStore) as refused:
            await join(second, "b")
        message = str(refused.value)
        assert message.startswith(f"join failed: MariaDB {galera_version(galera)} (")
        assert (
            f"at 127.0.0.1:{galera.ports[1]} is refused as a store: this engine would write"
            f" through Galera node n2 while live engine nodes write through another: a (epoch {a})"
            " through n1."
        ) in message
        assert [(n.node_id, n.epoch) for n in (await first.list_nodes()).nodes] == [("a", a)]
        checked = store_check(tmp_path, galera.node_url(2, galera_database))
        assert checked.returncode == 3
        assert checked.stdout.splitlines()[-1].startswith(
            f"REFUSED: this engine would write through Galera node n2 while live engine nodes"
            f" write through another: a (epoch {a}) through n1."
        )
        # Through the same node, or declared multi-writer: welcome.
        c = await join(first, "c")
        await join(declared, "d")
        assert writers(galera, galera_database) == {"a": "n1", "c": "n1", "d": "n2"}
        # Once the engines on n1 left, n2 is the one writer node.
        for epoch in (a, c):
            await first.set_state(epoch, NodeState.LEFT)
        await applied_on(galera, 2, galera_database, f"epoch IN ({a}, {c}) AND state IN (0, 1)")
        await join(second, "b")
    finally:
        for membership in (first, second, declared):
            await membership.close()


async def applied_on(galera: Galera, n: int, database: str, none_where: str) -> None:
    """Wait until node `n` has applied what another node committed (Galera applies a replicated
    write a moment after the COMMIT returns: a read on another node may not see it yet)."""
    for _ in range(100):
        [(count,)] = galera.sql(n, f"SELECT COUNT(*) FROM `{database}`.nodes WHERE {none_where}")
        if int(count) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"node {n} never applied the change: {none_where}")


def galera_version(galera: Galera) -> str:
    [(version,)] = galera.sql(1, "SELECT VERSION()")
    return str(version)


def writers(galera: Galera, database: str) -> dict[str, str]:
    rows = galera.sql(
        1, f"SELECT node_id, writer FROM `{database}`.nodes WHERE state IN (0, 1) ORDER BY epoch"
    )
    return {str(node_id): str(writer) for node_id, writer in rows}


async def join(membership: Membership, node_id: str) -> int:
    joined = await membership.join(
        node_id, host="host-1", pid=100, version="1.2.3", node_timeout_ms=10_000
    )
    return joined.epoch
