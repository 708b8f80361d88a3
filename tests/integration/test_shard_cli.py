"""``infinite-scheduler shards list | drop-expired`` as a user runs them on a real store: in this
process (cli_in_process), or in a real one where the process matters (a terminal on stdin,
``--app`` found through the working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from repos.base import Claimant, ShardingRepository, ShardPolicy
from repos.entity import EntitySpec
from repos.examples import SMS, SmsEntity
from repos.registry import make_repository
from repos.shards import Granularity, bounds_of
from tests.cli_in_process import cli

pytestmark = pytest.mark.timeout(30)
CLI = [sys.executable, "-m", "infinite_scheduler"]
#: The claimant of the claims these tests make (a node id and its epoch).
NODE = Claimant("n", 1)
DAY = Granularity.DAY.span_ms
#: What an --app module may register: a type of the user's own, not one of the examples.
REMINDERS = EntitySpec.of(SmsEntity, name="reminders")
APP_MODULE = """
from repos.entity import EntitySpec
from repos.examples import SmsEntity

REMINDERS = EntitySpec.of(SmsEntity, name="reminders")

def register(engine):
    engine.register(REMINDERS, lambda ctx: None)
"""


def sms(i: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Seeded:
    config: Path
    expired: str  #: shard ten days old: 1 DONE, 2 PENDING rows
    live: str  #: today's shard: 4 PENDING rows
    expired_start_ms: int


async def seed(repo: ShardingRepository[Any, Any], now_ms: int) -> tuple[str, str, int]:
    old_ms = now_ms - 10 * DAY
    await repo.insert([sms(i, old_ms + i) for i in range(3)], now_ms=old_ms)
    [job] = await repo.claim_due(
        NODE, now_ms=old_ms, before_ms=old_ms + 1, since_ms=old_ms, limit=1
    )
    await repo.mark_done(NODE.epoch, [job.ref], fired_at_ms=old_ms)
    await repo.insert([sms(i, now_ms + i) for i in range(4)], now_ms=now_ms)
    prefix = repo.spec.table_prefix
    expired, live = (bounds_of(at, Granularity.DAY) for at in (old_ms, now_ms))
    return f"{prefix}_{expired.suffix}", f"{prefix}_{live.suffix}", expired.start_ms


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'metrics_port = 0\n[store]\nurl = "{url}"\n')
    return path


@pytest.fixture
async def seeded(store_url: str, tmp_path: Path) -> AsyncIterator[Seeded]:
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        expired, live, start_ms = await seed(repo, time.time_ns() // 1_000_000)
    finally:
        await repo.close()
    yield Seeded(write_config(tmp_path, store_url), expired, live, start_ms)


def shards(*args: str, typed: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a script runs it (stdin is not a terminal), or as a person does: stdin
    a terminal where `typed` is typed (cli_in_process.Terminal)."""
    return cli("shards", *args, typed=typed)


def shards_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command run by a process in `cwd`, which is on its import path."""
    return subprocess.run(
        [*CLI, "shards", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        stdin=subprocess.DEVNULL,
    )


def shards_at_a_terminal(answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a person runs it: stdin is a terminal (a pty), where `answer` is typed."""
    terminal, stdin = os.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "shards", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(stdin)
        os.write(terminal, f"{answer}\n".encode())
        out, err = proc.communicate(timeout=20)
    finally:
        os.close(terminal)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def line_of(out: str, name: str) -> str:
    [line] = [line for line in out.splitlines() if name in line]
    return line


