"""The dependencies table (repos/dependencies.py) over the embedded SQLite store, in the same
file as the shards; its own connection thread, as the membership has."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from repos.dependencies import COLUMNS, Edge, JobRef, edge_of, edge_row, job_columns
from repos.sqlite import sql
from repos.sqlite.connection import write
from repos.sqlite.store_tables import SqliteStoreTables


class SqliteDependencies(SqliteStoreTables):
    """DependencyStore (repos.dependencies) on one SQLite file."""

    TABLES = (sql.CREATE_DEPENDENCIES,)
    THREAD = "dependencies"

    def _connect(self) -> sqlite3.Connection:
        db = super()._connect()
        try:
            with write(db):
                columns = {name for (name,) in db.execute(sql.DEPENDENCY_COLUMNS)}
                if "check_at" not in columns:  # made by the version before check_at
                    db.execute(sql.UPGRADE_DEPENDENCIES)
                for ddl in sql.CREATE_DEPENDENCIES_INDEXES:
                    db.execute(ddl)
        except BaseException:
            db.close()
            raise
        return db

    async def due(self, *, before_ms: int, limit: int) -> list[Edge]:
        args = {"before_ms": before_ms, "limit": max(1, limit)}

        def work(db: sqlite3.Connection) -> list[Edge]:
            return [edge_of(r) for r in db.execute(sql.DUE_EDGES, args)]

        return await self._db.run("read due dependencies", work)

    async def postpone(self, edges: Sequence[Edge], *, at_ms: int, their_time: bool = False) -> int:
        statement = sql.POSTPONE_EDGE_TO_ITS_TIME if their_time else sql.POSTPONE_EDGE
        rows = [dict(zip(COLUMNS[:6], edge_row(edge)[:6], strict=True)) for edge in edges]
        return await self._many("postpone dependencies", statement, rows, at_ms)

    async def check_dependents(
        self, on: Sequence[JobRef], *, at_ms: int, their_time: bool = False
    ) -> int:
        statement = sql.CHECK_DEPENDENTS_AT_THEIR_TIME if their_time else sql.CHECK_DEPENDENTS
        rows = [{"on_entity": r.entity, "on_id": str(r.key), "on_at": r.at_ms} for r in on]
        return await self._many("check dependents", statement, rows, at_ms)

    async def _many(
        self, operation: str, statement: str, rows: list[dict[str, object]], at_ms: int
    ) -> int:
        def work(db: sqlite3.Connection) -> int:
            with write(db):
                return db.executemany(statement, [{**r, "at_ms": at_ms} for r in rows]).rowcount

        return await self._db.run(operation, work) if rows else 0

    async def remove(self, jobs: Sequence[JobRef]) -> int:
        rows = [job_columns(job) for job in jobs]

        def work(db: sqlite3.Connection) -> int:
            with write(db):
                return db.executemany(sql.REMOVE_EDGES, rows).rowcount

        return await self._db.run("remove dependencies", work) if rows else 0

    async def count(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            [(n,)] = db.execute(sql.COUNT_EDGES).fetchall()
            return int(n)

        return await self._db.run("count dependencies", work)
