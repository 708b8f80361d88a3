"""W8 schedules: N fixed-rate schedules firing every minute for D minutes, engine in its own
process (RESULTS.md, "W8").

The schedules are stored first (the first through the Python API, which checks and encodes the
payload template; on MySQL the rest as copies of its row in multi-row INSERTs, as an import
would, since one create at a time takes minutes for 100,000), their anchors spread
evenly over one minute (N/60 occurrences a second: a steady load, not a burst), starting once
the engine is up. The engine materialises their occurrences (under its lease, a pass every
``[schedules] interval_s``), claims and fires them like one-shot jobs. Figures: lateness
p50/p99/max of every fire, occurrences lost (due in the run and never fired) and duplicated,
and CPU per occurrence of mariadbd and of the engine process over the whole run (so the
materialisation, the claims, the fires and the acks: everything an occurrence costs).
Full: 100,000 schedules for 5 minutes; --quick: 2,000 for 1 minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from benchmarks.common import MESSAGE, PHONE, Options, bar, log, now_ms, result
from benchmarks.cpu import cpu_use
from benchmarks.records import Tail
from benchmarks.runner import engine_running, wait_fires
from benchmarks.stats import Result, accounting, lateness
from benchmarks.store import bare, bench_store, make_repo, opened
from infinite_scheduler.clock import SystemClock
from infinite_scheduler.schedules.book import ScheduleBook
from infinite_scheduler.schedules.ids import occurrence_key
from repos.examples import SMS
from repos.registry import make_schedule_store
from repos.schedules import ScheduleStore

PERIOD_MS = 60_000
#: Schedules created at once (the schedules table's pool has two connections).
CREATE_AT_ONCE = 8
GRACE_S = 10.0


async def w8(opts: Options) -> list[Result]:
    n = opts.pick(2_000, 100_000)
    minutes = 1 if opts.quick else 5
    async with bench_store(opts, "w8") as url:
        # Anchors start once the schedules are stored and the engine is up (a generous guess:
        # bulk-loaded on MySQL, 0.3 ms a schedule, one at a time 10 ms; the engine takes a few
        # seconds, its first pass making 40 s of occurrences).
        start_ms = now_ms() + 15_000 + int(n * (0.3 if opts.is_mysql else 10))
        ids = await _create(opts, url, n, start_ms)
        end_ms = start_ms + minutes * PERIOD_MS
        expected = [
            int(occurrence_key(int, sid, 0, at))
            for i, sid in enumerate(ids)
            for at in range(_anchor(start_ms, i, n), end_ms, PERIOD_MS)
        ]
        if now_ms() > start_ms - 10_000:
            log("W8: the schedules took longer to store than planned; the first fires show it")
        async with engine_running(opts, url, "w8") as engine:
            tail = Tail(engine.record)
            with (
                bar(len(expected), "W8 occurrences") as progress,
                cpu_use(engine.pid, server=opts.is_mysql) as cpu,
            ):
                deadline = time.monotonic() + (end_ms - now_ms()) / 1000 + GRACE_S
                await wait_fires(tail, len(expected), deadline_s=deadline, progress=progress)
    tail.poll()
    fires = tail.fires
    late = fires.lateness_ms()
    in_run = [late[i] for i, at in enumerate(fires.scheduled_ms) if at < end_ms]
    line = result("w8", opts, len(expected), schedules=n, minutes=minutes)
    counts = accounting(fires, expected)
    line.update(occurrences=len(expected), **counts, **cpu.per_job_us(len(expected)))
    line.update(lateness(in_run))
    return [line]


def _anchor(start_ms: int, i: int, n: int) -> int:
    return start_ms + i * PERIOD_MS // n


#: Columns of a bulk-loaded schedule row (repos/schedules.py ScheduleRow), id aside.
_COLUMNS = (
    "name", "entity", "trigger_json", "template_json", "start_ms", "end_ms", "max_runs", "runs",
    "priority", "category", "owner", "misfire", "paused", "state", "next_at_ms", "last_at_ms",
    "generation", "version", "created_at_ms", "updated_at_ms",
)  # fmt: skip
BULK_ROWS = 1000


async def _create(opts: Options, url: str, n: int, start_ms: int) -> list[int]:
    """Store the schedules; their ids, in order."""
    if not opts.is_mysql:
        return await _create_each(opts, url, n, start_ms)
    [first] = await _create_each(opts, url, 1, start_ms, n_anchors=n)
    async with opened_store(url, opts) as store:
        row = await store.get(first)
    database = url.rsplit("/", 1)[1]
    insert = f"INSERT INTO schedules ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    async with bare(opts.driver, database) as conn:
        with bar(n - 1, "W8 schedules", unit="schedules") as progress:
            for lo in range(1, n, BULK_ROWS):
                rows = []
                for i in range(lo, min(n, lo + BULK_ROWS)):
                    anchor = _anchor(start_ms, i, n)
                    trigger = orjson.dumps({"kind": "rate", "every_s": 60, "anchor_ms": anchor})
                    values = {**row.values(), "name": f"w8-{i}", "trigger_json": trigger.decode(),
                              "next_at_ms": anchor}  # fmt: skip
                    rows.append(tuple(values[c] for c in _COLUMNS))
                async with conn.conn.cursor() as cursor:
                    await cursor.executemany(insert, rows)
                progress.update(len(rows))
        found = await conn.fetch_all("SELECT id FROM schedules ORDER BY id")
    return [int(r[0]) for r in found]


@asynccontextmanager
async def opened_store(url: str, opts: Options) -> AsyncIterator[ScheduleStore]:
    store = make_schedule_store(url, driver="aiomysql" if opts.driver == "aiomysql" else "asyncmy")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _create_each(
    opts: Options, url: str, n: int, start_ms: int, *, n_anchors: int | None = None
) -> list[int]:
    """Store the schedules through the Python API; their ids, in order."""
    n_anchors = n_anchors or n
    ids: list[int] = [0] * n
    async with opened(make_repo(opts, url)) as repo, opened_store(url, opts) as store:
        book = ScheduleBook(store, {SMS.name: repo}, clock=SystemClock(), categories=())
        template: dict[str, Any] = {"phone": PHONE, "message": MESSAGE}
        with bar(n, "W8 schedules", unit="schedules") as progress:

            async def create(i: int) -> None:
                anchor = _anchor(start_ms, i, n_anchors)
                trigger = {"kind": "rate", "every_s": 60, "anchor_ms": anchor}
                made = await book.create(f"w8-{i}", SMS, trigger, template)
                ids[i] = made.id
                progress.update(1)

            for first in range(0, n, CREATE_AT_ONCE):
                await asyncio.gather(*map(create, range(first, min(n, first + CREATE_AT_ONCE))))
    return ids
