"""Execution history in the embedded SQLite store (repos/history.py): a table per UTC day,
``history_YYYYMMDD``, in the same file as the shards.

:class:`HistoryWriter` is the entity repository's part: inside the ack's transaction, on the
repository's connection thread, it makes a day's table if this process has not yet (DDL is
transactional here) and inserts the ack's attempts. :class:`SqliteHistoryStore` makes days
ahead, drops them and reads, on a connection of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from repos.history import (
    HISTORY_GRANULARITY,
    HISTORY_TABLE,
    Attempt,
    HistoryCursor,
    HistoryFilter,
    HistoryRow,
    SlaCount,
    SlaSample,
    bounded_error,
    by_table,
    cursor_args,
    day_outside,
    history_table,
    window_args,
)
from repos.shards import ShardBounds, read_shard_names, shards_between
from repos.sqlite import sql
from repos.sqlite.connection import reclaim, write
from repos.sqlite.store_tables import SqliteStoreTables

_PATTERN = HISTORY_TABLE + "\\_%"


class HistoryWriter:
    """Writes an entity type's attempts inside its acks' transactions (on its thread)."""

    def __init__(self, entity: str) -> None:
        self.entity = entity
        self._made: set[str] = set()

    def forget(self) -> None:
        """After a failed ack: a table made in its rolled-back transaction is gone again."""
        self._made.clear()

    def write(
        self,
        db: sqlite3.Connection,
        attempts: Sequence[Attempt],
        keep: Collection[tuple[Any, int]] | None = None,
    ) -> None:
        """Insert the attempts (with `keep`, only those of these rows), in the caller's
        transaction."""
        entity = self.entity
        for table, group in by_table(attempts).items():
            if table not in self._made:
                db.execute(sql.CREATE_HISTORY.format(table=table))
                db.execute(sql.CREATE_HISTORY_INDEX.format(table=table))
                self._made.add(table)
            rows = [
                {
                    "entity": entity,
                    "job_id": str(a.key),
                    "job_at": a.at_ms,
                    "attempt": a.attempt,
                    "node": a.node,
                    "category": a.category,
                    "due_at": a.due_ms,
                    "fired_at": a.fired_ms,
                    "finished_at": a.finished_ms,
                    "outcome": a.outcome,
                    "error": bounded_error(a.error),
                }
                for a in group
                if keep is None or (a.key, a.at_ms) in keep
            ]
            db.executemany(sql.INSERT_HISTORY.format(table=table), rows)


class SqliteHistoryStore(SqliteStoreTables):
    """HistoryStore (repos.history) on one SQLite file."""

    THREAD = "history"

    async def ensure_days(self, start_ms: int, end_ms: int) -> list[str]:
        wanted = [history_table(b) for b in shards_between(start_ms, end_ms, HISTORY_GRANULARITY)]

        def work(db: sqlite3.Connection) -> list[str]:
            with write(db):
                for table in wanted:
                    db.execute(sql.CREATE_HISTORY.format(table=table))
                    db.execute(sql.CREATE_HISTORY_INDEX.format(table=table))
            return wanted

        return await self._run("create history tables", work)

    async def days(self) -> list[tuple[ShardBounds, str]]:
        return await self._run("list history tables", _days)

    async def drop_days_before(self, cutoff_ms: int) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            dropped = []
            with write(db):
                for bounds, table in _days(db):
                    if bounds.end_ms <= cutoff_ms:
                        db.execute(sql.DROP_TABLE.format(table=table))
                        dropped.append(table)
            if dropped:
                reclaim(db, HISTORY_TABLE)
            return dropped

        return await self._run("drop history tables", work)

    async def attempts(self, entity: str, job_id: str, *, limit: int = 1000) -> list[HistoryRow]:
        args = {"entity": entity, "job_id": job_id}

        def work(db: sqlite3.Connection) -> list[HistoryRow]:
            found: list[HistoryRow] = []
            for _, table in reversed(_days(db)):
                stmt = sql.HISTORY_OF_JOB.format(table=table)
                found += _rows(db.execute(stmt, {**args, "limit": limit - len(found)}))
                if len(found) >= limit:
                    break
            return found

        return await self._run("read history", work)

    async def page(
        self, where: HistoryFilter, *, after: HistoryCursor | None = None, limit: int = 100
    ) -> list[HistoryRow]:
        args = {**where.args(), **cursor_args(after)}

        def work(db: sqlite3.Connection) -> list[HistoryRow]:
            found: list[HistoryRow] = []
            for bounds, table in reversed(_days(db)):
                if day_outside(bounds, where.start_ms, where.end_ms, after):
                    continue
                stmt = sql.HISTORY_PAGE.format(table=table)
                found += _rows(db.execute(stmt, {**args, "limit": limit - len(found)}))
                if len(found) >= limit:
                    break
            return found

        return await self._run("read history", work) if limit > 0 else []

    async def sla_counts(
        self,
        *,
        start_ms: int,
        end_ms: int,
        late_threshold_ms: int,
        entity: str | None = None,
        category: str | None = None,
    ) -> list[SlaCount]:
        args = window_args(start_ms, end_ms, entity, category) | {"late_ms": late_threshold_ms}

        def work(db: sqlite3.Connection) -> list[SlaCount]:
            counts: list[SlaCount] = []
            for bounds, table in _days(db):
                if not day_outside(bounds, start_ms, end_ms):
                    rows = db.execute(sql.HISTORY_SLA_COUNTS.format(table=table), args)
                    counts += [SlaCount(r[0], r[1], r[2], r[3], r[4] or 0) for r in rows]
            return counts

        return await self._run("read history", work)

    async def sla_sample(
        self,
        *,
        start_ms: int,
        end_ms: int,
        limit: int,
        entity: str | None = None,
        category: str | None = None,
    ) -> list[SlaSample]:
        args = window_args(start_ms, end_ms, entity, category)

        def work(db: sqlite3.Connection) -> list[SlaSample]:
            sample: list[SlaSample] = []
            for bounds, table in reversed(_days(db)):
                if len(sample) >= limit:
                    break
                if not day_outside(bounds, start_ms, end_ms):
                    stmt = sql.HISTORY_SLA_SAMPLE.format(table=table)
                    rows = db.execute(stmt, {**args, "limit": limit - len(sample)})
                    sample += [SlaSample(*r) for r in rows]
            return sample

        return await self._run("read history", work)


def _days(db: sqlite3.Connection) -> list[tuple[ShardBounds, str]]:
    names = (name for (name,) in db.execute(sql.LIST_TABLES, {"pattern": _PATTERN}))
    found, _ = read_shard_names(names, HISTORY_TABLE + "_", HISTORY_GRANULARITY)
    return list(found.items())


def _rows(rows: Any) -> list[HistoryRow]:
    return [HistoryRow.from_row(r) for r in rows]
