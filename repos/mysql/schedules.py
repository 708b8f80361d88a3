"""The schedules and blockouts tables over MySQL/MariaDB, on a small pool of their own.

Both layouts and both drivers share them. Reached by the engine's materialiser (one node at a
time, under its lease) and by people through the engine or a SchedulerClient; every write of a
schedule is conditional on its version (repos/schedules.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from repos.errors import StoreError
from repos.mysql import sql
from repos.mysql.driver import DUPLICATE_KEY, Tx, error_code
from repos.mysql.literals import int_literal
from repos.mysql.store_tables import MysqlStoreTables
from repos.schedules import (
    Advance,
    BlockoutRow,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleRow,
)


class MysqlScheduleStore(MysqlStoreTables):
    """ScheduleStore (repos.schedules) on one MySQL database."""

    TABLES = (
        ("create schedules table", sql.CREATE_SCHEDULES),
        ("create blockouts table", sql.CREATE_BLOCKOUTS),
        ("create category pauses table", sql.CREATE_CATEGORY_PAUSES),
    )

    async def create(self, row: ScheduleRow) -> ScheduleRow:
        async def body(tx: Tx) -> int:
            await tx.execute(sql.INSERT_SCHEDULE, row.values())
            [(new_id,)] = await tx.fetch_all(sql.LAST_EPOCH)
            return int(new_id)

        try:
            new_id = await self._ex.run("create schedule", body)
        except StoreError as exc:
            if error_code(exc.cause) == DUPLICATE_KEY:
                raise ScheduleExists("schedule", row.name) from None
            raise
        return await self.get(new_id)

    async def get(self, ref: int | str) -> ScheduleRow:
        statement, args = (
            (sql.SCHEDULE_BY_NAME, {"name": ref})
            if isinstance(ref, str)
            else (sql.SCHEDULE_BY_ID, {"id": ref})
        )
        async with self._ex.transaction("read schedule") as tx:
            rows = await tx.fetch_all(statement, args)
        if not rows:
            raise ScheduleNotFound("schedule", ref)
        return ScheduleRow.from_row(rows[0])

    async def list_schedules(
        self, *, entity: str | None = None, after_id: int = 0, limit: int = 100
    ) -> list[ScheduleRow]:
        args = {"entity": entity, "after_id": after_id, "limit": limit}
        return await self._rows("list schedules", sql.LIST_SCHEDULES, args)

    async def due(self, *, before_ms: int, limit: int) -> list[ScheduleRow]:
        args = {"before_ms": before_ms, "limit": limit}
        return await self._rows("due schedules", sql.DUE_SCHEDULES, args)

    async def waiting(self, *, after_id: int, limit: int) -> list[ScheduleRow]:
        args = {"after_id": after_id, "limit": limit}
        return await self._rows("waiting schedules", sql.WAITING_SCHEDULES, args)

    async def advance(self, steps: Sequence[Advance], *, now_ms: int) -> int:
        if not steps:
            return 0
        rows = sql.advance_rows([_literals(step) for step in steps])
        statement = sql.ADVANCE_SCHEDULES.format(rows=rows)
        args = {"now_ms": now_ms}
        changed = await self._ex.run(
            "advance schedules", lambda tx: tx.execute(statement, args), one_statement=True
        )
        return int(changed)

    async def replace(self, row: ScheduleRow, *, now_ms: int) -> ScheduleRow | None:
        args = {**row.values(), "updated_at_ms": now_ms}
        try:
            changed = await self._ex.run(
                "update schedule",
                lambda tx: tx.execute(sql.REPLACE_SCHEDULE, args),
                one_statement=True,
            )
        except StoreError as exc:
            if error_code(exc.cause) == DUPLICATE_KEY:
                raise ScheduleExists("schedule", row.name) from None
            raise
        return await self.get(row.id) if changed else None

    async def delete(self, schedule_id: int) -> bool:
        args = {"id": schedule_id}
        return bool(
            await self._ex.run(
                "delete schedule",
                lambda tx: tx.execute(sql.DELETE_SCHEDULE, args),
                one_statement=True,
            )
        )

    async def create_blockout(self, row: BlockoutRow) -> BlockoutRow:
        args = {
            "name": row.name,
            "scope": row.scope,
            "target": row.target,
            "window_json": row.window_json,
            "policy": row.policy,
            "created_at_ms": row.created_at_ms,
        }
        try:
            await self._ex.run(
                "create blockout",
                lambda tx: tx.execute(sql.INSERT_BLOCKOUT, args),
                one_statement=True,
            )
        except StoreError as exc:
            if error_code(exc.cause) == DUPLICATE_KEY:
                raise ScheduleExists("blockout", row.name) from None
            raise
        return next(b for b in await self.blockouts() if b.name == row.name)

    async def blockouts(self) -> list[BlockoutRow]:
        async with self._ex.transaction("list blockouts") as tx:
            rows = await tx.fetch_all(sql.LIST_BLOCKOUTS)
        return [BlockoutRow.from_row(r) for r in rows]

    async def delete_blockout(self, name: str) -> bool:
        args = {"name": name}
        return bool(
            await self._ex.run(
                "delete blockout",
                lambda tx: tx.execute(sql.DELETE_BLOCKOUT, args),
                one_statement=True,
            )
        )

    async def set_category_paused(self, name: str, paused: bool, *, now_ms: int) -> None:
        statement = sql.PAUSE_CATEGORY if paused else sql.RESUME_CATEGORY
        args = {"name": name, "now_ms": now_ms}
        await self._ex.run(
            "pause category" if paused else "resume category",
            lambda tx: tx.execute(statement, args),
            one_statement=True,
        )

    async def paused_categories(self) -> dict[str, int]:
        async with self._ex.transaction("read paused categories") as tx:
            rows = await tx.fetch_all(sql.PAUSED_CATEGORIES)
        return {name: int(at_ms) for name, at_ms in rows}

    async def _rows(
        self, operation: str, statement: str, args: Mapping[str, object]
    ) -> list[ScheduleRow]:
        async with self._ex.transaction(operation) as tx:
            rows = await tx.fetch_all(statement, args)
        return [ScheduleRow.from_row(r) for r in rows]


def _literals(step: Advance) -> dict[str, str]:
    """A step's values as SQL literals: ints only (int_literal refuses anything else)."""
    return {
        "id": int_literal(step.id),
        "version": int_literal(step.version),
        "state": int_literal(int(step.state)),
        "next_at_ms": "NULL" if step.next_at_ms is None else int_literal(step.next_at_ms),
        "last_at_ms": "NULL" if step.last_at_ms is None else int_literal(step.last_at_ms),
        "runs": int_literal(step.runs),
    }
