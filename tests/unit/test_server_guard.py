"""The store guard's verdict (repos/server_guard.py) on recorded server identities: what each
server said about itself (VERSION(), @@version_comment, wsrep variables and status)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from infinite_scheduler.cli import render_verdict
from repos.server_guard import GaleraWriter, ServerIdentity, judge, multi_writer_refusal

MARIADB_1011 = ServerIdentity(
    version="10.11.19-MariaDB-0+deb12u1",
    version_comment="Debian 12",
    wsrep_provider="none",
    wsrep_node_name="vm",
    wsrep_cluster_status="Disconnected",
)
GALERA_N1 = ServerIdentity(
    version="10.11.19-MariaDB-0+deb12u1",
    version_comment="Debian 12",
    wsrep_on=True,
    wsrep_provider="/usr/lib/galera/libgalera_smm.so",
    wsrep_node_name="n1",
    wsrep_cluster_size=3,
    wsrep_cluster_status="Primary",
    wsrep_local_state_comment="Synced",
    wsrep_ready=True,
    wsrep_incoming_addresses="127.0.0.1:3311,127.0.0.1:3312,127.0.0.1:3313",
)
MYSQL_8036 = ServerIdentity(version="8.0.36", version_comment="MySQL Community Server - GPL")
MYSQL_57 = ServerIdentity(version="5.7.44-log", version_comment="MySQL Community Server (GPL)")
MARIADB_105 = ServerIdentity(version="10.5.23-MariaDB-0+deb11u1", version_comment="Debian 11")
TIDB_75 = ServerIdentity(
    version="5.7.25-TiDB-v7.5.0",
    version_comment="TiDB Server (Apache License 2.0) Community Edition, MySQL 5.7 compatible",
)
PERCONA_80 = ServerIdentity(
    version="8.0.36-28",
    version_comment="Percona Server (GPL), Release 28, Revision 47601f19",
)
#: Aurora MySQL 3 reports the engine version in VERSION() on some releases.
AURORA_3 = ServerIdentity(version="8.0.mysql_aurora.3.05.2", version_comment="Source distribution")
AURORA_2 = ServerIdentity(version="5.7.12", version_comment="MySQL Community Server (GPL)")
AURORA_2_ENGINE = ServerIdentity(version="5.7.mysql_aurora.2.11.2")


@pytest.mark.parametrize(
    "identity",
    [MARIADB_1011, GALERA_N1, MYSQL_8036, PERCONA_80, AURORA_3],
    ids=["mariadb-10.11", "galera-3-nodes", "mysql-8.0.36", "percona-8.0", "aurora-3"],
)
def test_servers_with_skip_locked_are_accepted(identity: ServerIdentity) -> None:
    verdict = judge(identity, url_hosts=3, galera_multi_writer=False)
    assert verdict.accepted, verdict.refusals
    assert verdict.warnings == ()


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (TIDB_75, "TiDB parses the claim's SKIP LOCKED and ignores it"),
        (MYSQL_57, "MySQL 5.7.44 has no SKIP LOCKED, which the claim needs: use MySQL 8.0.1"),
        (
            MARIADB_105,
            "MariaDB 10.5.23 has no SKIP LOCKED, which the claim needs: use MariaDB 10.6.0",
        ),
        (AURORA_2, "MySQL 5.7.12 has no SKIP LOCKED"),
        (AURORA_2_ENGINE, "MySQL 5.7.12 has no SKIP LOCKED"),
    ],
    ids=["tidb-7.5", "mysql-5.7", "mariadb-10.5", "aurora-2", "aurora-2-engine-version"],
)
def test_servers_that_would_break_the_claim_are_refused(
    identity: ServerIdentity, reason: str
) -> None:
    verdict = judge(identity, url_hosts=1, galera_multi_writer=False)
    assert not verdict.accepted
    assert len(verdict.refusals) == 1
    assert reason in verdict.refusals[0]


def test_tidb_is_refused_whatever_version_it_claims() -> None:
    """TiDB says 5.7.25 or 8.0.11 depending on its settings; SKIP LOCKED is ignored in both."""
    tidb_80 = ServerIdentity(version="8.0.11-TiDB-v7.5.0", version_comment="TiDB Server")
    assert "TiDB" in judge(tidb_80, url_hosts=1, galera_multi_writer=False).refusals[0]


def test_the_first_versions_with_skip_locked_are_accepted() -> None:
    first = [ServerIdentity(version="8.0.1"), ServerIdentity(version="10.6.0-MariaDB")]
    last_without = [ServerIdentity(version="8.0.0"), ServerIdentity(version="10.5.99-MariaDB")]
    assert [judge(i, url_hosts=1, galera_multi_writer=False).accepted for i in first] == [1, 1]
    assert [judge(i, url_hosts=1, galera_multi_writer=False).accepted for i in last_without] == [
        0,
        0,
    ]


def test_mariadb_is_told_by_its_comment_and_its_old_compatibility_prefix() -> None:
    prefixed = ServerIdentity(version="5.5.5-10.5.9-MariaDB", version_comment="mariadb.org")
    assert prefixed.flavor == "MariaDB"
    assert prefixed.version_tuple() == (10, 5, 9)
    assert "MariaDB 10.5.9" in judge(prefixed, url_hosts=1, galera_multi_writer=False).refusals[0]


def test_a_version_the_guard_cannot_read_is_refused() -> None:
    verdict = judge(ServerIdentity(version="devel"), url_hosts=1, galera_multi_writer=False)
    assert "version 'devel' is not one this guard can read" in verdict.refusals[0]


def test_galera_through_one_host_warns_that_failover_needs_every_node() -> None:
    verdict = judge(GALERA_N1, url_hosts=1, galera_multi_writer=False)
    assert verdict.accepted
    assert verdict.warnings == (
        "the store URL names one host of a 3-node Galera cluster: the engine cannot fail over"
        " when that node stops; name every node, e.g."
        " mysql://USER@127.0.0.1:3311,127.0.0.1:3312,127.0.0.1:3313/DATABASE",
    )


def test_a_galera_node_alone_needs_no_multi_host_url() -> None:
    alone = replace(GALERA_N1, wsrep_cluster_size=1)
    assert judge(alone, url_hosts=1, galera_multi_writer=False).warnings == ()


def test_declared_multi_writer_galera_is_accepted_and_said() -> None:
    verdict = judge(GALERA_N1, url_hosts=1, galera_multi_writer=True)
    assert verdict.accepted
    assert len(verdict.warnings) == 1
    assert verdict.warnings[0].startswith("multi-writer Galera (store.galera_multi_writer)")


def test_conflicts_seen_by_an_undeclared_galera_node_are_named() -> None:
    """The node's certification failures show that someone writes through another node."""
    seen = replace(GALERA_N1, wsrep_local_cert_failures=4)
    verdict = judge(seen, url_hosts=3, galera_multi_writer=False)
    assert verdict.accepted
    assert "has seen 4 certification failures and 0 aborts" in verdict.warnings[0]
    assert "set store.galera_multi_writer = true" in verdict.warnings[0]


