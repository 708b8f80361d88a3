"""Listing jobs over 1M and 10M stored rows (issue 15; RESULTS.md, "Listing jobs over 10M rows").

The store holds SMS jobs in SHARD_DAYS day shards (ten past days: DONE, some FAILED; twenty
future ones: PENDING, some PAUSED and CANCELLED), in three categories. It is filled with bare
SQL, as the storage workloads fill theirs: the first size as multi-row INSERTs, then each row
copied (``INSERT ... SELECT``, new ids, a few ms later) until the next size is stored, so the
rows of every size are spread over every shard. At each size, JobService.list_jobs is timed,
PAGES pages of each kind (one call each, through the service as the CLI and the API call it):

- ``state_first``: PENDING jobs in a random six-hour window of the future days, the first page;
- ``state_deep``: PENDING jobs over all the future days, the page after a cursor at a random
  point of them (a keyset page millions of rows deep);
- ``category_first`` / ``category_deep``: one category over every day, first page / after a
  random cursor.

Figures per kind and size: p50/p99/max ms per page of PAGE_SIZE jobs. Bar: p99 <= 50 ms, and
flat from 1M to 10M. MySQL only (SQLite is not the store for 10M jobs). Full: 1M and 10M;
--quick: 20,000 and 200,000; --n N: N/10 and N.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from benchmarks.common import Options, bar, log, now_ms, result, sms
from benchmarks.stats import Result, lateness
from benchmarks.store import (
    POLICY,
    Bare,
    bare,
    bench_store,
    database_name,
    make_repo,
    opened,
    shard_target,
    sql_names,
)
from infinite_scheduler.config import load_config
from infinite_scheduler.management import JobFilter, JobPage, JobService, PageRequest
from repos.base import PAUSED_EPOCH, Status
from repos.examples import SMS
from repos.mysql.literals import bytes_literal, literal
from repos.shards import ShardBounds, bounds_of

DAY_MS = 86_400_000
#: Day shards, from PAST_DAYS days ago: the past ones finished, the rest still to come.
SHARD_DAYS = 30
PAST_DAYS = 10
PAGES = 200
PAGE_SIZE = 100
WINDOW_MS = 6 * 3_600_000
ROWS_PER_INSERT = 1000
#: Of every 10 rows: 1 in "marketing", 2 in "otp", the rest in none.
CATEGORIES = ("marketing", "otp", "otp", "", "", "", "", "", "", "")
DONE_EPOCH = 1


async def listing(opts: Options) -> list[Result]:
    if not opts.is_mysql:
        return []
    top = opts.pick(200_000, 10_000_000)
    sizes = [top // 10, top]
    today = bounds_of(now_ms(), POLICY.granularity)
    days = [_day(today, d - PAST_DAYS) for d in range(SHARD_DAYS)]
    lines: list[Result] = []
    async with bench_store(opts, "list") as url:
        async with opened(make_repo(opts, url)) as repo:
            await repo.ensure_shards(days[0].start_ms, days[-1].end_ms)
        async with bare(opts.driver, database_name("list")) as conn:
            await _seed(conn, opts, days, sizes[0] // SHARD_DAYS)
            config = load_config(
                None,
                store={"url": url, "layout": opts.layout, "driver": opts.driver},
                metrics_port=0,
            )
            for size in sizes:
                await _grow(conn, opts, days, sizes[0] // SHARD_DAYS, size // SHARD_DAYS)
                await conn.execute("ANALYZE TABLE " + ", ".join(_tables(opts, days)))
                async with JobService(config, SMS) as jobs:
                    lines += await _time_pages(jobs, opts, days, size, lines)
    return lines


async def _seed(conn: Bare, opts: Options, days: list[ShardBounds], per_shard: int) -> None:
    """per_shard rows into every day shard, spread over the day: multi-row INSERTs."""
    payload = bytes_literal(SMS.encode(sms([0], [days[0].start_ms])[0]).payload)
    columns = (
        "`{id}`, `{at}`, payload, status, due_at, attempts, claim_epoch, claimed_by, claimed_at,"
        " fired_at, priority, category"
    ).format(**sql_names())
    with bar(per_shard * len(days), "list seed", unit="rows") as progress:
        for shard_no, bounds in enumerate(days):
            insert_target, _, extra = shard_target(opts.layout, bounds)
            extra_column = ", shard_at" if extra else ""
            spacing = (bounds.end_ms - bounds.start_ms) // per_shard
            past = shard_no < PAST_DAYS
            for lo in range(0, per_shard, ROWS_PER_INSERT):
                rows = []
                for i in range(lo, min(per_shard, lo + ROWS_PER_INSERT)):
                    key = i * len(days) + shard_no
                    at = bounds.start_ms + i * spacing
                    status, epoch, attempts, fired = _state(i, past, at)
                    tail = "".join(f",{v}" for v in extra)
                    rows.append(
                        f"({key},{at},{payload},{status},{at},{attempts},{epoch},"
                        f"{literal('node-1' if past else '')},{at if past else 0},{fired},500,"
                        f"{literal(CATEGORIES[i % len(CATEGORIES)])}{tail})"
                    )
                await conn.execute(
                    f"INSERT INTO {insert_target} ({columns}{extra_column}) VALUES {','.join(rows)}"
                )
                progress.update(len(rows))


def _state(i: int, past: bool, at: int) -> tuple[int, int, int, int]:
    """(status, claim_epoch, attempts, fired_at) of the i-th row of a past or future day."""
    if past:
        return (
            (Status.FAILED, DONE_EPOCH, 3, 0) if i % 20 == 0 else (Status.DONE, DONE_EPOCH, 1, at)
        )
    if i % 20 == 0:
        return Status.PAUSED, PAUSED_EPOCH, 0, 0
    if i % 20 == 1:
        return Status.CANCELLED, -1, 0, 0
    return Status.PENDING, 0, 0, 0


async def _grow(
    conn: Bare, opts: Options, days: list[ShardBounds], seeded: int, per_shard: int
) -> None:
    """Every shard from however many rows it holds to per_shard: copies of the seeded rows,
    copy k with ids shifted by k * (all seeded rows) and times by k ms."""
    names = sql_names()
    total_seeded = seeded * len(days)
    have = await _count(conn, opts, days[0])
    with bar((per_shard - have) * len(days), "list grow", unit="rows") as progress:
        while have + seeded <= per_shard:  # whole copies: per_shard rounded down
            copy = have // seeded
            for bounds in days:
                insert_target, target, extra = shard_target(opts.layout, bounds)
                shard_at = ", shard_at" if extra else ""
                statement = (
                    f"INSERT INTO {insert_target} (`{names['id']}`, `{names['at']}`, payload,"
                    f" status, due_at, attempts, claim_epoch, claimed_by, claimed_at, fired_at,"
                    f" priority, category{shard_at})"
                    f" SELECT `{names['id']}` + %s, `{names['at']}` + %s, payload, status,"
                    f" due_at + %s, attempts, claim_epoch, claimed_by, claimed_at, fired_at,"
                    f" priority, category{shard_at} FROM {target} WHERE `{names['id']}` < %s"
                )
                shift = copy * total_seeded
                await conn.execute(statement, (shift, copy, copy, total_seeded))
                progress.update(seeded)
            have += seeded


async def _count(conn: Bare, opts: Options, bounds: ShardBounds) -> int:
    _, target, _ = shard_target(opts.layout, bounds)
    [(n,)] = await conn.fetch_all(f"SELECT COUNT(*) FROM {target}")
    return int(n)


def _tables(opts: Options, days: list[ShardBounds]) -> list[str]:
    if opts.layout == "partitioned":
        return [f"`{SMS.table_prefix}`"]
    return [shard_target(opts.layout, bounds)[0] for bounds in days]


async def _time_pages(
    jobs: JobService, opts: Options, days: list[ShardBounds], size: int, before: list[Result]
) -> list[Result]:
    rng = random.Random(size)
    future = days[PAST_DAYS].start_ms, days[-1].end_ms
    pending = frozenset({Status.PENDING})
    last = future[1] - 2 * DAY_MS  # a cursor two days before the end has a page after it

    async def state_window() -> tuple[JobFilter, str | None]:
        start = rng.randrange(future[0], future[1] - WINDOW_MS)
        return JobFilter(
            entity="sms", states=pending, from_ms=start, before_ms=start + WINDOW_MS
        ), None

    async def state_deep() -> tuple[JobFilter, str | None]:
        whole = JobFilter(entity="sms", states=pending, from_ms=future[0], before_ms=future[1])
        return whole, await _cursor_at(jobs, whole, rng.randrange(future[0], last))

    async def category_first() -> tuple[JobFilter, str | None]:
        return JobFilter(entity="sms", category=rng.choice(["marketing", "otp"])), None

    async def category_deep() -> tuple[JobFilter, str | None]:
        whole = JobFilter(entity="sms", category=rng.choice(["marketing", "otp"]))
        return whole, await _cursor_at(jobs, whole, rng.randrange(days[0].start_ms, last))

    kinds: dict[str, Callable[[], Awaitable[tuple[JobFilter, str | None]]]] = {
        "state_first": state_window,
        "state_deep": state_deep,
        "category_first": category_first,
        "category_deep": category_deep,
    }
    lines = []
    for kind, make in kinds.items():
        timings: list[float] = []
        with bar(PAGES, f"list {kind} at {size:,}", unit="pages") as progress:
            for _ in range(PAGES):
                filter, cursor = await make()
                started = time.perf_counter()
                page = await jobs.list_jobs(filter, PageRequest(size=PAGE_SIZE, cursor=cursor))
                timings.append((time.perf_counter() - started) * 1000)
                _check(page, filter)
                progress.update(1)
        line = result("list", opts, size, kind=kind, pages=PAGES, page_size=PAGE_SIZE)
        line.update({k: v for k, v in lateness(timings).items() if k != "min_ms"})
        smaller = [b for b in before if b.get("kind") == kind]
        if smaller and smaller[0]["p99_ms"]:
            line.update(p99_to_smallest=round(line["p99_ms"] / smaller[0]["p99_ms"], 2))
        log(f"list {kind} at {size:,}: p50 {line['p50_ms']} p99 {line['p99_ms']} ms")
        lines.append(line)
    return lines


async def _cursor_at(jobs: JobService, whole: JobFilter, at_ms: int) -> str | None:
    """A cursor of `whole` just before the first of its jobs at or after at_ms: what a caller
    paging through `whole` holds when it gets there."""
    near = await jobs.list_jobs(replace(whole, from_ms=at_ms), PageRequest(size=1))
    return near.next_cursor


def _check(page: JobPage, filter: JobFilter) -> None:
    """A page must be full and match its filter, or the timing means nothing."""
    if len(page.jobs) != PAGE_SIZE:
        raise AssertionError(f"a page of {len(page.jobs)} jobs, not {PAGE_SIZE}: {filter}")
    for job in page.jobs:
        if filter.category is not None and job.category != filter.category:
            raise AssertionError(f"job {job.id} of category {job.category!r}: {filter}")
        if filter.states and job.state != "PENDING":
            raise AssertionError(f"job {job.id} is {job.state}: {filter}")


def _day(today: ShardBounds, days: int) -> ShardBounds:
    return bounds_of(today.start_ms + days * DAY_MS, POLICY.granularity)
