"""The dependencies table (repos/dependencies.py) over the embedded SQLite store, in the same
file as the shards; its own connection thread, as the membership has."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from repos.dependencies import Edge, JobRef, edge_of, job_columns
from repos.sqlite import sql
from repos.sqlite.connection import ConnectionThread, connect, write


class SqliteDependencies:
    """DependencyStore (repos.dependencies) on one SQLite file."""

    def __init__(self, path: str | Path, *, create_missing: bool = False) -> None:
        self.path = Path(path)
        self.create_missing = create_missing
        self._db = ConnectionThread(self.path, "dependencies")

    def __repr__(self) -> str:
        return f"<SqliteDependencies {self.path}>"

    async def open(self) -> None:
        await self._db.open(self._connect)

    async def close(self) -> None:
        await self._db.close()

    def checked_out(self) -> int:
        return self._db.busy

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

    def _connect(self) -> sqlite3.Connection:
        db = connect(self.path, create_missing=self.create_missing)
        try:
            with write(db):
                db.execute(sql.CREATE_DEPENDENCIES)
        except BaseException:
            db.close()
            raise
        return db
