"""The storage benchmarks of the retention issue: flat fetch cost, and drop vs DELETE.

- scale: 10,000 rows due in one 30 s window (today's shard), and 1M, 10M, 50M rows stored in
  seven other shards (three past days DONE, four future days PENDING). The figure is the
  engine's fetch of that window through the adapter (claim_due in batch_size batches until
  the 10,000 are claimed), cold (first after the fill) and the median of the repeats; the
  ratio largest/smallest must stay near 1.
- drop: three shards of n rows each; one dropped by the adapter (drop_shards_before, which
  counts unfinished rows first), one by the bare DDL (DROP TABLE / ALTER TABLE ... DROP
  PARTITION), one emptied by DELETE. Both MySQL layouts unless --store names one.

Filling is bare SQL: a multi-row INSERT seed, then ``INSERT ... SELECT`` doubling.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from benchmarks.ceiling import insert_rows
from benchmarks.common import Options, bar, now_ms, result, sms
from benchmarks.stats import Result
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
from repos.base import Claimant, ShardingRepository
from repos.mysql import sql
from repos.shards import ShardBounds, bounds_of

DAY_MS = 86_400_000
WINDOW_ROWS = 10_000
WINDOW_MS = 30_000
FETCH_REPEATS = 5
SEED_ROWS = 10_000
COPY_CHUNK = 500_000
#: The fetch's claimant; and the epoch of the DONE filler rows (a claim's rows keep its epoch).
CLAIMANT = Claimant("scale-node", 2)
FILLER_EPOCH = 1
#: Filler shards, in days from the window's: DONE in the past, PENDING in the future.
PAST_DAYS = (-3, -2, -1)
FUTURE_DAYS = (1, 2, 3, 4)


async def scale(opts: Options) -> list[Result]:
    if not opts.is_mysql:
        return []
    sizes = [100_000, 1_000_000] if opts.quick else [1_000_000, 10_000_000, 50_000_000]
    today = bounds_of(now_ms(), POLICY.granularity)
    window_ms = today.start_ms + DAY_MS // 2
    days = PAST_DAYS + FUTURE_DAYS
    fillers = [_day(today, d) for d in days]
    lines: list[Result] = []
    async with bench_store(opts, "scale") as url, opened(make_repo(opts, url)) as repo:
        await repo.ensure_shards(fillers[0].start_ms, fillers[-1].end_ms)
        window = sms(range(WINDOW_ROWS), [window_ms + i * 3 for i in range(WINDOW_ROWS)])
        await repo.insert(window, now_ms=now_ms())
        async with bare(opts.driver, database_name("scale")) as conn:
            have = 0
            for size in sizes:
                per_shard = size // len(fillers)
                with bar(per_shard * len(fillers), f"scale fill {size:,}", unit="rows") as p:
                    for day, bounds in zip(days, fillers, strict=True):
                        await grow(conn, opts, bounds, have, per_shard, done=day < 0, progress=p)
                have = per_shard
                timings = [await fetch_ms(repo, window_ms, opts) for _ in range(FETCH_REPEATS)]
                lines.append(_scale_line(opts, size, timings, lines))
    return lines


def _scale_line(opts: Options, size: int, timings: list[float], before: list[Result]) -> Result:
    median = round(statistics.median(timings), 2)
    cold = round(timings[0], 2)
    line = result("scale", opts, size, fetch_ms=median, cold_fetch_ms=cold, window=WINDOW_ROWS)
    first = before[0] if before else line
    line.update(
        ratio_to_smallest=round(median / first["fetch_ms"], 3),
        cold_ratio_to_smallest=round(cold / first["cold_fetch_ms"], 3),
        fetch_repeats=FETCH_REPEATS,
    )
    return line


async def fetch_ms(repo: ShardingRepository[Any, Any], window_ms: int, opts: Options) -> float:
    """One fetch of the window as the fetcher does it; the claims are released afterwards."""
    claimed = 0
    started = time.perf_counter()
    while claimed < WINDOW_ROWS:
        limit = min(opts.batch_size, WINDOW_ROWS - claimed)
        jobs = await repo.claim_due(
            CLAIMANT,
            now_ms=window_ms,
            before_ms=window_ms + WINDOW_MS,
            since_ms=window_ms - DAY_MS,
            limit=limit,
        )
        claimed += len(jobs)
        if len(jobs) < limit:
            break
    elapsed = time.perf_counter() - started
    await repo.take_over(CLAIMANT.epoch, from_ms=window_ms)
    return elapsed * 1000


async def drop(opts: Options) -> list[Result]:
    stores = [opts.store] if opts.store_given else ["mysql-multi", "mysql-partitioned"]
    n = opts.pick(100_000, 1_000_000)
    lines = []
    for store in stores:
        if store.startswith("mysql"):
            lines.append(await _drop_vs_delete(dataclasses.replace(opts, store=store), n))
    return lines


async def _drop_vs_delete(opts: Options, n: int) -> Result:
    today = bounds_of(now_ms(), POLICY.granularity)
    by_adapter, by_ddl, by_delete = (_day(today, d) for d in (-10, -9, -8))
    async with bench_store(opts, "drop") as url, opened(make_repo(opts, url)) as repo:
        await repo.ensure_shards(by_adapter.start_ms, today.end_ms)
        async with bare(opts.driver, database_name("drop")) as conn:
            with bar(3 * n, f"drop fill {opts.layout}", unit="rows") as progress:
                for bounds in (by_adapter, by_ddl, by_delete):
                    await grow(conn, opts, bounds, 0, n, done=True, progress=progress)
            started = time.perf_counter()
            await repo.drop_shards_before(by_adapter.end_ms)
            adapter_s = time.perf_counter() - started
            ddl_s = await _timed(conn, _drop_ddl(opts, by_ddl))
            _, target, _ = shard_target(opts.layout, by_delete)
            delete = f"DELETE FROM {target} WHERE `{sql_names()['at']}` < %s"
            delete_s = await _timed(conn, delete, (by_delete.end_ms,))
    line = result("drop", opts, n, drop_s=round(ddl_s, 3), adapter_drop_s=round(adapter_s, 3))
    line.update(delete_s=round(delete_s, 3), delete_to_drop=round(delete_s / ddl_s, 1))
    return line


def _drop_ddl(opts: Options, bounds: ShardBounds) -> str:
    """The adapter's own drop statement for one shard (repos/mysql/sql.py)."""
    if opts.layout == "partitioned":
        return sql.DROP_PARTITION.format(table="sms", name=f"p{bounds.suffix}")
    return sql.DROP_TABLE.format(table=f"sms_{bounds.suffix}")


