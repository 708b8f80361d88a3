"""The claim of a backlog by effective priority (claim_due(boost_per_minute=...), repos/ranked.py)
on the real stores: what it reads (the scan bound, the window bound), what it locks (only the
rows it takes), and claims that race (each row once; rows taken meanwhile are replaced).

The order itself is tests/integration/test_priorities.py's. Every test runs on each store of
tests/conftest.py's ``backend`` but those about locks, which MySQL's claims take and SQLite's
single writer does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from repos import ranked
from repos.base import Claimant, ClaimedJob, ShardingRepository, priority_of, rank
from repos.entity import EncodedRow
from repos.mysql.driver import Tx

pytestmark = pytest.mark.timeout(60)

Repo = ShardingRepository[Any, Any]
MakeRepo = Callable[..., Awaitable[Repo]]
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000
SINCE = T0 - 60 * MINUTE


@dataclass(frozen=True)
class MysqlBackend:
    kind: str = "mysql"
    layout: str = "multi-table"
    driver: str = "asyncmy"


MYSQL_ONLY = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            MysqlBackend(layout=layout, driver=driver),
            marks=pytest.mark.mysql,
            id=f"mysql-{short}-{driver}",
        )
        for short, layout in (("multi", "multi-table"), ("partitioned", "partitioned"))
        for driver in ("asyncmy", "aiomysql")
    ],
    indirect=True,
)


async def claim(
    repo: Repo, limit: int, *, node: str = "node-a", boost: float = 10, ranked_: bool = True
) -> list[Any]:
    """A claim at T0 of the rows due by then, ranked (or in due order): their ids, in order."""
    jobs = await repo.claim_due(
        Claimant(node, 1),
        now_ms=T0,
        before_ms=T0,
        since_ms=SINCE,
        limit=limit,
        boost_per_minute=boost if ranked_ else None,
    )
    return [job.key for job in jobs]


def backlog(n: int, *, high: dict[int, int] | None = None) -> list[EncodedRow]:
    """n rows due a millisecond apart from T0 - 30 minutes, ids 0..n-1 in due order, priority
    500 but for `high` (id -> priority)."""
    high = high or {}
    return [EncodedRow(i, T0 - 30 * MINUTE + i, b"{}", high.get(i, 500)) for i in range(n)]


# -- what a ranked claim reads ----------------------------------------------------------------


async def test_priority_orders_within_the_oldest_scan_rows_and_not_beyond(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan bound (fetcher.py's docstring says what it means): with RANKED_SCAN_ROWS 10,
    the priority-900 row 6th oldest is claimed first, the priority-1000 row 26th oldest is
    not, until the claims reach it."""
    monkeypatch.setattr(ranked, "RANKED_SCAN_ROWS", 10)
    assert await repo.insert_rows(backlog(30, high={5: 900, 25: 1000}), now_ms=T0) == 30
    assert await claim(repo, 3) == [5, 0, 1]
    assert await claim(repo, 14) == [2, 3, 4, *range(6, 17)]
    assert await claim(repo, 2) == [25, 17]  # within the oldest ten now
    assert sorted(await claim(repo, 100)) == [*range(18, 25), *range(26, 30)]


async def test_without_a_scan_bound_in_reach_the_high_priority_row_goes_first(
    repo: Repo,
) -> None:
    """The same backlog with the default RANKED_SCAN_ROWS: the priority-1000 row first."""
    assert await repo.insert_rows(backlog(30, high={5: 900, 25: 1000}), now_ms=T0) == 30
    assert await claim(repo, 3) == [25, 5, 0]


async def test_the_window_bound_leaves_out_no_row_that_ranks_among_the_best(repo: Repo) -> None:
    """999 points a minute: a row can rank among the best n only if due less than a minute
    after the n-th oldest (repos/ranked.py). Row 2, priority 1000, due 59 s after row 1
    (priority 1), outranks it by 17.65 points: claimed first; row 3, due 61 s after, ranks
    below row 1 whatever its priority."""
    rows = [
        EncodedRow(1, T0 - 10 * MINUTE, b"{}", 1),
        EncodedRow(2, T0 - 10 * MINUTE + 59_000, b"{}", 1000),
        EncodedRow(3, T0 - 10 * MINUTE + 61_000, b"{}", 1000),
    ]
    assert await repo.insert_rows(rows, now_ms=T0) == 3
    boost_per_ms = 999 / MINUTE
    assert rank(rows[1].at_ms, 1000, boost_per_ms) < rank(rows[0].at_ms, 1, boost_per_ms)
    assert rank(rows[2].at_ms, 1000, boost_per_ms) > rank(rows[0].at_ms, 1, boost_per_ms)
    assert await claim(repo, 1, boost=999) == [2]
    assert await claim(repo, 1, boost=999) == [1]
    assert await claim(repo, 1, boost=999) == [3]


