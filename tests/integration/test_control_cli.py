"""``infinite-scheduler schedules ...`` and ``engine ...`` as a user runs them, in this process
(cli_in_process), on a real store (SQLite, MariaDB); output, exit codes, the audit rows with the
``cli:<user>`` actor, and nothing changed after a refusal."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from infinite_scheduler import SchedulerClient, load_config
from infinite_scheduler.stores import store_access
from repos.access import AuditRow
from repos.examples import SMS
from tests.cli_in_process import cli

pytestmark = pytest.mark.timeout(120)
TEMPLATE = {"phone": "+15550100", "message": "hi"}


@pytest.fixture
async def config(tmp_path: Path, store_url: str) -> AsyncIterator[Path]:
    """A config on the store, which holds one schedule, "daily"."""
    path = tmp_path / "config.toml"
    path.write_text(f'metrics_port = 0\n[store]\nurl = "{store_url}"\n')
    async with SchedulerClient(load_config(str(path)), SMS) as client:
        await client.schedules.create("daily", SMS, {"kind": "rate", "every_s": 86400}, TEMPLATE)
    yield path


async def audit(config: Path) -> list[AuditRow]:
    store = store_access(load_config(str(config)))
    await store.open()
    try:
        return await store.audit(limit=100)
    finally:
        await store.close()


async def test_schedules_list_show_pause_resume_and_trigger(config: Path) -> None:
    c = ("--config", str(config))
    listed = cli("schedules", "list", *c)
    assert listed.returncode == 0, listed.stderr
    assert "daily" in listed.stdout and "1 schedule(s)" in listed.stdout
    shown = orjson.loads(cli("schedules", "show", "daily", "--json", *c).stdout)
    assert (shown["name"], shown["paused"]) == ("daily", False)
    paused = cli("schedules", "pause", "daily", "--json", *c)
    assert orjson.loads(paused.stdout)["paused"] is True
    assert (
        orjson.loads(cli("schedules", "resume", str(shown["id"]), "--json", *c).stdout)["paused"]
        is False
    )
    ran = orjson.loads(cli("schedules", "trigger", "daily", "--json", *c).stdout)
    assert (ran["schedule"], ran["stored"]) == (shown["id"], True)
    job = orjson.loads(cli("jobs", "show", "sms", str(ran["job_id"]), "--json", *c).stdout)
    assert (job["state"], job["schedule"]) == ("PENDING", shown["id"])
    after = orjson.loads(cli("schedules", "show", "daily", "--json", *c).stdout)
    assert after["next_fire_at"] == shown["next_fire_at"], "the next occurrence stays"
    rows = await audit(config)
    assert [r.action for r in rows] == ["schedule.trigger", "schedule.resume", "schedule.pause"]
    assert {r.actor for r in rows} == {f"cli:{getpass.getuser()}"}


async def test_an_unknown_schedule_is_exit_2_and_audits_nothing(config: Path) -> None:
    c = ("--config", str(config))
    for action in ("show", "pause", "trigger"):
        done = cli("schedules", action, "nope", *c)
        assert done.returncode == 2 and "nope" in done.stderr, done.stderr
    assert await audit(config) == []


async def test_engine_pause_status_and_resume(config: Path) -> None:
    c = ("--config", str(config))
    assert cli("engine", "status", *c).stdout == "engine running\n"
    paused = cli("engine", "pause", *c)
    assert paused.returncode == 0 and paused.stdout.startswith("engine paused since"), paused
    assert orjson.loads(cli("engine", "status", "--json", *c).stdout)["paused"] is True
    async with SchedulerClient(load_config(str(config)), SMS) as client:
        assert await client.engine_control.paused_since() is not None
    assert cli("engine", "resume", *c).stdout == "engine running\n"
    rows = await audit(config)
    assert [(r.action, r.target) for r in rows] == [("engine.resume", "engine"),
                                                    ("engine.pause", "engine")]  # fmt: skip
    assert orjson.loads(rows[1].after_json or "")["paused"] is True