async def _timed(conn: Bare, statement: str, args: tuple[Any, ...] = ()) -> float:
    started = time.perf_counter()
    await conn.execute(statement, args)
    return time.perf_counter() - started


async def grow(
    conn: Bare,
    opts: Options,
    bounds: ShardBounds,
    have: int,
    want: int,
    *,
    done: bool,
    progress: Any,
) -> None:
    """Grow a shard from `have` to `want` rows (ids 0..want-1, due_at rising with the id).

    A seed of multi-row INSERTs, then INSERT ... SELECT copies of the rows [0, k) as
    [have, have + k): ids stay contiguous and index inserts stay appends, which is fast.
    """
    if have == 0 and want > 0:
        seed = min(want, SEED_ROWS)
        await insert_rows([conn], opts, bounds, seed, due_ms=None, desc="seed", spacing_ms=1)
        have = seed
        progress.update(seed)
    insert_target, target, extra = shard_target(opts.layout, bounds)
    names = sql_names()
    shard_at = ", shard_at" if extra else ""
    copy = (
        f"INSERT INTO {insert_target} (`{names['id']}`, `{names['at']}`, payload, status, due_at,"
        f" attempts, claim_epoch, claimed_by, claimed_at{shard_at})"
        f" SELECT `{names['id']}` + %s, `{names['at']}` + %s, payload, %s, due_at + %s,"
        f" attempts, %s, claimed_by, claimed_at{shard_at} FROM {target}"
        f" WHERE `{names['id']}` < %s"
    )
    # DONE rows carry the epoch of the claim that fired them: the claim index's PENDING range
    # (claim_epoch 0) holds PENDING rows only.
    status, epoch = (2, FILLER_EPOCH) if done else (0, 0)
    if have and done:
        await conn.execute(
            f"UPDATE {target} SET status = 2, claim_epoch = %s WHERE status <> 2", (epoch,)
        )
    while have < want:
        add = min(have, want - have, COPY_CHUNK)
        await conn.execute(copy, (have, have, status, have, epoch, add))
        have += add
        progress.update(add)


def _day(today: ShardBounds, days: int) -> ShardBounds:
    return bounds_of(today.start_ms + days * DAY_MS, POLICY.granularity)
