"""``infinite-scheduler nodes list``, and ``run`` refused by the store, as a user runs them on a
real store (``store_url``: SQLite, MariaDB), exit codes and output: ``nodes list`` in this
process (cli_in_process), ``run`` in a real one."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from repos.base import Claimant, ShardPolicy
from repos.cluster import Membership, NodeState
from repos.examples import SMS, SmsEntity
from repos.registry import make_membership, make_repository
from tests.cli_in_process import cli

pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "infinite_scheduler"]


def write_config(tmp_path: Path, url: str, node_id: str = "AUTO") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'node_id = "{node_id}"\nmetrics_port = 0\nfetch_interval_s = 1\nlookahead_s = 2\n'
        "[cluster]\nheartbeat_interval_s = 0.5\nnode_timeout_s = 2\n[api]\nport = 0\n"
        f'[store]\nurl = "{url}"\n'
    )
    return path


def in_a_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
async def members(store_url: str) -> AsyncIterator[Membership]:
    membership = make_membership(store_url)
    await membership.open()
    try:
        yield membership
    finally:
        await membership.close()


async def join(m: Membership, node_id: str, pid: int) -> int:
    joined = await m.join(node_id, host="box-1", pid=pid, version="9.9", node_timeout_ms=2_000)
    return joined.epoch


async def test_nodes_list_shows_live_timed_out_and_finished_nodes_with_their_claims(
    tmp_path: Path, store_url: str, members: Membership, raw_sql: Any
) -> None:
    left = await join(members, "node-old", 10)
    await members.set_state(left, NodeState.LEFT)
    gone = await join(members, "node-gone", 20)
    await raw_sql(
        members, f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60500 WHERE epoch = {gone}"
    )
    live = await join(members, "node-a", 30)  # SQLite takes it: node-gone timed out
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        now = datetime.now(UTC)
        sms = [SmsEntity(id=i, scheduled_at=now, phone="+1", message="m") for i in range(5)]
        await repo.insert(sms[:3], now_ms=0, claimed_by=Claimant("node-a", live))
        await repo.insert(sms[3:4], now_ms=0, claimed_by=Claimant("node-gone", gone))
        await repo.insert(sms[4:], now_ms=0)
    finally:
        await repo.close()

    proc = cli("nodes", "list", "--config", str(write_config(tmp_path, store_url)))
    assert (proc.returncode, proc.stderr) == (0, "")
    title, header, *rows, note = proc.stdout.splitlines()
    assert re.fullmatch(
        r"1 live node \(database clock \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, node_timeout_s 2\)", title
    )
    assert header.split() == ["node", "epoch", "host", "pid", "state", "heartbeat", "claims"]
    assert [re.sub(r"\d+(\.\d)? s ago", "N s ago", " ".join(r.split())) for r in rows] == [
        f"node-a {live} box-1 30 ACTIVE N s ago 3",
        f"node-gone {gone} box-1 20 TIMED OUT N s ago 1",
        f"node-old {left} box-1 10 LEFT N s ago -",
    ]
    gone_age = re.search(r"(\d+) s ago", rows[1])
    assert gone_age and 60 <= int(gone_age.group(1)) < 90
    assert note.strip().startswith("TIMED OUT: heartbeat older than node_timeout_s")


def test_nodes_list_without_a_sqlite_store_says_so_and_makes_none(tmp_path: Path) -> None:
    path = tmp_path / "var" / "store.db"
    proc = cli("nodes", "list", "--config", str(write_config(tmp_path, f"sqlite:///{path}")))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"no store at {path}: no nodes\n", "")
    assert not path.parent.exists()


def test_nodes_list_on_an_unreachable_store_exits_1_with_one_line(tmp_path: Path) -> None:
    proc = cli(
        "nodes", "list", "--config", str(write_config(tmp_path, "mysql://root@127.0.0.1:1/x"))
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_run_refused_by_a_live_node_of_its_id_exits_2_naming_it(
    tmp_path: Path, store_url: str, members: Membership
) -> None:
    epoch = await join(members, "node-x", 4242)
    proc = in_a_process(
        "run", "--demo", "--config", str(write_config(tmp_path, store_url, "node-x"))
    )
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(
        f"infinite-scheduler: node id 'node-x' is in use by a live node 'node-x' (epoch {epoch}"
        " on host box-1 pid 4242, heartbeat "
    )