def test_list_shows_every_shard_with_its_range_and_rows_by_status(seeded: Seeded) -> None:
    proc = shards("list", "--config", str(seeded.config))
    assert proc.returncode == 0, proc.stderr
    assert "sms: 2 shards (day, kept 604800 s after their end)" in proc.stdout
    expired = line_of(proc.stdout, seeded.expired).split()
    start = seeded.expired_start_ms
    assert expired[:5] == [seeded.expired, utc(start), utc(start + DAY), "3", "2"]
    assert expired[5:] == ["PENDING=2", "DONE=1"]
    assert line_of(proc.stdout, seeded.live).split()[3:] == ["4", "4", "PENDING=4"]
    assert "total 7 rows, 6 unfinished" in proc.stdout
    assert "orders: 0 shards" in proc.stdout and "notifications: 0 shards" in proc.stdout


def test_drop_expired_dry_run_drops_nothing_and_a_real_run_drops_only_expired(
    seeded: Seeded,
) -> None:
    config = str(seeded.config)
    dry = shards("drop-expired", "--config", config, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "sms: would drop 1 shard ending at or before" in dry.stdout
    assert line_of(dry.stdout, seeded.expired).split()[-4:] == ["3", "2", "PENDING=2", "DONE=1"]
    assert seeded.live not in dry.stdout
    assert seeded.expired in shards("list", "--config", config).stdout  # still there

    real = shards("drop-expired", "--config", config, "--force")
    assert real.returncode == 0, real.stderr
    assert f"dropped {seeded.expired}" in real.stdout and "would drop" not in real.stdout
    assert seeded.expired in real.stderr and "2 unfinished rows" in real.stderr  # the warning
    after = shards("list", "--config", config).stdout
    assert seeded.expired not in after and "sms: 1 shard " in after and seeded.live in after
    again = shards("drop-expired", "--config", config)
    assert again.returncode == 0 and "sms: dropped 0 shards" in again.stdout


async def test_app_option_lists_the_apps_own_entity_types(store_url: str, tmp_path: Path) -> None:
    repo = make_repository(store_url, REMINDERS, ShardPolicy())
    await repo.open()
    try:
        expired, live, _ = await seed(repo, time.time_ns() // 1_000_000)
    finally:
        await repo.close()
    (tmp_path / "reminders_app.py").write_text(APP_MODULE)
    config = str(write_config(tmp_path, store_url))
    proc = shards_in(tmp_path, "list", "--config", config, "--app", "reminders_app:register")
    assert proc.returncode == 0, proc.stderr
    assert "reminders: 2 shards" in proc.stdout and expired in proc.stdout and live in proc.stdout
    assert "sms:" not in proc.stdout


def test_unreachable_store_exits_1_naming_host_and_port(tmp_path: Path) -> None:
    config = write_config(tmp_path, "mysql://root@127.0.0.1:1/nowhere")
    for args in (["list"], ["drop-expired", "--dry-run"]):
        proc = shards(*args, "--config", str(config))
        assert proc.returncode == 1
        assert "127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_exits_2_and_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[shards]\nretention_s = 60\n")
    proc = shards("drop-expired", "--config", str(bad))
    assert proc.returncode == 2 and "shards.retention_s" in proc.stderr

    missing = tmp_path / "none" / "store.db"
    proc = shards("list", "--config", str(write_config(tmp_path, f"sqlite:///{missing}")))
    assert proc.returncode == 0 and "no store at" in proc.stdout
    assert not missing.parent.exists()


REFUSED = (
    "infinite-scheduler: nothing dropped: 1 shard holds 2 unfinished rows and stdin is not a"
    " terminal to confirm on; pass --force to drop them anyway\n"
)


def test_drop_expired_without_a_terminal_refuses_unfinished_rows_unless_forced(
    seeded: Seeded,
) -> None:
    config = str(seeded.config)
    before = shards("list", "--config", config).stdout
    refused = shards("drop-expired", "--config", config)
    assert (refused.returncode, refused.stderr) == (3, REFUSED)
    assert "sms: would drop 1 shard ending at or before" in refused.stdout
    assert line_of(refused.stdout, seeded.expired).split()[-4:] == ["3", "2", "PENDING=2", "DONE=1"]
    assert "1 shard holding 2 unfinished rows: never fired, or never finished\n" in refused.stdout
    assert "sms: dropped" not in refused.stdout
    assert shards("list", "--config", config).stdout == before  # shards and rows as they were

    forced = shards("drop-expired", "--config", config, "--force")
    assert forced.returncode == 0, forced.stderr
    assert line_of(forced.stdout, seeded.expired).split()[:2] == ["dropped", seeded.expired]
    assert "2 unfinished rows (of 3: PENDING=2 DONE=1)" in forced.stderr  # counted and logged
    assert seeded.expired not in shards("list", "--config", config).stdout


@pytest.mark.parametrize(
    ("answer", "dropped"), [("y", True), (" YES ", True), ("n", False), ("", False)]
)
def test_drop_expired_at_a_terminal_asks_and_drops_only_on_yes(
    seeded: Seeded, answer: str, dropped: bool
) -> None:
    config = str(seeded.config)
    proc = shards("drop-expired", "--config", config, typed=f"{answer}\n")
    assert "1 shard holding 2 unfinished rows: never fired, or never finished\n" in proc.stdout
    assert "Drop 1 shard holding 2 unfinished rows? [y/N] " in proc.stdout
    listed = shards("list", "--config", config).stdout
    if dropped:
        assert proc.returncode == 0, proc.stderr
        assert line_of(proc.stdout, f"dropped {seeded.expired}")
        assert seeded.expired not in listed
    else:
        assert (proc.returncode, proc.stderr) == (
            3,
            "infinite-scheduler: nothing dropped: 1 shard holds 2 unfinished rows and the drop"
            " was not confirmed\n",
        )
        assert line_of(listed, seeded.expired).split()[3:] == ["3", "2", "PENDING=2", "DONE=1"]


async def test_drop_expired_drops_shards_of_finished_rows_without_asking(
    store_url: str, tmp_path: Path
) -> None:
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        old_ms = time.time_ns() // 1_000_000 - 10 * DAY
        await repo.insert([sms(i, old_ms + i) for i in range(3)], now_ms=old_ms)
        jobs = await repo.claim_due(
            NODE, now_ms=old_ms, before_ms=old_ms + 3, since_ms=old_ms, limit=3
        )
        await repo.mark_done(NODE.epoch, [job.ref for job in jobs], fired_at_ms=old_ms)
        [expired] = [s.name for s in await repo.list_shards()]
    finally:
        await repo.close()
    proc = shards("drop-expired", "--config", str(write_config(tmp_path, store_url)))
    assert proc.returncode == 0, proc.stderr
    assert line_of(proc.stdout, expired).split()[:2] == ["dropped", expired]
    assert "would drop" not in proc.stdout and "Drop " not in proc.stdout


async def test_list_shows_rows_of_a_status_this_version_does_not_know(
    seeded: Seeded, store_url: str, raw_sql: Any
) -> None:
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        await raw_sql(repo, f"UPDATE {seeded.expired} SET status = 12 WHERE id = 1")
    finally:
        await repo.close()
    proc = shards("list", "--config", str(seeded.config))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert line_of(proc.stdout, f"{seeded.expired} ").split()[3:] == [
        "3",
        "2",
        "PENDING=1",
        "DONE=1",
        "status",
        "12=1",
    ]
    assert (
        f"  {seeded.expired}: 1 row of a status this version does not know, never fired:"
        " ids 1 (status 12)\n"
    ) in proc.stdout
    assert "total 7 rows, 6 unfinished" in proc.stdout


def test_a_real_terminal_on_stdin_is_asked(seeded: Seeded) -> None:
    """What the terminal tests above stand in for: stdin a pty, to a process of its own."""
    proc = shards_at_a_terminal("y", "drop-expired", "--config", str(seeded.config))
    assert "Drop 1 shard holding 2 unfinished rows? [y/N] " in proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert line_of(proc.stdout, f"dropped {seeded.expired}")
