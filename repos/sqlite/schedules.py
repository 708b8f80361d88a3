"""The schedules and blockouts tables in the embedded SQLite store, on a connection (and
thread) of their own beside the shards' and the membership's."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from repos.schedules import (
    Advance,
    BlockoutRow,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleRow,
)
from repos.sqlite import sql
from repos.sqlite.connection import write
from repos.sqlite.store_tables import SqliteStoreTables


class SqliteScheduleStore(SqliteStoreTables):
    """ScheduleStore (repos.schedules) on one SQLite file."""

    TABLES = (
        sql.CREATE_SCHEDULES,
        sql.CREATE_SCHEDULES_DUE_INDEX,
        sql.CREATE_BLOCKOUTS,
        sql.CREATE_CATEGORY_PAUSES,
    )
    THREAD = "schedules"

    async def create(self, row: ScheduleRow) -> ScheduleRow:
        def work(db: sqlite3.Connection) -> ScheduleRow:
            with write(db):
                try:
                    new_id = db.execute(sql.INSERT_SCHEDULE, row.values()).lastrowid
                except sqlite3.IntegrityError:
                    raise ScheduleExists("schedule", row.name) from None
                found = db.execute(sql.SCHEDULE_BY_ID, {"id": new_id}).fetchone()
            return ScheduleRow.from_row(found)

        return await self._db.run("create schedule", work)

    async def get(self, ref: int | str) -> ScheduleRow:
        statement, args = (
            (sql.SCHEDULE_BY_NAME, {"name": ref})
            if isinstance(ref, str)
            else (sql.SCHEDULE_BY_ID, {"id": ref})
        )
        rows = await self._rows("read schedule", statement, args)
        if not rows:
            raise ScheduleNotFound("schedule", ref)
        return rows[0]

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
        def work(db: sqlite3.Connection) -> int:
            with write(db):
                return sum(
                    db.execute(sql.ADVANCE_SCHEDULE, _advance_args(s, now_ms)).rowcount
                    for s in steps
                )

        return await self._db.run("advance schedules", work) if steps else 0

    async def replace(self, row: ScheduleRow, *, now_ms: int) -> ScheduleRow | None:
        args = {**row.values(), "updated_at_ms": now_ms}

        def work(db: sqlite3.Connection) -> ScheduleRow | None:
            with write(db):
                try:
                    changed = db.execute(sql.REPLACE_SCHEDULE, args).rowcount
                except sqlite3.IntegrityError:
                    raise ScheduleExists("schedule", row.name) from None
                found = db.execute(sql.SCHEDULE_BY_ID, {"id": row.id}).fetchone()
            return ScheduleRow.from_row(found) if changed else None

        return await self._db.run("update schedule", work)

    async def delete(self, schedule_id: int) -> bool:
        return await self._update("delete schedule", sql.DELETE_SCHEDULE, {"id": schedule_id})

    async def create_blockout(self, row: BlockoutRow) -> BlockoutRow:
        args = {
            "name": row.name,
            "scope": row.scope,
            "target": row.target,
            "window_json": row.window_json,
            "policy": row.policy,
            "created_at_ms": row.created_at_ms,
        }

        def work(db: sqlite3.Connection) -> None:
            with write(db):
                try:
                    db.execute(sql.INSERT_BLOCKOUT, args)
                except sqlite3.IntegrityError:
                    raise ScheduleExists("blockout", row.name) from None

        await self._db.run("create blockout", work)
        return next(b for b in await self.blockouts() if b.name == row.name)

    async def blockouts(self) -> list[BlockoutRow]:
        def work(db: sqlite3.Connection) -> list[BlockoutRow]:
            return [BlockoutRow.from_row(r) for r in db.execute(sql.LIST_BLOCKOUTS).fetchall()]

        return await self._db.run("list blockouts", work)

    async def delete_blockout(self, name: str) -> bool:
        return await self._update("delete blockout", sql.DELETE_BLOCKOUT, {"name": name})

    async def set_category_paused(self, name: str, paused: bool, *, now_ms: int) -> None:
        statement = sql.PAUSE_CATEGORY if paused else sql.RESUME_CATEGORY
        operation = "pause category" if paused else "resume category"
        await self._update(operation, statement, {"name": name, "now_ms": now_ms})

    async def paused_categories(self) -> dict[str, int]:
        def work(db: sqlite3.Connection) -> dict[str, int]:
            return {name: int(at) for name, at in db.execute(sql.PAUSED_CATEGORIES).fetchall()}

        return await self._run("read paused categories", work)

    # -- internals ------------------------------------------------------------------------

    async def _rows(
        self, operation: str, statement: str, args: dict[str, Any]
    ) -> list[ScheduleRow]:
        def work(db: sqlite3.Connection) -> list[ScheduleRow]:
            return [ScheduleRow.from_row(r) for r in db.execute(statement, args).fetchall()]

        return await self._run(operation, work)


def _advance_args(step: Advance, now_ms: int) -> dict[str, object]:
    return {
        "id": step.id,
        "version": step.version,
        "state": int(step.state),
        "next_at_ms": step.next_at_ms,
        "last_at_ms": step.last_at_ms,
        "runs": step.runs,
        "now_ms": now_ms,
    }
