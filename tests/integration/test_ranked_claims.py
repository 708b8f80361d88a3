"""The claim of a backlog by effective priority (claim_due(boost_per_minute=...), repos/ranked.py)
on the real stores: what it reads (the scan bound, the window bound, the claim index alone),
what it locks (only the rows it takes), claims that race (each row once; rows taken meanwhile
are replaced), and shards whose claim index predates priority (rebuilt when found).

The order itself is tests/integration/test_priorities.py's. Every test runs on each store of
tests/conftest.py's ``backend`` but those about locks, which MySQL's claims take and SQLite's
single writer does not.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from repos import ranked
from repos.base import Claimant, ClaimedJob, ShardingRepository, priority_of, rank
from repos.entity import EncodedRow
from repos.mysql import sql as mysql_sql
from repos.mysql.driver import Tx
from repos.shards import Granularity, bounds_of
from repos.sqlite import sql as sqlite_sql

pytestmark = pytest.mark.timeout(60)

Repo = ShardingRepository[Any, Any]
MakeRepo = Callable[..., Awaitable[Repo]]
RawSql = Callable[[Repo, str], Awaitable[None]]
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


async def test_priority_orders_a_backlog_beyond_the_old_bound_of_20000_rows(repo: Repo) -> None:
    """25,000 rows due, the priority-1000 one due last: claimed first. Step 1 reads the claim
    index alone, so the whole window bound is within RANKED_SCAN_ROWS (before, the oldest
    20,000 only: the row waited for 20,000 others to be claimed)."""
    n = 25_000
    assert ranked.RANKED_SCAN_ROWS >= n
    assert await repo.insert_rows(backlog(n, high={n - 1: 1000}), now_ms=T0) == n
    assert await claim(repo, 3) == [n - 1, 0, 1]


async def test_a_due_row_of_a_status_this_version_does_not_know_is_not_claimed(
    repo: Repo, backend: Any, raw_sql: RawSql
) -> None:
    """Step 1 does not test status (it is in no index): such a row in the PENDING range is
    ranked first, then not taken by step 2, and the next best replace it: the claim is
    full, not short (a short claim ends the ranked claims of a backlog still there)."""
    assert await repo.insert_rows(backlog(10, high={9: 1000}), now_ms=T0) == 10
    for table in await claim_index_columns(repo, backend):
        await raw_sql(repo, f"UPDATE {quoted(backend, table)} SET status = 9 WHERE id = 9")
    assert await claim(repo, 3) == [0, 1, 2]


# -- the claim index: its shape, and shards made before it had priority ----------------------


async def claim_index_columns(repo: Repo, backend: Any) -> dict[str, list[str]]:
    """Each shard table's claim index, by table: its columns, in order."""
    if backend.kind == "sqlite":
        with closing(sqlite3.connect(cast(Any, repo).path)) as db:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'sms%'"
                )
            ]
            return {
                t: [c for (c,) in db.execute(f'SELECT name FROM pragma_index_info("ix_{t}_claim")')]
                for t in tables
            }
    async with cast(Any, repo)._ex.transaction("test") as tx:
        rows = await tx.fetch_all(
            "SELECT table_name, column_name FROM information_schema.statistics"
            " WHERE table_schema = DATABASE() AND index_name = 'ix_claim'"
            " ORDER BY table_name, seq_in_index"
        )
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def quoted(backend: Any, table: str) -> str:
    return f'"{table}"' if backend.kind == "sqlite" else f"`{table}`"


