"""The shape every store-wide table adapter on SQLite shares (nodes and leases, dependencies,
schedules and blockouts): a connection and thread of its own, its tables made at open."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from repos.sqlite.connection import ConnectionThread, connect, write

T = TypeVar("T")


class SqliteStoreTables:
    """One connection to the store's file, on a thread of its own named THREAD; it makes
    the TABLES (DDL statements) if missing when it connects."""

    TABLES: tuple[str, ...] = ()
    THREAD = "store"

    def __init__(self, path: str | Path, *, create_missing: bool = False) -> None:
        self.path = Path(path)
        self.create_missing = create_missing
        self._db = ConnectionThread(self.path, self.THREAD)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    async def open(self) -> None:
        await self._db.open(self._connect)

    async def close(self) -> None:
        await self._db.close()

    def checked_out(self) -> int:
        """Operations running on the connection now; 0 whenever no call runs."""
        return self._db.busy

    def _connect(self) -> sqlite3.Connection:
        db = connect(self.path, create_missing=self.create_missing)
        try:
            with write(db):
                for ddl in self.TABLES:
                    db.execute(ddl)
        except BaseException:
            db.close()
            raise
        return db

    async def _update(self, operation: str, statement: str, args: dict[str, Any]) -> bool:
        """One writing statement; whether it changed a row."""

        def work(db: sqlite3.Connection) -> bool:
            with write(db):
                return db.execute(statement, args).rowcount > 0

        return await self._run(operation, work)

    async def _run(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(operation, work)
