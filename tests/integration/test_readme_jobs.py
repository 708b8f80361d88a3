"""The README's "Managing jobs" session runs as printed: each ``$ infinite-scheduler ...``
command, in order, on a SQLite store holding the three jobs the text names, prints exactly
the lines below it (stdout, then stderr)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repos.base import ShardPolicy
from repos.examples import SMS, SmsEntity
from repos.registry import make_repository

README = Path(__file__).resolve().parents[2] / "README.md"


def session() -> list[tuple[list[str], str]]:
    """(arguments, expected output) of each command of the section's console block."""
    section = README.read_text().split("## Managing jobs\n", 1)[1]
    [block] = re.findall(r"```console\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    steps: list[tuple[list[str], str]] = []
    for chunk in re.split(r"^\$ infinite-scheduler ", block, flags=re.MULTILINE)[1:]:
        command, _, output = chunk.partition("\n")
        steps.append((shlex.split(command), output))
    return steps


@pytest.fixture
async def store_dir(tmp_path: Path) -> Path:
    """A directory with config.toml on a SQLite store holding SMS 1-3 (2030-01-01 9, 10,
    11 h UTC)."""
    url = f"sqlite:///{tmp_path}/store.db"
    repo = make_repository(url, SMS, ShardPolicy(), create_missing=True)
    await repo.open()
    nine = datetime(2030, 1, 1, 9, tzinfo=UTC)
    jobs = [
        SmsEntity(id=i, scheduled_at=nine + timedelta(hours=i - 1), phone="+15550100", message="hi")
        for i in (1, 2, 3)
    ]
    try:
        await repo.insert(jobs, now_ms=int(datetime.now(UTC).timestamp() * 1000))
    finally:
        await repo.close()
    (tmp_path / "config.toml").write_text(f'metrics_port = 0\n[store]\nurl = "{url}"\n')
    return tmp_path


def test_the_managing_jobs_session_prints_what_the_readme_shows(store_dir: Path) -> None:
    steps = session()
    assert len(steps) == 5
    for args, expected in steps:
        done = subprocess.run(
            [sys.executable, "-m", "infinite_scheduler", *args],
            cwd=store_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout + done.stderr == expected, args