@pytest.mark.parametrize(
    ("ready", "status", "state"),
    [
        (False, "non-Primary", "Initialized"),
        (False, "Primary", "Joining"),
        (True, "non-Primary", "Synced"),
    ],
)
def test_a_galera_node_outside_the_primary_component_is_refused(
    ready: bool, status: str, state: str
) -> None:
    node = replace(
        GALERA_N1, wsrep_ready=ready, wsrep_cluster_status=status, wsrep_local_state_comment=state
    )
    verdict = judge(node, url_hosts=3, galera_multi_writer=False)
    assert verdict.refusals == (
        f"Galera node n1 is not ready (wsrep_ready {'ON' if ready else 'OFF'}, cluster status"
        f" {status}, state {state}): it is outside the primary component and refuses queries;"
        " point the store at a synced node",
    )


def test_a_galera_node_not_synced_is_accepted_with_a_warning() -> None:
    donor = replace(GALERA_N1, wsrep_local_state_comment="Donor/Desynced")
    verdict = judge(donor, url_hosts=3, galera_multi_writer=False)
    assert verdict.accepted
    assert verdict.warnings == (
        "Galera node n1 is Donor/Desynced, not Synced: it may lag behind the cluster",
    )


def test_galera_multi_writer_on_a_plain_server_has_no_effect_and_says_so() -> None:
    verdict = judge(MARIADB_1011, url_hosts=1, galera_multi_writer=True)
    assert verdict.accepted
    assert verdict.warnings == (
        "store.galera_multi_writer is set but the server is no Galera node; it has no effect",
    )


