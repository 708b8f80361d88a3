"""What every workload shares: its options, the shape of a result line, the jobs it stores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.stats import Result
from repos.examples import SmsEntity

ROOT = Path(__file__).resolve().parents[1]
#: Keys every result line carries (None where one does not apply), in this order.
KEYS = (
    "workload",
    "store",
    "driver",
    "n",
    "jobs_per_s",
    "lost",
    "duplicates",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "rss_mib",
    "bytes_per_job",
    "ceiling_jobs_per_s",
    "ratio_to_ceiling",
    "commit",
    "machine",
)
#: The benchmarks' example payload: a 15-character phone number and an ~80-character message.
PHONE = "+15550000000123"
MESSAGE = "Your verification code is 123456. It expires in ten minutes; do not share it!!!"


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The command line, as every workload reads it."""

    store: str  #: mysql-multi, mysql-partitioned or sqlite
    store_given: bool  #: --store was given (else `drop` runs both MySQL layouts)
    driver: str  #: asyncmy or aiomysql
    n: int | None  #: overrides the workload's job count
    rate: int | None  #: W3 (and the peer's W3): jobs per second
    quick: bool  #: small n, for `make bench`
    batch_size: int  #: rows per statement, for the engine and the bare-driver ceiling alike
    writers: int  #: W1's concurrent insert calls, and the insert ceiling's connections
    peer_workers: int  #: APScheduler's thread pool size
    workdir: Path  #: temporary configs, logs, SQLite files
    out_dir: Path  #: kept records (for plot.py) and results.jsonl
    history: bool = True  #: the engines write execution history ([history] enabled)
    backlog: int | None = None  #: W4: a recovery from this many overdue rows instead

    @property
    def layout(self) -> str:
        return "partitioned" if self.store == "mysql-partitioned" else "multi-table"

    @property
    def is_mysql(self) -> bool:
        return self.store.startswith("mysql")

    def pick(self, quick: int, full: int) -> int:
        """The job count: --n if given, else the quick or the full figure."""
        return self.n if self.n is not None else (quick if self.quick else full)


def result(workload: str, opts: Options, n: int | None, **fields: Any) -> Result:
    """A result line: every key of KEYS (None unless given), then the workload's extras."""
    line: Result = dict.fromkeys(KEYS)
    driver = opts.driver if opts.is_mysql else None  # SQLite has no driver to choose
    line.update(workload=workload, store=opts.store, driver=driver, n=n)
    if not opts.history:
        line.update(history=False)
    line.update(commit=commit(), machine=machine())
    line.update(fields)
    return line


def commit() -> str:
    """HEAD of the checkout the harness runs from, or "unknown" outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": sys.version.split()[0]}


def now_ms() -> int:
    """Wall-clock epoch ms: the engine's own clock (SystemClock), so times compare."""
    return time.time_ns() // 1_000_000


def sms(ids: Iterable[int], at_ms: Iterable[int]) -> list[SmsEntity]:
    """Example jobs with the benchmarks' payload (about 100 bytes once encoded)."""
    return [
        SmsEntity(id=i, scheduled_at=_utc(at), phone=PHONE, message=MESSAGE)
        for i, at in zip(ids, at_ms, strict=True)
    ]


def bar(total: int, desc: str, unit: str = "jobs") -> tqdm:
    """A progress bar on stderr; phases shorter than a second or two never show one."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, delay=1.0)


def log(message: str) -> None:
    """A note on stderr, out of the way of the JSON lines on stdout."""
    tqdm.write(message, file=sys.stderr)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
