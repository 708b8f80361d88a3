"""Execution history on MySQL/MariaDB (repos/history.py): a table per UTC day, ``history_YYYYMMDD``.

:class:`HistoryWriter` is the entity repository's part: it makes a day's table once per
process (DDL, before the ack's transaction) and renders an ack's attempts as one multi-row
INSERT per day inside it. :class:`MysqlHistoryStore` makes days ahead, drops them and reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import repeat
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
from repos.mysql import sql
from repos.mysql.driver import Executor, Tx
from repos.mysql.literals import str_literal
from repos.mysql.store_tables import MysqlStoreTables
from repos.shards import ShardBounds, read_shard_names, shards_between

_PATTERN = HISTORY_TABLE + "\\_%"


class HistoryWriter:
    """Writes an entity type's attempts inside its acks' transactions."""

    def __init__(self, entity: str) -> None:
        self._entity = text_literal(entity)
        #: Tables this process made or found (only today's is ever written, in practice).
        self._made: set[str] = set()
        self._texts: dict[str, str] = {}

    def forget(self) -> None:
        """After a failed ack: a table may have been dropped by hand; make it again next time."""
        self._made.clear()

    async def prepare(self, ex: Executor, attempts: Sequence[Attempt]) -> dict[str, list[Attempt]]:
        """The attempts by table, every table made (DDL commits, so before the transaction)."""
        tables = by_table(attempts)
        for table in tables.keys() - self._made:
            await ex.execute_ddl("create history table", sql.CREATE_HISTORY.format(table=table))
            self._made.add(table)
        return tables

    async def write(self, tx: Tx, tables: dict[str, list[Attempt]], keep: Any = None) -> None:
        """One INSERT per table; with `keep` (a set of (key, at_ms)), only those attempts."""
        for table, attempts in tables.items():
            rows = attempts if keep is None else [a for a in attempts if (a.key, a.at_ms) in keep]
            if rows:
                columns, values = self.values(rows)
                stmt = sql.INSERT_HISTORY[columns].format(table=table, rows=values)
                await tx.execute(stmt)

    def values(self, rows: Sequence[Attempt]) -> tuple[tuple[bool, bool], str]:
        """Which of sql.INSERT_HISTORY (any category, any error), and the rows of literals of
        one INSERT.

        A column at a time, the rows joined in C: a Python step per row and value cost the
        engine 4-7 us a job, twice this. Ints go through ``int.__repr__``,
        which refuses anything else, so no value can end a literal early. ``category`` and
        ``error`` are left out when every row has the column's default (no category, no
        error: every OK attempt of a job without category), two values less per row for the
        server to parse.
        """
        keys, ats, numbers, nodes, categories, dues, fireds, finisheds, outcomes, errors = zip(
            *rows, strict=True
        )
        if set(map(type, keys)) == {int}:  # ints only (a bool is not): %d renders digits
            ids: Iterable[str] = map("'%d'".__mod__, keys)
        else:
            ids = map(_key_literal, keys)
        with_category, with_error = any(categories), any(e is not None for e in errors)
        columns: list[Iterable[str]] = [repeat(self._entity), ids]
        columns += [map(int.__repr__, ats), map(int.__repr__, numbers), self._texts_of(nodes)]
        if with_category:
            columns.append(self._texts_of(categories))
        columns += [map(int.__repr__, c) for c in (dues, fireds, finisheds, outcomes)]
        if with_error:
            columns.append(map(_error_literal, errors))
        rows_sql = "),(".join(map(",".join, zip(*columns, strict=False)))  # repeat() is endless
        return (with_category, with_error), f"({rows_sql})"

    def _texts_of(self, values: Sequence[str]) -> Iterable[str]:
        """Node ids and categories repeat: each rendered once, then looked up."""
        texts = self._texts
        for value in set(values) - texts.keys():
            texts[value] = text_literal(value)
        return map(texts.__getitem__, values)


#: Text written as it is between quotes: nothing in it can end or escape a literal.
_PLAIN = re.compile(r"[A-Za-z0-9_.:@/+-]*")


def text_literal(value: str) -> str:
    """A short text (entity, node, category) as a plain quoted literal when it is made of
    harmless characters only (cheaper for the server to read), else as utf8mb4 hex."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return f"'{value}'"
    return str_literal(value)


