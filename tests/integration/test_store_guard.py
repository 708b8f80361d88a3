"""The store guard on real servers: the shared MariaDB and the local Galera cluster accepted
by the membership's open and by `store check` (the refusals: tests/unit/test_server_guard.py,
on recorded identities)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from repos.registry import check_store, make_membership

if TYPE_CHECKING:
    from conftest import Galera

pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "infinite_scheduler"]


def store_check(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    return subprocess.run(
        [*CLI, "store", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


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
    assert found.wsrep_incoming_addresses.split(",") == sorted(hosts.split(","))

    membership = make_membership(url)
    with caplog.at_level(logging.WARNING, logger="repos.mysql.identity"):
        await membership.open()
    await membership.close()
    [warning] = [r for r in caplog.records if r.name == "repos.mysql.identity"]
    assert "names one host of a 3-node Galera cluster" in warning.getMessage()
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