# -- what it claims when claims race ----------------------------------------------------------


async def test_two_claimers_alternating_ranked_claims_take_every_row_once(
    make_repo: MakeRepo,
) -> None:
    """Two nodes (connections of their own) take turns: each claim in rank order, every row
    claimed by one of them, once, and a claim short only when the backlog ran out."""
    first = await make_repo()
    high = {i: 500 + (i * 37) % 500 for i in range(0, 60, 3)}
    assert await first.insert_rows(backlog(60, high=high), now_ms=T0) == 60
    second = await make_repo()  # opened after: it knows the shard
    claimed: list[Any] = []
    turn = 0
    while True:
        repo, node = (first, "node-a") if turn % 2 == 0 else (second, "node-b")
        jobs = await repo.claim_due(
            Claimant(node, turn % 2 + 1), now_ms=T0, before_ms=T0, since_ms=SINCE, limit=7,
            boost_per_minute=10,
        )  # fmt: skip
        assert [order(j) for j in jobs] == sorted(order(j) for j in jobs)
        claimed += [job.key for job in jobs]
        turn += 1
        if len(jobs) < 7:
            break
    assert sorted(claimed) == list(range(60))
    assert turn == 60 // 7 + 1


def order(job: ClaimedJob) -> tuple[float, int]:
    return rank(job.due_ms, priority_of(job.options), 10 / MINUTE), job.due_ms


@asynccontextmanager
async def claim_held_open(
    monkeypatch: pytest.MonkeyPatch, repo: Repo, limit: int
) -> AsyncIterator[asyncio.Task[list[Any]]]:
    """A ranked claim of `repo` by node-a, held inside its transaction once it has locked its
    rows (before it marks them claimed) for the `with` block; then let go. Yields its task."""
    locked, go_on = asyncio.Event(), asyncio.Event()
    execute = Tx.execute

    async def pausing(tx: Tx, statement: str, args: Any = None) -> int:
        if "SET status = 1, claim_epoch" in statement and not locked.is_set():
            locked.set()
            await go_on.wait()
        return await execute(tx, statement, args)

    monkeypatch.setattr(Tx, "execute", pausing)
    task = asyncio.create_task(claim(repo, limit))
    await asyncio.wait_for(locked.wait(), 10)
    try:
        yield task
    finally:
        go_on.set()
        await task


@MYSQL_ONLY
async def test_a_ranked_claim_locks_only_the_rows_it_takes(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a ranked claim of 5 holds its transaction open, another node's claim in due order
    (SKIP LOCKED) gets every other due row: a claim that locked the whole backlog it read
    would leave it none."""
    first = await make_repo()
    assert await first.insert_rows(backlog(30, high={20: 900, 25: 1000}), now_ms=T0) == 30
    second = await make_repo()
    async with claim_held_open(monkeypatch, first, 5) as held:
        others = await claim(second, 100, node="node-b", ranked_=False)
    assert await held == [25, 20, 0, 1, 2]
    assert others == [*range(3, 20), *range(21, 25), *range(26, 30)]


@MYSQL_ONLY
async def test_a_ranked_claim_replaces_the_rows_another_claim_holds_with_the_next_best(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both nodes rank the same rows best; the second finds them locked by the first's open
    transaction and claims the next best instead, as many as it asked for: a short claim
    would end the ranked claims of a backlog still there (infinite_scheduler/fetcher.py)."""
    first = await make_repo()
    high = {10: 1000, 11: 990, 12: 980, 13: 970, 14: 960, 15: 950}
    assert await first.insert_rows(backlog(20, high=high), now_ms=T0) == 20
    second = await make_repo()
    async with claim_held_open(monkeypatch, first, 3) as held:
        assert await claim(second, 4, node="node-b") == [13, 14, 15, 0]
    assert await held == [10, 11, 12]
