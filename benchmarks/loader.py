"""The loader beside the engine: stores jobs through the repository and reads the rows back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from benchmarks.common import bar, now_ms
from repos.base import RowRef, ShardingRepository, Status, StoredRow
from repos.examples import SmsEntity
from repos.statements import chunks

T = TypeVar("T")


def spread(start_ms: int, span_ms: float, n: int) -> list[int]:
    """n due times evenly spaced over [start_ms, start_ms + span_ms)."""
    return [start_ms + int(i * span_ms / n) for i in range(n)]


async def load(
    repo: ShardingRepository[Any, Any],
    jobs: Sequence[SmsEntity],
    batch_size: int,
    desc: str,
) -> float:
    """Make the jobs' shards (the engine makes them ahead too), then insert them from one
    caller; return the seconds the inserts took."""
    await make_shards(repo, jobs)
    return await insert_all(repo, jobs, batch_size, desc)


async def make_shards(repo: ShardingRepository[Any, Any], jobs: Sequence[SmsEntity]) -> None:
    times = [int(j.scheduled_at.timestamp() * 1000) for j in jobs]
    await repo.ensure_shards(min(times), max(times) + 1)


async def insert_all(
    repo: ShardingRepository[Any, Any],
    jobs: Sequence[SmsEntity],
    batch_size: int,
    desc: str,
    *,
    writers: int = 1,
) -> float:
    """Insert in batch_size calls (one multi-row INSERT each, the engine's ingest path), from
    `writers` concurrent callers as a busy producer would; return the seconds it took."""
    with bar(len(jobs), desc) as progress:
        started = time.perf_counter()
        await in_parallel(chunks(jobs, batch_size), [_inserter(repo, progress)] * writers)
        return time.perf_counter() - started


def _inserter(
    repo: ShardingRepository[Any, Any], progress: Any
) -> Callable[[Sequence[SmsEntity]], Awaitable[None]]:
    async def insert(chunk: Sequence[SmsEntity]) -> None:
        await repo.insert(chunk, now_ms=now_ms())
        progress.update(len(chunk))

    return insert


async def in_parallel(
    batches: Iterator[T], workers: Sequence[Callable[[T], Awaitable[None]]]
) -> None:
    """Every batch through one of `workers`, all of them busy at once, each taking the next."""

    async def worker(work: Callable[[T], Awaitable[None]]) -> None:
        for batch in batches:  # one shared iterator: a batch goes to exactly one worker
            await work(batch)

    await asyncio.gather(*(worker(w) for w in workers))


async def count_done(repo: ShardingRepository[Any, Any]) -> int:
    shards = await repo.list_shards(counts=True)
    return sum(s.rows.get(Status.DONE, 0) for s in shards)


async def wait_done(repo: ShardingRepository[Any, Any], n: int, timeout_s: float) -> int:
    """Poll the store until n rows are DONE (acked) or timeout_s passed; return DONE rows."""
    deadline = time.monotonic() + timeout_s
    done = await count_done(repo)
    while done < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        done = await count_done(repo)
    return done


async def stored_rows(
    repo: ShardingRepository[Any, Any], start_ms: int, end_ms: int
) -> list[StoredRow]:
    """Every row with sharding time in [start_ms, end_ms), a page at a time."""
    rows: list[StoredRow] = []
    while True:
        after = RowRef(rows[-1].key, rows[-1].at_ms) if rows else None
        page = await repo.page(start_ms=start_ms, end_ms=end_ms, after=after, limit=5000)
        rows.extend(page)
        if len(page) < 5000:
            return rows