async def query_plans(repo: Repo, backend: Any) -> tuple[str, str]:
    """How the store reads a ranked claim's step 1, and a claim in due order, in the shard
    holding T0: EXPLAIN's key and Extra (MySQL) or EXPLAIN QUERY PLAN's details (SQLite)."""
    (table,) = await claim_index_columns(repo, backend)
    step_1 = {"scan_before_ms": T0, "scan_rows": 100, "boost_per_ms": 0.1, "pick_rows": 5}
    claim_args = {"payload_before_ms": T0, "before_ms": T0, "limit": 5}
    ids = {"id": "id", "at": "scheduled_at"}
    if backend.kind == "sqlite":
        with closing(sqlite3.connect(cast(Any, repo).path)) as db:
            plans = [
                " ".join(
                    str(r[-1])
                    for r in db.execute(
                        "EXPLAIN QUERY PLAN " + template.format(table=table, **ids), args
                    )
                )
                for template, args in (
                    (sqlite_sql.RANKED_SCAN, step_1),
                    (sqlite_sql.CLAIM_SELECT, claim_args),
                )
            ]
            return plans[0], plans[1]
    target = f"`{table}`"
    scan = mysql_sql.RANKED_SCAN.format(
        parts=mysql_sql.union_all(mysql_sql.RANKED_SCAN_PART, [target], **ids), **ids
    )
    claim_one = mysql_sql.CLAIM_SELECT_ONE.format(target=target, shard_no=0, **ids)
    async with cast(Any, repo)._ex.transaction("test") as tx:
        scan_plan = await tx.fetch_all("EXPLAIN " + scan, step_1)
        claim_plan = await tx.fetch_all("EXPLAIN " + claim_one, claim_args)
    # EXPLAIN's columns: id, select_type, table, type, possible_keys, key, ..., Extra.
    derived = [r for r in scan_plan if r[1] == "DERIVED"]
    return " ".join(f"{r[5]} {r[9]}" for r in derived), " ".join(
        f"{r[5]} {r[9]}" for r in claim_plan
    )


async def test_step_1_reads_the_claim_index_alone_and_the_claim_in_due_order_uses_it(
    repo: Repo, backend: Any
) -> None:
    assert await repo.insert_rows(backlog(500, high={7: 900}), now_ms=T0) == 500
    assert set(map(tuple, (await claim_index_columns(repo, backend)).values())) == {
        ("claim_epoch", "due_at", "priority")
    }
    step_1, in_due_order = await query_plans(repo, backend)
    if backend.kind == "sqlite":
        assert "USING COVERING INDEX ix_sms_" in step_1 and "_claim" in step_1
        assert "USING INDEX ix_sms_" in in_due_order and "_claim" in in_due_order
    else:
        key, _, extra = step_1.partition(" ")
        assert key == "ix_claim" and "Using index" in [e.strip() for e in extra.split(";")]
        assert in_due_order.startswith("ix_claim ")


async def test_a_shard_whose_claim_index_lacks_priority_gets_it_when_found(
    make_repo: MakeRepo, backend: Any, raw_sql: RawSql
) -> None:
    """A shard of the version before the covering claim index: the next handle rebuilds its
    index, and its ranked claims then reach the whole window (repos/mysql/upgrade.py says why
    rebuilt rather than kept to the old bound)."""
    first = await make_repo()
    assert await first.insert_rows(backlog(30, high={25: 1000}), now_ms=T0) == 30
    (table,) = await claim_index_columns(first, backend)
    if backend.kind == "sqlite":
        await raw_sql(first, f'DROP INDEX "ix_{table}_claim"')
        await raw_sql(first, f'CREATE INDEX "ix_{table}_claim" ON "{table}" (claim_epoch, due_at)')
    else:
        await raw_sql(
            first,
            f"ALTER TABLE `{table}` DROP KEY ix_claim, ADD KEY ix_claim (claim_epoch, due_at)",
        )
    assert await claim_index_columns(first, backend) == {table: ["claim_epoch", "due_at"]}
    again = await make_repo()
    assert await claim_index_columns(again, backend) == {
        table: ["claim_epoch", "due_at", "priority"]
    }
    assert await claim(again, 2) == [25, 0]


async def test_a_shard_of_the_version_before_epoch_claims_gets_the_covering_index(
    make_repo: MakeRepo, backend: Any, old_shard: Callable[..., Awaitable[None]]
) -> None:
    """Its priority column is added before its claim index is made (the index has it)."""
    await old_shard(bounds_of(T0, Granularity.DAY), [(1, T0 - MINUTE, 0, 0, "", 0, 0)])
    repo = await make_repo()
    assert list((await claim_index_columns(repo, backend)).values()) == [
        ["claim_epoch", "due_at", "priority"]
    ]
    assert await claim(repo, 2) == [1]


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
