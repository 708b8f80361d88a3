"""`make cluster` / `make cluster-down` (scripts/cluster.sh): two engine nodes on the local
MariaDB, the API alone and a real Prometheus (Debian's) with the alert rules, on free ports and
a temporary directory; Prometheus is queried back over its HTTP API for every series the Grafana
dashboard uses, from both nodes.

The tests share one topology (starting it costs seconds); each brings it up first (`make
cluster` is idempotent) or takes it down, so they pass in any order."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERIES = re.compile(r"\binfinite_scheduler_[a-z_]+")
#: Set only by the node holding the maintenance lease: one node has them, not both.
LEASE_HOLDER_ONLY = {
    "infinite_scheduler_shards_live",
    "infinite_scheduler_shards_ahead",
    "infinite_scheduler_rows_unknown_status",
}
#: Exported once the event happens: a conflict retried (by operation), a multi-host store URL.
ON_EVENT_ONLY = {"infinite_scheduler_store_conflicts_total", "infinite_scheduler_store_writer"}
PROCESSES = ("engine-1", "engine-2", "api", "prometheus")
WAIT_S = 30

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(240)]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as page:
        return json.loads(page.read())


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@dataclass
class Cluster:
    directory: Path
    ports: dict[str, int]
    env: dict[str, str]

    def make(self, target: str) -> str:
        done = subprocess.run(
            ["make", "-s", target],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stderr

    def up(self) -> str:
        return self.make("cluster")

    def pids(self) -> dict[str, int]:
        return {
            name: int((self.directory / f"{name}.pid").read_text())
            for name in PROCESSES
            if (self.directory / f"{name}.pid").exists()
        }

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.ports['prometheus']}/api/v1/query?" + (
            urllib.parse.urlencode({"query": promql})
        )
        answer = get_json(url)
        assert answer["status"] == "success", (promql, answer)
        return list(answer["data"]["result"])

    def instances(self, series: str) -> set[str]:
        return {r["metric"]["instance"] for r in self.query(f"count by (instance) ({series})")}

    @property
    def nodes(self) -> set[str]:
        return {f"127.0.0.1:{self.ports[n]}" for n in ("engine-1", "engine-2")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, promtool: str) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    database = f"ist_{secrets.token_hex(4)}"
    ports = dict(zip(PROCESSES, free_ports(4), strict=True))
    env = {
        **os.environ,
        "CLUSTER_DIR": str(directory),
        "CLUSTER_STORE_URL": f"mysql://root@127.0.0.1:3306/{database}",
        "CLUSTER_PORTS": " ".join(str(ports[n]) for n in PROCESSES),
        "CLUSTER_SCRAPE_INTERVAL": "1s",
    }
    found = Cluster(directory, ports, env)
    try:
        yield found
    finally:
        found.make("cluster-down")
        with pymysql.connect(host="127.0.0.1", port=3306, user="root") as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {database}")


def complete(cluster: Cluster, name: str, found: set[str]) -> bool:
    return found == cluster.nodes or (name in LEASE_HOLDER_ONLY and len(found) == 1)


def scrape_until_complete(cluster: Cluster, wanted: set[str]) -> dict[str, set[str]]:
    """The instances Prometheus has each series from, once all are there (or time is up)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        seen = {name: cluster.instances(name) for name in wanted}
        done = all(complete(cluster, name, seen[name]) for name in wanted)
        if (done and cluster.instances("up == 1") == cluster.nodes) or time.monotonic() > deadline:
            return seen
        time.sleep(1)


def firing_nodes(cluster: Cluster) -> set[str]:
    """The nodes Prometheus saw fire jobs lately, once both have (or time is up): the demo
    producer's first jobs are due a few seconds after the start."""
    deadline = time.monotonic() + WAIT_S
    while True:
        rates = cluster.query("sum by (instance) (rate(infinite_scheduler_jobs_fired_total[10s]))")
        found = {r["metric"]["instance"] for r in rates if float(r["value"][1]) > 0}
        if found == cluster.nodes or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_make_cluster_starts_two_engines_the_api_and_prometheus_and_again_changes_nothing(
    cluster: Cluster,
) -> None:
    cluster.up()
    pids = cluster.pids()
    assert set(pids) == set(PROCESSES)
    ports = cluster.ports
    for name in ("engine-1", "engine-2"):
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/metrics", timeout=5) as page:
            assert b"infinite_scheduler_jobs_fired_total" in page.read()
    assert get_json(f"http://127.0.0.1:{ports['api']}/health")["status"] == "ok"
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['prometheus']}/-/ready") as page:
        assert page.status == 200
    again = cluster.up()
    assert cluster.pids() == pids
    assert again.count("already running") == len(PROCESSES)


def test_prometheus_has_every_dashboard_series_from_both_nodes_and_the_alert_rules(
    cluster: Cluster, dashboard_queries: list[tuple[str, str]]
) -> None:
    cluster.up()
    used = {name for _, expr in dashboard_queries for name in SERIES.findall(expr)}
    wanted = used - ON_EVENT_ONLY
    seen = scrape_until_complete(cluster, wanted)
    missing = {
        name: sorted(cluster.nodes - seen[name])
        for name in wanted
        if not complete(cluster, name, seen[name])
    }
    assert missing == {}
    assert cluster.instances("up == 1") == cluster.nodes
    holders = {instance for name in LEASE_HOLDER_ONLY for instance in seen[name]}
    assert len(holders) == 1  # the maintenance lease's holder, and only it
    assert firing_nodes(cluster) == cluster.nodes  # the demo's jobs fire on both
    for _, expr in dashboard_queries:  # every panel's query evaluates on the real server
        cluster.query(expr)
    groups = get_json(f"http://127.0.0.1:{cluster.ports['prometheus']}/api/v1/rules")
    loaded = {r["name"] for g in groups["data"]["groups"] for r in g["rules"]}
    rules = yaml.safe_load((ROOT / "docker" / "prometheus" / "alerts.yml").read_text())
    assert loaded == {r["alert"] for g in rules["groups"] for r in g["rules"]}


def test_make_cluster_down_stops_everything_and_leaves_nothing_listening(
    cluster: Cluster,
) -> None:
    cluster.up()
    pids = cluster.pids()
    cluster.make("cluster-down")
    assert cluster.pids() == {}
    assert [pid for pid in pids.values() if running(pid)] == []
    assert [p for p in cluster.ports.values() if listening(p)] == []
    cluster.make("cluster-down")  # again: nothing to stop, no error
