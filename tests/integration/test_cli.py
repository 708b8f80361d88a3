"""The console script as a user runs it: real process, real exit codes, readable errors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from subprocess import PIPE
from typing import Any, Protocol

import pytest

from repos.cluster import Membership, NodeState
from repos.registry import make_membership

pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "infinite_scheduler"]
#: The console script as installed: unlike ``python -m``, its sys.path lacks the working directory.
SCRIPT = str(Path(sys.executable).parent / "infinite-scheduler")
#: A user's app package: one entity type of its own, a handler, and a run that ends by itself.
APP_JOBS = """
import asyncio

from repos.entity import EntitySpec
from repos.examples import SmsEntity

REMINDERS = EntitySpec.of(SmsEntity, name="reminders")


def register(engine):
    engine.register(REMINDERS, lambda ctx: None)
    asyncio.get_running_loop().call_later(1.0, engine.stop)
    print("myapp: registered", flush=True)
"""


class SilentServer(Protocol):
    """tests/conftest.py's `silent_server`: accepts connections on 127.0.0.1, never answers."""

    port: int
    accepted: int
    connected: asyncio.Event


def write_config(tmp_path: Path, url: str, metrics_port: int = 0) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"metrics_port = {metrics_port}\nfetch_interval_s = 1\nlookahead_s = 2\n"
        "[cluster]\nheartbeat_interval_s = 0.5\nnode_timeout_s = 2\n[api]\nport = 0\n"
        f'[store]\nurl = "{url}"\n'  # last: tests append store keys
    )
    return path


def write_myapp(folder: Path, jobs_source: str) -> None:
    """The package ``myapp`` in `folder`, its module ``myapp.jobs`` holding `jobs_source`."""
    (folder / "myapp").mkdir()
    (folder / "myapp" / "__init__.py").write_text("")
    (folder / "myapp" / "jobs.py").write_text(jobs_source)