def _key_literal(key: Any) -> str:
    if type(key) is int:
        return f"'{key!r}'"
    if isinstance(key, str) and key.isascii() and key.isalnum():
        return f"'{key}'"
    return str_literal(key)  # a type that is neither int nor str raises TypeError


def _error_literal(error: str | None) -> str:
    return "NULL" if error is None else str_literal(bounded_error(error) or "")


class MysqlHistoryStore(MysqlStoreTables):
    """HistoryStore (repos.history) on one MySQL database."""

    async def ensure_days(self, start_ms: int, end_ms: int) -> list[str]:
        wanted = [history_table(b) for b in shards_between(start_ms, end_ms, HISTORY_GRANULARITY)]
        live = {name for _, name in await self.days()}
        for table in wanted:
            if table not in live:
                ddl = sql.CREATE_HISTORY.format(table=table)
                await self._ex.execute_ddl("create history table", ddl, shard=table)
        return wanted

    async def days(self) -> list[tuple[ShardBounds, str]]:
        async with self._ex.transaction("list history tables", one_statement=True) as tx:
            rows = await tx.fetch_all(sql.LIST_TABLES, {"pattern": _PATTERN})
        found, _ = read_shard_names((r[0] for r in rows), HISTORY_TABLE + "_", HISTORY_GRANULARITY)
        return list(found.items())

    async def drop_days_before(self, cutoff_ms: int) -> list[str]:
        dropped = []
        for bounds, table in await self.days():
            if bounds.end_ms <= cutoff_ms:
                ddl = sql.DROP_TABLE.format(table=table)
                await self._ex.execute_ddl("drop history table", ddl, shard=table)
                dropped.append(table)
        return dropped

    async def attempts(self, entity: str, job_id: str, *, limit: int = 1000) -> list[HistoryRow]:
        args = {"entity": entity, "job_id": job_id, "limit": limit}
        found: list[HistoryRow] = []
        for _, table in reversed(await self.days()):
            args["limit"] = limit - len(found)
            found += await self._read(sql.HISTORY_OF_JOB.format(table=table), args)
            if len(found) >= limit:
                break
        return found

    async def page(
        self, where: HistoryFilter, *, after: HistoryCursor | None = None, limit: int = 100
    ) -> list[HistoryRow]:
        args = {**where.args(), **cursor_args(after)}
        found: list[HistoryRow] = []
        for bounds, table in reversed(await self.days()):
            if day_outside(bounds, where.start_ms, where.end_ms, after):
                continue
            args["limit"] = limit - len(found)
            found += await self._read(sql.HISTORY_PAGE.format(table=table), args)
            if len(found) >= limit:
                break
        return found

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
        counts: list[SlaCount] = []
        for bounds, table in await self.days():
            if not day_outside(bounds, start_ms, end_ms, None):
                rows = await self._fetch(sql.HISTORY_SLA_COUNTS.format(table=table), args)
                counts += [SlaCount(r[0], r[1], int(r[2]), int(r[3]), int(r[4] or 0)) for r in rows]
        return counts

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
        sample: list[SlaSample] = []
        for bounds, table in reversed(await self.days()):
            if len(sample) >= limit:
                break
            if not day_outside(bounds, start_ms, end_ms, None):
                args["limit"] = limit - len(sample)
                rows = await self._fetch(sql.HISTORY_SLA_SAMPLE.format(table=table), args)
                sample += [SlaSample(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
        return sample

    async def _fetch(self, statement: str, args: dict[str, Any]) -> list[Any]:
        async with self._ex.transaction("read history", one_statement=True) as tx:
            return await tx.fetch_all(statement, args)

    async def _read(self, statement: str, args: dict[str, Any]) -> list[HistoryRow]:
        return [HistoryRow.from_row(r) for r in await self._fetch(statement, args)]
