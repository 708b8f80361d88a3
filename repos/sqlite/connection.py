"""The SQLite file and its connection: opened with the PRAGMAs, made only when asked.

``auto_vacuum=INCREMENTAL`` lets retention hand the pages of dropped shards back to the file
system (on files made with it; an older file needs one ``VACUUM``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from repos.errors import StoreError, StoreMissing, StoreUnavailable
from repos.sqlite import sql

logger = logging.getLogger(__name__)

T = TypeVar("T")


def connect(path: Path, *, create_missing: bool) -> sqlite3.Connection:
    """The file's connection, PRAGMAS applied. Without `create_missing` a missing file raises
    StoreMissing and nothing is created, neither the file nor its directory."""
    if create_missing:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        missing = FileNotFoundError(errno.ENOENT, "no such file", str(path))
        raise StoreMissing("SQLite file", str(path), missing)
    # mode=rw: should the file vanish after the check, sqlite3 fails instead of making it.
    uri = f"file:{quote(str(path))}?mode={'rwc' if create_missing else 'rw'}"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        for pragma in sql.PRAGMAS:
            db.execute(pragma)
    except BaseException:
        db.close()
        raise
    return db


def create_file(path: Path) -> tuple[bool, Path | None]:
    """Make the SQLite file (an empty database, PRAGMAS set) and its directory, if missing:
    whether it was made, and the outermost directory made for it."""
    if path.exists():
        return False, None
    directory = _first_missing(path.parent)
    try:
        connect(path, create_missing=True).close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreError("create SQLite file", exc) from exc
    return True, directory


@contextmanager
def write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the lock first so that readers-turned-writers never
    deadlock and concurrent claimers serialise."""
    db.execute(sql.BEGIN)
    try:
        yield
    except BaseException:
        db.execute(sql.ROLLBACK)
        raise
    db.execute(sql.COMMIT)


def translate(operation: str, exc: sqlite3.Error | OSError, path: Path) -> StoreError:
    """The store error for what sqlite3 (or the file system) raised: a file that cannot be
    opened or read is unavailable; anything else, a failed statement."""
    if isinstance(exc, OSError) or (
        operation == "open" and isinstance(exc, sqlite3.OperationalError)
    ):
        return StoreUnavailable(operation, exc, address=str(path))
    return StoreError(operation, exc)


def reclaim(db: sqlite3.Connection, entity: str) -> None:
    """Truncate the file by the dropped shards' pages, then fold the WAL (which took the
    moved pages) back in and truncate it, so the disk space really goes back. The drop has
    committed already: a failure here only postpones that to the next drop."""
    try:
        db.executescript(sql.RECLAIM)
    except sqlite3.Error as exc:
        logger.warning(
            "%s: shards dropped, but their space is not reclaimed yet: %s",
            entity,
            exc,
            extra={"action": "drop shards", "entity": entity},
        )


def _first_missing(directory: Path) -> Path | None:
    """The outermost ancestor of `directory` (itself included) that does not exist."""
    missing = None
    while not directory.exists():
        missing, directory = directory, directory.parent
    return missing


class ConnectionThread:
    """One SQLite connection and the one thread that uses it: the repository of an entity type
    and the membership each have one, so a slow statement of one never waits on the other's
    thread, and the event loop never waits on either."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        #: Operations running on the connection right now (0 when idle).
        self.busy = 0

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and make the connection on it (`connect`). Idempotent."""
        if self._thread is not None:
            return
        thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{self.name}")
        try:
            self._conn = await self._call(thread, "open", connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        self._thread = thread

    async def close(self) -> None:
        """Close the connection on its thread, then stop the thread. Idempotent."""
        thread, self._thread = self._thread, None
        conn, self._conn = self._conn, None
        if thread is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        thread.shutdown(wait=True)

    async def run(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the thread; sqlite3 and OS errors become StoreError."""
        thread, conn = self._thread, self._conn
        if thread is None or conn is None:
            raise StoreError(
                operation, RuntimeError(f"SQLite {self.name} on {self.path} is not open")
            )
        return await self._call(thread, operation, lambda: work(conn))

    async def _call(self, thread: ThreadPoolExecutor, operation: str, call: Callable[[], T]) -> T:
        def counted() -> T:
            self.busy += 1
            try:
                return call()
            finally:
                self.busy -= 1

        try:
            return await asyncio.get_running_loop().run_in_executor(thread, counted)
        except (sqlite3.Error, OSError) as exc:
            raise translate(operation, exc, self.path) from exc
