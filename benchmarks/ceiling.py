"""The ceiling: the engine's statements through the bare driver, with no engine around them.

The reference is the statements of the version before epoch claims (``aaeee50``), kept below
as they were: a table whose claim index is ``(status, due_at)``, a claim and an ack that each
move a row's entry in it. The engine's own statements must beat them (issue 11: its server CPU
per W2 job at most 0.7 x theirs), so they stay fixed here while the adapter's change. Values are
rendered the adapter's way (repos/mysql/literals.py), same batch size, connections in
autocommit: what the database path allows on this machine.

- insert: one multi-row ``INSERT ... VALUES`` of batch_size rows per statement (W1's path),
  on as many connections at once as W1 has writers (``--writers``); into the reference table,
  and into the table the engine makes today (``table="engine"``: the shard an adapter makes,
  the columns and indexes the features since added, the adapter's INSERT). W1 reports both: the
  first says what the store's growth costs, the second what the engine's path adds to the bare
  driver writing the same rows.
- claim: per batch, ``SELECT ... FOR UPDATE SKIP LOCKED`` + the claim ``UPDATE`` in one
  transaction, then the ack ``UPDATE ... WHERE id IN (...)`` (W2's path), until none is left.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Literal

from benchmarks.common import Options, bar, now_ms, result, sms
from benchmarks.cpu import CpuUse, cpu_use
from benchmarks.loader import in_parallel
from benchmarks.stats import Result, rate
from benchmarks.store import (
    POLICY,
    Bare,
    bare,
    bench_store,
    database_name,
    make_repo,
    shard_target,
    sql_names,
)
from repos.examples import SMS
from repos.mysql import sql
from repos.mysql.literals import bytes_literal, literal, literal_list
from repos.shards import ShardBounds, bounds_of
from repos.statements import chunks

NODE = "ceiling-node"

# -- the reference: the shard table and statements of aaeee50, before epoch claims ----------

_COLUMNS = """
    `{id}` BIGINT NOT NULL,
    `{at}` BIGINT NOT NULL,
    payload MEDIUMBLOB NOT NULL,
    status TINYINT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INT NOT NULL,
    claimed_by CHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL DEFAULT 0,
    fired_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NULL"""
CREATE_SHARD_TABLE = (
    "CREATE TABLE `{table}` ("
    + _COLUMNS
    + """,
    PRIMARY KEY (`{id}`),
    KEY ix_status_due (status, due_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
)
CREATE_PARTITIONED_TABLE = (
    "CREATE TABLE `{table}` ("
    + _COLUMNS
    + """,
    shard_at BIGINT NOT NULL,
    PRIMARY KEY (`{id}`, shard_at),
    KEY ix_status_due (status, due_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
PARTITION BY RANGE (shard_at) (PARTITION `{name}` VALUES LESS THAN ({end_ms}))"""
)
_INSERT_COLUMNS = "`{id}`, `{at}`, payload, status, due_at, attempts, claimed_by, claimed_at"
INSERT = "INSERT INTO {target} (" + _INSERT_COLUMNS + ") VALUES {rows}"
INSERT_PARTITIONED = "INSERT INTO {target} (" + _INSERT_COLUMNS + ", shard_at) VALUES {rows}"
CLAIM_SELECT = "{parts} ORDER BY due_at LIMIT %(limit)s"
CLAIM_SELECT_PART = """(SELECT `{id}`, `{at}`, due_at, attempts,
 IF(due_at < %(payload_before_ms)s, payload, NULL), {shard_no} AS shard_no FROM {target}
 WHERE status = 0 AND due_at < %(before_ms)s ORDER BY due_at LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED)"""
CLAIM_UPDATE = """
UPDATE {target} SET status = 1, claimed_by = %(node_id)s, claimed_at = %(now_ms)s,
    attempts = attempts + 1
WHERE `{id}` IN ({keys})"""
MARK_DONE = """
UPDATE {target} SET status = 2, fired_at = %(fired_at_ms)s
WHERE status = 1 AND claimed_by = %(node_id)s AND `{id}` IN ({keys})"""

# ----------------------------------------------------------------------------------------------


async def run(opts: Options) -> list[Result]:
    """The `ceiling` workload: both ceilings at W1's and W2's job counts."""
    if not opts.is_mysql:
        return []
    inserts = opts.pick(20_000, 100_000)
    claims = opts.pick(5_000, 20_000)
    lines = []
    for name, measure, n in (
        ("ceiling-insert", insert_ceiling, inserts),
        ("ceiling-claim", claim_ceiling, claims),
    ):
        jobs_per_s, cpu = await measure(opts, n)
        lines.append(result(name, opts, n, jobs_per_s=jobs_per_s, **cpu.per_job_us(n)))
    return lines


async def insert_ceiling(
    opts: Options, n: int, *, table: Literal["reference", "engine"] = "reference"
) -> tuple[float | None, CpuUse]:
    """Rows per second through bare multi-row INSERTs of batch_size rows, sent on as many
    connections at once as W1 has writers; and the CPU it took, server and client."""
    async with bench_store(opts, "ceiling") as url:
        if table == "engine":
            bounds = await make_engine_shard(opts, url, now_ms())
        else:
            bounds = await make_shard(opts, url, now_ms())
        async with AsyncExitStack() as stack:
            conns = [
                await stack.enter_async_context(bare(opts.driver, database_name("ceiling")))
                for _ in range(opts.writers)
            ]
            with cpu_use() as cpu:
                seconds = await insert_rows(
                    conns, opts, bounds, n, due_ms=None, desc="ceiling insert", table=table
                )
    return rate(n, seconds), cpu


