"""The API as a user runs it: ``infinite-scheduler api`` in a process of its own on a free
local port, on SQLite and MariaDB, with tokens made by the CLI; and the README's curl session,
run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncmy
import httpx
import pytest

from tests.cli_in_process import cli

README = Path(__file__).resolve().parents[2] / "README.md"
CLI = [sys.executable, "-m", "infinite_scheduler"]
BIN = str(Path(sys.executable).parent)


def write_config(tmp_path: Path, url: str, *, allow_open: bool = False) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "metrics_port = 0\n"
        f"[api]\nport = 0\nallow_open = {'true' if allow_open else 'false'}\n"
        f'[store]\nurl = "{url}"\n'
        "[categories.reports]\n"
    )
    return path


def command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A CLI command other than ``api``, in this process (cli_in_process)."""
    return cli(*args, "--config", str(config))


class Server:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "api", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.match(r"api (http://127\.0\.0\.1:\d+)", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"no address line: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.url = match.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=15)  # and closes the pipes
        return self.proc.returncode


@pytest.fixture
def serve() -> Iterator[type[Server]]:
    started: list[Server] = []

    class Tracked(Server):
        def __init__(self, config: Path) -> None:
            super().__init__(config)
            started.append(self)

    yield Tracked
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate(timeout=15)


def test_a_served_api_on_both_stores(store_url: str, tmp_path: Path, serve: type[Server]) -> None:
    config = write_config(tmp_path, store_url)
    refused = subprocess.run(
        [*CLI, "api", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2 and "no API token is stored" in refused.stderr
    made = command(config, "tokens", "create", "--name", "ops", "--role", "ADMIN", "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["secret"]
    listed = command(config, "tokens", "list", "--json")
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ops"]
    assert secret not in listed.stdout and "hash" not in listed.stdout
    server = serve(config)
    auth = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/ready").json()["ready"] is True
        body = {"name": "r", "entity": "sms", "trigger": {"kind": "rate", "every_s": 60},
                "payload_template": {"phone": "+1", "message": "m"}}  # fmt: skip
        created = http.post("/schedules", json=body, headers=auth)
        assert created.status_code == 201, created.text
        paused = http.post(f"/schedules/{created.json()['id']}/pause", headers=auth)
        assert paused.json()["paused"] is True
        audit = http.get("/audit", headers=auth).json()["items"]
        assert [a["action"] for a in audit] == ["schedule.pause", "schedule.create", "token.create"]
        assert command(config, "tokens", "revoke", "ops").returncode == 0
        assert http.get("/schedules", headers=auth).status_code == 401
    assert server.stop() == 0


@pytest.mark.mysql
async def test_ready_is_503_when_the_database_is_gone(
    mysql_database: str, mariadb: object, tmp_path: Path, serve: type[Server]
) -> None:
    url = f"mysql://root@127.0.0.1:3306/{mysql_database}"
    config = write_config(tmp_path, url, allow_open=True)
    server = serve(config)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.get("/ready")).status_code == 200
        conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE `{mysql_database}`")
        conn.close()
        response = await http.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "not_ready" and "store unreachable" in body["message"]
        assert (await http.get("/health")).status_code == 200


def session_block() -> str:
    text = README.read_text()
    match = re.search(r"<!-- api-session[^>]*-->\n```sh\n(.*?)```", text, re.DOTALL)
    assert match is not None, "README has no api-session block"
    return match.group(1)


def test_the_readme_curl_session_runs(tmp_path: Path, serve: type[Server]) -> None:
    url = f"sqlite:///{tmp_path}/readme.db"
    config = write_config(tmp_path, url, allow_open=True)  # as `make run` serves it
    assert command(config, "store", "init").returncode == 0
    server = serve(config)
    script = session_block().replace("http://127.0.0.1:8464", server.url)
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "INFINITE_SCHEDULER_STORE__URL": url,
        "INFINITE_SCHEDULER_METRICS_PORT": "0",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '"name":"nightly-report"' in out and '"state":"ACTIVE"' in out
    assert '"paused":true' in out
    assert '"action":"schedule.pause"' in out and '"actor":"ops"' in out
    assert '"code":"unauthorized"' in out
    assert '"stored":true' in out and '"state":"CANCELLED"' in out
    assert '"name":"reports","paused":true' in out
    assert re.search(r"^  ops\s+ADMIN\s+ops\s", out, re.MULTILINE)
    assert "revoked ops" in out
