"""The local Galera cluster of scripts/galera.sh, as the `galera` fixture gives it to tests:
three members, all Synced, writes replicated synchronously, and a node crashed with kill -9
rejoining (IST) with what it missed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Galera

pytestmark = pytest.mark.galera


def wsrep(galera: Galera, n: int) -> dict[str, str]:
    rows = galera.sql(
        n,
        "SHOW GLOBAL STATUS WHERE Variable_name IN"
        " ('wsrep_cluster_size', 'wsrep_local_state_comment', 'wsrep_ready')",
    )
    return {str(name): str(value) for name, value in rows}


def test_three_members_all_synced(galera: Galera) -> None:
    for n in (1, 2, 3):
        assert wsrep(galera, n) == {
            "wsrep_cluster_size": "3",
            "wsrep_local_state_comment": "Synced",
            "wsrep_ready": "ON",
        }, f"node {n}"


def test_a_row_written_on_n1_is_read_on_n3(galera: Galera, galera_database: str) -> None:
    galera.sql(1, f"CREATE TABLE `{galera_database}`.t (id INT PRIMARY KEY, v VARCHAR(20))")
    galera.sql(1, f"INSERT INTO `{galera_database}`.t VALUES (1, 'from n1')")
    # Galera certifies the COMMIT on every node before it returns; wsrep_sync_wait makes n3's
    # read wait until n3 has applied it.
    rows = galera.sql(3, "SET SESSION wsrep_sync_wait = 1", f"SELECT * FROM `{galera_database}`.t")
    assert rows == [(1, "from n1")]


def test_a_killed_node_rejoins_with_what_it_missed(galera: Galera, galera_database: str) -> None:
    galera.sql(1, f"CREATE TABLE `{galera_database}`.t (id INT PRIMARY KEY)")
    galera.kill(3)
    assert f"n3 127.0.0.1:{galera.ports[2]} stopped" in galera.status()
    # The survivors evict n3 once it misses evs.suspect_timeout; n1 then writes without it.
    deadline = time.monotonic() + 30
    while wsrep(galera, 1)["wsrep_cluster_size"] != "2":
        assert time.monotonic() < deadline, "n1 still counts n3 as a member"
        time.sleep(0.2)
    galera.sql(1, f"INSERT INTO `{galera_database}`.t VALUES (7)")

    transfers = galera.error_log(3).count("IST received")
    galera.start(3)

    assert wsrep(galera, 3)["wsrep_local_state_comment"] == "Synced"
    assert wsrep(galera, 1)["wsrep_cluster_size"] == "3"
    assert galera.sql(3, f"SELECT id FROM `{galera_database}`.t") == [(7,)]
    # What n3 missed came as an incremental state transfer, not a full copy.
    assert galera.error_log(3).count("IST received") == transfers + 1
