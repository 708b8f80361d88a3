"""The peer under test, in its own process: APScheduler 3.11 with its SQLAlchemy job store.

    python -m benchmarks.peer_app --db URL --record PATH --n N --start-ms MS --span-ms MS
                                  [--workers 10] [--no-fire] [--deadline-s 120]

Tuned fairly: a thread pool of --workers, ``misfire_grace_time=None`` (its default of 1 s
silently skips a job that is over a second late, which would read as lost jobs) and coalescing
off. The scheduler starts paused; the n jobs (ids 1..n, one DateTrigger each, spread evenly over
[start, start + span)) are added through the running scheduler, one job store INSERT each, which
is how an application adds them. Then it resumes and runs until all n fired (or the deadline).

Lines on stdout: ``LOADED <seconds>`` and ``RESUMED <epoch ms>``; the records (the layout of
benchmarks/records.py) are written to --record at the end.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from benchmarks.common import MESSAGE, PHONE

RECORDS: array[int] = array("q")
LOCK = threading.Lock()


def fire(job_id: int, scheduled_ms: int, phone: str, message: str) -> None:
    """The peer's no-op handler: records (id, scheduled ms, fired µs) as the engine's does."""
    fired_us = time.time_ns() // 1000
    with LOCK:
        RECORDS.extend((job_id, scheduled_ms, fired_us))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=args.db)},
        executors={"default": ThreadPoolExecutor(max_workers=args.workers)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    started = time.perf_counter()
    for i in range(1, args.n + 1):
        at_ms = args.start_ms + (i - 1) * args.span_ms // args.n
        scheduler.add_job(
            fire,
            "date",
            run_date=datetime.fromtimestamp(at_ms / 1000, UTC),
            args=(i, at_ms, PHONE, MESSAGE),
            id=str(i),
        )
    _say(f"LOADED {time.perf_counter() - started:.6f}")
    if args.fire:
        _say(f"RESUMED {time.time_ns() // 1_000_000}")
        scheduler.resume()
        deadline = time.monotonic() + args.deadline_s
        while len(RECORDS) < 3 * args.n and time.monotonic() < deadline:
            time.sleep(0.01)
    scheduler.shutdown(wait=True)
    with LOCK:
        data = RECORDS.tobytes()
    Path(args.record).write_bytes(data)
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="APScheduler, as the benchmarks' peer")
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of the job store")
    parser.add_argument("--record", required=True, metavar="PATH")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--start-ms", type=int, required=True)
    parser.add_argument("--span-ms", type=int, default=0)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--no-fire", dest="fire", action="store_false", help="only add the jobs")
    parser.add_argument("--deadline-s", type=float, default=120.0)
    return parser


if __name__ == "__main__":
    sys.exit(main())
