"""``infinite-scheduler jobs ...`` as a user runs it on a real store (``store_url``: a SQLite
file, MariaDB): output, exit codes, and the store unchanged after a refusal or a bad input. The
commands run in this process (cli_in_process); one refusal goes through a real one, whose exit
code the OS reports."""

from __future__ import annotations

import getpass
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from infinite_scheduler import load_config
from infinite_scheduler.stores import store_access
from repos.access import AuditRow
from repos.base import ShardPolicy, StoredRow
from repos.examples import SMS, SmsEntity
from repos.registry import make_repository
from tests.cli_in_process import cli

pytestmark = pytest.mark.timeout(90)
CLI = [sys.executable, "-m", "infinite_scheduler"]
SOON = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def in_a_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m infinite_scheduler``: its exit code as the OS reports it."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
async def config(tmp_path: Path, store_url: str) -> Path:
    """A config on the store, holding SMS ids 1-3 an hour, two and three hours ahead."""
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        await repo.insert(
            [
                SmsEntity(
                    id=i, scheduled_at=SOON + timedelta(hours=i - 1), phone="+1555", message="m"
                )
                for i in (1, 2, 3)
            ],
            now_ms=int(datetime.now(UTC).timestamp() * 1000),
        )
    finally:
        await repo.close()
    path = tmp_path / "config.toml"
    path.write_text(f'metrics_port = 0\n[store]\nurl = "{store_url}"\n')
    return path


async def rows(store_url: str) -> list[StoredRow]:
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        return await repo.page(start_ms=0, end_ms=2**50, limit=1000)
    finally:
        await repo.close()


async def audit(config: Path) -> list[AuditRow]:
    store = store_access(load_config(str(config)))
    await store.open()
    try:
        return await store.audit(limit=100)
    finally:
        await store.close()


async def test_list_show_and_change_jobs(config: Path) -> None:
    c = ("--config", str(config))
    listed = cli("jobs", "list", "sms", "--size", "2", *c)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "state", "scheduled"]
    assert [line.split()[:2] for line in lines[1:3]] == [["1", "PENDING"], ["2", "PENDING"]]
    cursor = lines[-1].removeprefix("more: --cursor ")
    rest = cli("jobs", "list", "sms", "--cursor", cursor, "--json", *c)
    assert [j["id"] for j in orjson.loads(rest.stdout)["jobs"]] == [3]
    paused = cli("jobs", "pause", "sms", "2", "--json", *c)
    assert orjson.loads(paused.stdout)["state"] == "PAUSED", paused.stderr
    later = (SOON + timedelta(days=2)).isoformat()
    moved = cli("jobs", "reschedule", "sms", "2", later, *c)
    assert moved.returncode == 0 and "state:       PAUSED" in moved.stdout, moved.stderr
    shown = cli("jobs", "show", "sms", "2", "--json", *c)
    assert orjson.loads(shown.stdout)["scheduled_ms"] == int(
        (SOON + timedelta(days=2)).timestamp() * 1000
    )
    for action, state in (("resume", "PENDING"), ("run-now", "PENDING"), ("cancel", "CANCELLED")):
        done = cli("jobs", action, "sms", "2", "--json", *c)
        assert orjson.loads(done.stdout)["state"] == state, done.stderr
    paused_only = cli("jobs", "list", "sms", "--state", "cancelled", "--json", *c)
    assert [j["id"] for j in orjson.loads(paused_only.stdout)["jobs"]] == [2]
    logged = await audit(config)
    assert [r.action for r in reversed(logged)] == [
        "job.pause", "job.reschedule", "job.resume", "job.run-now", "job.cancel"
    ]  # fmt: skip
    assert {(r.actor, r.target) for r in logged} == {(f"cli:{getpass.getuser()}", "job sms 2")}
    assert orjson.loads(logged[0].before_json or "")["state"] == "PENDING"
    assert orjson.loads(logged[0].after_json or "")["state"] == "CANCELLED"


async def test_bad_input_and_refusals_exit_clearly_and_change_nothing(
    config: Path, store_url: str
) -> None:
    c = ("--config", str(config))
    assert cli("jobs", "cancel", "sms", "3", *c).returncode == 0
    before = await rows(store_url)
    cases = [
        (("jobs", "show", "nope", "1"), 2, "entity 'nope': one of"),
        (("jobs", "show", "sms", "x"), 2, "id 'x': sms ids are integers"),
        (("jobs", "show", "sms", "99"), 2, "sms 99: no such job"),
        (("jobs", "list", "sms", "--state", "sleeping"), 2, "state 'sleeping': one of PENDING"),
        (("jobs", "list", "sms", "--size", "0"), 2, "size 0: a page holds 1 to 1000 jobs"),
        (("jobs", "list", "sms", "--cursor", "zz"), 2, "cursor 'zz': not a cursor"),
        (("jobs", "list", "sms", "--from", "yesterday"), 2, "from 'yesterday': an ISO 8601 time"),
        (("jobs", "reschedule", "sms", "1", "2030-01-01T00:00"), 2, "a time with its zone"),
        (("jobs", "reschedule", "sms", "1", "2001-01-01T00:00Z"), 2, "in the past"),
        (("jobs", "pause", "sms"), 2, "the following arguments are required: id"),
        (("jobs", "resume", "sms", "1"), 3, "cannot resume sms 1"),
        (("jobs", "pause", "sms", "3"), 3, "it is CANCELLED"),
    ]
    for args, code, message in cases:
        done = cli(*args, *c)
        assert (done.returncode, message in done.stderr) == (code, True), (args, done.stderr)
        assert "Traceback" not in done.stderr
    process = in_a_process("jobs", "pause", "sms", "3", *c)
    assert (process.returncode, process.stderr) == (3, cli("jobs", "pause", "sms", "3", *c).stderr)
    assert await rows(store_url) == before
    assert [r.action for r in await audit(config)] == ["job.cancel"]  # the refused: none
