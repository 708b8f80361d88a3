"""``infinite-scheduler history ENTITY ID`` and ``infinite-scheduler sla`` as a user runs them,
in this process (cli_in_process), on a store whose history an ack wrote: tables and --json,
exit codes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from repos.base import Claimant, ShardPolicy
from repos.examples import SMS, SmsEntity
from repos.history import Attempt, Outcome
from repos.registry import make_repository
from tests.cli_in_process import cli

pytestmark = pytest.mark.timeout(60)
NODE = Claimant("node-a", 7)


async def seeded(store_url: str, tmp_path: Path) -> Path:
    """Job 1: a retry then a success, ending a minute ago and now (the wall clock's)."""
    now_ms = time.time_ns() // 1_000_000
    repo = make_repository(store_url, SMS, ShardPolicy())
    await repo.open()
    try:
        at = datetime.fromtimestamp((now_ms - 90_000) / 1000, UTC)
        await repo.insert(
            [SmsEntity(id=1, scheduled_at=at, phone="+1", message="m")], now_ms=now_ms
        )
        [job] = await repo.claim_due(
            NODE, now_ms=now_ms, before_ms=now_ms, since_ms=now_ms - 86_400_000, limit=1
        )
        due = job.due_ms
        attempts = [
            Attempt(1, job.at_ms, 1, "node-a", "", due, due + 2000, due + 2500, Outcome.RETRY, "E"),
            Attempt(1, job.at_ms, 2, "node-a", "", due, due + 5000, due + 5040, Outcome.OK, None),
        ]
        await repo.mark_done(NODE.epoch, [job.ref], fired_at_ms=now_ms, history=attempts)
    finally:
        await repo.close()
    config = tmp_path / "config.toml"
    config.write_text(f'metrics_port = 0\n[store]\nurl = "{store_url}"\n')
    return config


async def test_history_lists_a_jobs_attempts_newest_first(store_url: str, tmp_path: Path) -> None:
    config = await seeded(store_url, tmp_path)
    table = cli("history", "sms", "1", "--config", str(config))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "attempt", "outcome", "node", "due", "(UTC)", "late", "ms", "took", "ms", "error"
    ]  # fmt: skip
    assert lines[1].split()[:2] == ["2", "ok"] and lines[1].split()[-2:] == ["5000", "40"]
    assert lines[2].split()[:2] == ["1", "retry"] and lines[2].split()[-3:] == ["2000", "500", "E"]
    as_json = cli("history", "sms", "1", "--json", "--config", str(config))
    rows = orjson.loads(as_json.stdout)
    assert [(r["attempt"], r["outcome"], r["duration_ms"]) for r in rows] == [
        (2, "ok", 40),
        (1, "retry", 500),
    ]
    none = cli("history", "sms", "2", "--config", str(config))
    assert (none.returncode, none.stdout) == (
        0,
        "no attempts recorded (none yet, history off, or past [history] retention_days)\n",
    )


async def test_sla_summarises_a_window(store_url: str, tmp_path: Path) -> None:
    config = await seeded(store_url, tmp_path)
    as_json = cli("sla", "--window", "1h", "--json", "--config", str(config))
    assert as_json.returncode == 0, as_json.stderr
    total = orjson.loads(as_json.stdout)["total"]
    assert (total["fired"], total["ok"], total["retried"], total["late"]) == (2, 1, 1, 2)
    assert (total["failed_share"], total["lateness_p99_ms"]) == (0.5, 5000)
    table = cli("sla", "--entity", "sms", "--config", str(config))
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[2].split() == [
        "sms", "-", "2", "100.0%", "50.0%", "0", "2000/5000", "40/500"
    ]  # fmt: skip
    empty = cli("sla", "--entity", "orders", "--config", str(config))
    assert empty.stdout.splitlines()[-1] == "no attempts in this window"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sla", "--window", "soon"], "window 'soon' is not a positive duration"),
        (["sla", "--window", "0s"], "window '0s' is not a positive duration"),
        (["history", "sms", "1", "--limit", "0"], "limit 0 must be an int from 1 to 10000"),
    ],
)
async def test_bad_arguments_exit_2_and_say_why(
    store_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    config = await seeded(store_url, tmp_path)
    done = cli(*args, "--config", str(config))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