def test_refusals_of_an_old_galera_node_say_every_reason() -> None:
    old = replace(GALERA_N1, version="10.5.23-MariaDB", wsrep_ready=False)
    refusals = judge(old, url_hosts=3, galera_multi_writer=False).refusals
    assert [r.split(" ", 2)[:2] for r in refusals] == [["MariaDB", "10.5.23"], ["Galera", "node"]]


def test_the_server_is_described_in_one_line() -> None:
    assert GALERA_N1.describe() == (
        "MariaDB 10.11.19-MariaDB-0+deb12u1 (Debian 12), Galera node n1: 3 members, Synced,"
        " ready ON"
    )
    assert MYSQL_8036.describe() == "MySQL 8.0.36 (MySQL Community Server - GPL)"
    assert not MARIADB_1011.galera  # wsrep variables present, replication off


def test_store_check_prints_a_refusal_with_its_reason() -> None:
    verdict = judge(TIDB_75, url_hosts=1, galera_multi_writer=False)
    assert render_verdict("mysql app@tidb:4000/jobs (multi-table, asyncmy)", verdict) == (
        "  store    mysql app@tidb:4000/jobs (multi-table, asyncmy)\n"
        "  server   TiDB\n"
        "  version  5.7.25-TiDB-v7.5.0\n"
        f"  comment  {TIDB_75.version_comment}\n"
        "  galera   no\n"
        "REFUSED: TiDB parses the claim's SKIP LOCKED and ignores it: two nodes would claim, and"
        " fire, the same jobs\n"
    )


def test_store_check_prints_galera_state_and_warnings() -> None:
    verdict = judge(GALERA_N1, url_hosts=1, galera_multi_writer=False)
    lines = render_verdict("mysql root@127.0.0.1:3311/jobs", verdict).splitlines()
    assert lines[4] == "  galera   node n1, cluster size 3, state Synced, ready ON"
    assert lines[5].startswith("  warning  the store URL names one host of a 3-node Galera")
    assert lines[6] == "ACCEPTED"


# -- engines writing through several Galera nodes, undeclared --------------------------------


def test_no_other_writer_leaves_the_join_free() -> None:
    assert multi_writer_refusal("n1", []) is None


def test_live_engines_on_another_galera_node_refuse_the_join_and_are_named() -> None:
    others = [
        GaleraWriter(node_id="a", epoch=4, galera_node="n1"),
        GaleraWriter(node_id="b", epoch=9, galera_node="n3"),
    ]
    reason = multi_writer_refusal("n2", others)
    assert reason is not None
    assert reason.startswith(
        "this engine would write through Galera node n2 while live engine nodes write through"
        " another: a (epoch 4) through n1, b (epoch 9) through n3."
    )
    assert "set store.galera_multi_writer = true" in reason


def test_the_verdict_refuses_a_galera_node_other_engines_do_not_write_through() -> None:
    elsewhere = [GaleraWriter(node_id="a", epoch=4, galera_node="n2")]
    refused = judge(GALERA_N1, url_hosts=3, galera_multi_writer=False, other_writers=elsewhere)
    assert refused.refusals == (multi_writer_refusal("n1", elsewhere),)
    declared = judge(GALERA_N1, url_hosts=3, galera_multi_writer=True, other_writers=elsewhere)
    assert declared.accepted