def run_myapp(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``infinite-scheduler run --app myapp.jobs:register`` from `cwd`, by the console script."""
    return subprocess.run(
        [SCRIPT, "run", "--app", "myapp.jobs:register"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unreachable_store_at_start_is_a_clear_error_naming_host_and_port(tmp_path: Path) -> None:
    config = write_config(tmp_path, "mysql://root@127.0.0.1:1/nowhere")
    proc = subprocess.run(
        [*CLI, "run", "--config", str(config), "--demo"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert "127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_sigint_during_a_hung_start_exits_130_with_one_line(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    config = write_config(tmp_path, f"mysql://root@127.0.0.1:{silent_server.port}/jobs")
    with config.open("a") as toml:
        toml.write("connect_timeout_s = 60\n")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "run", "--config", str(config), "--demo", stdout=PIPE, stderr=PIPE
    )
    try:
        async with asyncio.timeout(20):
            await silent_server.connected.wait()  # start-up now waits for a greeting
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130
    assert err.decode() == "infinite-scheduler: interrupted\n"


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("fetch_interval_s = 40\nlookahead_s = 30\n")
    proc = subprocess.run(
        [*CLI, "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "lookahead_s" in proc.stderr and "Traceback" not in proc.stderr


def test_run_with_neither_app_nor_demo_is_refused_before_opening_anything(
    tmp_path: Path,
) -> None:
    """Without entity types the engine would open the store and fire nothing, silently."""
    proc = subprocess.run([*CLI, "run"], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr == (
        "infinite-scheduler run: nothing to run: pass --app MODULE:FUNCTION (your function that\n"
        "registers entity types and handlers), or --demo for the built-in examples, e.g.\n"
        "  infinite-scheduler run --app myapp.jobs:register\n"
        "  infinite-scheduler run --demo\n"
    )
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no store file made, no summary printed


def test_app_package_in_the_working_directory_is_found_by_the_console_script(
    tmp_path: Path,
) -> None:
    write_myapp(tmp_path, APP_JOBS)
    (tmp_path / "config.toml").write_text(
        "metrics_port = 0\n[api]\nport = 0\n[store]\ncreate_missing = true\n"
    )
    proc = run_myapp(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "myapp: registered" in proc.stdout
    assert (tmp_path / "var" / "infinite-scheduler.db").is_file()  # the engine opened its store


def test_app_module_not_found_says_where_it_was_searched_and_how_to_fix_it(
    tmp_path: Path,
) -> None:
    proc = run_myapp(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "infinite-scheduler: --app 'myapp.jobs:register': no module named 'myapp' in the "
        f"working directory {tmp_path} nor elsewhere on the import path; run from the folder "
        "that holds the myapp package, or add that folder to PYTHONPATH\n"
    )
    assert not (tmp_path / "var").exists()  # nothing opened

    write_myapp(tmp_path, "import no_such_dependency\n")
    proc = run_myapp(tmp_path)
    assert (proc.returncode, proc.stderr) == (
        2,
        "infinite-scheduler: --app 'myapp.jobs:register': importing myapp.jobs failed: "
        "No module named 'no_such_dependency'\n",
    )


def test_metrics_port_in_use_exits_2_with_one_line_and_opens_no_store(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"sqlite:///{db}", metrics_port=port)
        proc = subprocess.run(
            [*CLI, "run", "--config", str(config), "--demo"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"infinite-scheduler: metrics_port = {port}: port already in use ([Errno 98] Address "
        "already in use); free it or choose another port (0 turns the endpoint off)\n"
    )
    assert not db.exists()  # the demo would have created it: the store was never opened


def test_demo_fires_jobs_serves_metrics_and_exits_0_on_sigint(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    port = 19000 + os.getpid() % 1000
    config = write_config(tmp_path, f"sqlite:///{db}", metrics_port=port)
    with subprocess.Popen(
        [*CLI, "run", "--config", str(config), "--demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            metrics = _scrape_until(port, "jobs_fired_total{", timeout_s=20)
            assert 'infinite_scheduler_jobs_fired_total{entity="sms"}' in metrics
            for name in (
                "jobs_held",
                "jobs_in_flight",
                "fire_lateness_seconds_bucket",
                "fetch_duration_seconds_count",
                "jobs_claimed_total",
                "jobs_scheduled_total",
            ):
                assert f"infinite_scheduler_{name}" in metrics
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/metrics" in out
    assert "fired" in out


def _scrape_until(port: int, wanted: str, *, timeout_s: float) -> str:
    """The metrics page once it shows `wanted` (or the last one seen, when time runs out)."""
    metrics = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and wanted not in metrics:
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                metrics = page.read().decode()
        except OSError:
            continue
    return metrics


@pytest.mark.mysql
async def test_a_node_declared_dead_by_another_rejoins_as_a_new_epoch(
    tmp_path: Path, mariadb: Any, mysql_database: str, raw_sql: Any
) -> None:
    """Another node finds `run`'s heartbeat too old (a stall, here faked by ageing its row) and
    declares it dead: the process stops that engine and runs a new one, a new epoch."""
    url = mariadb.url(mysql_database)
    config = tmp_path / "config.toml"
    config.write_text(
        'node_id = "cli-node"\nmetrics_port = 0\nfetch_interval_s = 1\nlookahead_s = 2\n'
        "[cluster]\nheartbeat_interval_s = 0.5\nnode_timeout_s = 2\n[api]\nport = 0\n"
        f'[store]\nurl = "{url}"\n'
    )
    members = make_membership(url)
    await members.open()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "run", "--config", str(config), "--demo", stdout=PIPE, stderr=PIPE
    )
    try:
        first = await _active_epoch(members, "cli-node", above=0)
        for _ in range(20):  # between two of its renewals
            age = (
                f"UPDATE nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE epoch = {first}"
            )
            await raw_sql(members, age)
            if await members.declare_dead(first, 2000):
                break
        else:
            pytest.fail("could not declare the node dead between two of its renewals")
        second = await _active_epoch(members, "cli-node", above=first)
        await asyncio.sleep(2)  # its start done: a signal during a start ends it with 130
        proc.send_signal(signal.SIGINT)
        _, raw_err = await asyncio.wait_for(proc.communicate(), 20)
        err = raw_err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await members.close()
    assert proc.returncode == 0, err
    assert second > first
    assert f"node 'cli-node' epoch {first} was declared dead by another node" in err
    assert "rejoining as a new epoch" in err


async def _active_epoch(members: Membership, node_id: str, *, above: int) -> int:
    """The epoch of node_id's ACTIVE row newer than `above`, once there is one (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            for node in (await members.list_nodes()).nodes:
                if (
                    node.node_id == node_id
                    and node.epoch > above
                    and node.state == NodeState.ACTIVE
                ):
                    return node.epoch
            await asyncio.sleep(0.1)