async def claim_ceiling(opts: Options, n: int) -> tuple[float | None, CpuUse]:
    """Rows per second through bare select + claim + ack batches of batch_size rows; and the
    CPU it took, server and client."""
    async with bench_store(opts, "ceiling") as url:
        due_ms = now_ms() - 1000
        bounds = await make_shard(opts, url, due_ms)
        async with bare(opts.driver, database_name("ceiling")) as conn:
            await insert_rows([conn], opts, bounds, n, due_ms=due_ms, desc="ceiling fill")
            with cpu_use() as cpu:
                seconds = await claim_rows(conn, opts, bounds, n)
    return rate(n, seconds), cpu


async def make_shard(opts: Options, url: str, at_ms: int) -> ShardBounds:
    """The shard holding at_ms, as the reference version made it (never opened by an adapter,
    which would upgrade it)."""
    bounds = bounds_of(at_ms, POLICY.granularity)
    prefix = SMS.table_prefix
    if opts.layout == "partitioned":
        ddl = CREATE_PARTITIONED_TABLE.format(
            table=prefix, name=f"p{bounds.suffix}", end_ms=bounds.end_ms, **sql_names()
        )
    else:
        ddl = CREATE_SHARD_TABLE.format(table=f"{prefix}_{bounds.suffix}", **sql_names())
    async with bare(opts.driver, database_name("ceiling")) as conn:
        await conn.execute(ddl)
    return bounds


async def make_engine_shard(opts: Options, url: str, at_ms: int) -> ShardBounds:
    """The shard holding at_ms, as the engine's adapter makes it today."""
    bounds = bounds_of(at_ms, POLICY.granularity)
    repo = make_repo(opts, url)
    await repo.open()
    try:
        await repo.ensure_shards(bounds.start_ms, bounds.end_ms)
    finally:
        await repo.close()
    return bounds


#: The INSERT of each table (its partitioned layout's), and the values after due_at of a
#: PENDING row: attempts and the claim columns, then (engine) priority and category.
_INSERTS = {
    "reference": (INSERT, INSERT_PARTITIONED, f",0,{literal('')},0"),
    "engine": (sql.INSERT, sql.INSERT_PARTITIONED, f",0,0,{literal('')},0,500,{literal('')}"),
}


async def insert_rows(
    conns: Sequence[Bare],
    opts: Options,
    bounds: ShardBounds,
    n: int,
    *,
    due_ms: int | None,
    desc: str,
    spacing_ms: int | None = None,
    table: Literal["reference", "engine"] = "reference",
) -> float:
    """n PENDING rows into one shard (of the reference table, or the engine's), due at due_ms,
    or spacing_ms apart from its start, or spread over it, in batch_size statements shared out
    over `conns`; seconds taken."""
    insert_target, _, extra = shard_target(opts.layout, bounds)
    payload = bytes_literal(SMS.encode(sms([0], [bounds.start_ms])[0]).payload)
    plain, partitioned, state = _INSERTS[table]
    tail = state + "".join(f",{v}" for v in extra) + ")"
    span = bounds.end_ms - bounds.start_ms

    def due(i: int) -> int:
        if due_ms is not None:
            return due_ms
        if spacing_ms is not None:
            return bounds.start_ms + i * spacing_ms
        return bounds.start_ms + i * span // n

    def statement(ids: Sequence[int]) -> str:
        values = ",".join(f"({i},{at},{payload},0,{at}{tail}" for i in ids for at in (due(i),))
        insert = partitioned if extra else plain
        return insert.format(target=insert_target, rows=values, **sql_names())

    def sender(conn: Bare) -> Callable[[Sequence[int]], Awaitable[None]]:
        async def send(ids: Sequence[int]) -> None:
            await conn.execute(statement(ids))
            progress.update(len(ids))

        return send

    with bar(n, desc) as progress:
        started = time.perf_counter()
        await in_parallel(chunks(range(n), opts.batch_size), [sender(c) for c in conns])
        return time.perf_counter() - started


async def claim_rows(conn: Bare, opts: Options, bounds: ShardBounds, n: int) -> float:
    """Claim and ack every due row in batches, the way the fetcher and the acker do."""
    _, target, _ = shard_target(opts.layout, bounds)
    names = sql_names()
    select = CLAIM_SELECT.format(parts=sql.union_all(CLAIM_SELECT_PART, [target], **names))
    batch = opts.batch_size
    with bar(n, "ceiling claim+ack") as progress:
        started = time.perf_counter()
        while True:
            stamp = now_ms()
            await conn.begin()
            due = {"payload_before_ms": stamp + 1, "before_ms": stamp + 1, "limit": batch}
            rows = await conn.fetch_all(select, due)
            keys = [r[0] for r in rows]
            if keys:
                claim = CLAIM_UPDATE.format(target=target, keys=literal_list(str, keys), **names)
                await conn.execute(claim, {"node_id": NODE, "now_ms": stamp})
            await conn.commit()
            if keys:
                ack = MARK_DONE.format(target=target, keys=literal_list(str, keys), **names)
                await conn.execute(ack, {"fired_at_ms": now_ms(), "node_id": NODE})
                progress.update(len(keys))
            if len(keys) < batch:  # as the fetcher: a short batch means nothing is left
                return time.perf_counter() - started
