"""The dependencies table (repos/dependencies.py) over the embedded SQLite store, in the same
file as the shards; its own connection thread, as the membership has."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from repos.dependencies import Edge, JobRef, edge_of, job_columns
from repos.sqlite import sql
from repos.sqlite.connection import write
from repos.sqlite.store_tables import SqliteStoreTables


class SqliteDependencies(SqliteStoreTables):
    """DependencyStore (repos.dependencies) on one SQLite file."""

    TABLES = (sql.CREATE_DEPENDENCIES,)
    THREAD = "dependencies"

    async def waiting(self, *, after: JobRef | None, limit: int) -> list[Edge]:
        entity, key, at_ms = (None, None, None) if after is None else after
        args = {"entity": entity, "job_id": None if key is None else str(key), "job_at": at_ms}

        def work(db: sqlite3.Connection) -> list[Edge]:
            rows = db.execute(sql.WAITING_EDGES, {**args, "limit": max(1, limit)})
            return [edge_of(r) for r in rows]

        return await self._db.run("read waiting jobs", work)

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
