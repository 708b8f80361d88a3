"""Embedded SQLite repository: the zero-setup store, one table per shard in one WAL file.

sqlite3 blocks, so every statement runs on one dedicated thread that owns the connection; the
event loop only awaits it. Writes take the database lock up front (``BEGIN IMMEDIATE``), which
is SQLite's equivalent of ``FOR UPDATE SKIP LOCKED`` for a single writer: two repositories on
the same file claim in turn and never get the same row. ``auto_vacuum=INCREMENTAL`` lets
retention hand the pages of dropped shards back to the file system (on files made with it; an
older file needs one ``VACUUM``).
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from repos.base import (
    STATUS_RANGE,
    ClaimedJob,
    DuplicateJob,
    Failure,
    OnDuplicate,
    RowRef,
    ShardInfo,
    ShardPolicy,
    Status,
    StoredRow,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    UnknownStatus,
    read_status,
)
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, EncodedRow, EntitySpec
from repos.registry import StoreCreated
from repos.shards import (
    ShardBounds,
    bounds_of,
    check_identifier,
    group_by_shard,
    read_shard_names,
    shards_between,
)
from repos.statements import chunks, insert_state, marks, release_statement

logger = logging.getLogger(__name__)

TEntity = TypeVar("TEntity")
TKey = TypeVar("TKey", bound=int | str)
T = TypeVar("T")

#: Bound parameters per statement: SQLite's default limit, whatever the build allows.
MAX_VARIABLES = 32_766
MAX_ERROR_CHARS = 4000
BUSY_TIMEOUT_MS = 10_000
INSERT_WIDTH = 8

PRAGMAS = (
    "PRAGMA auto_vacuum = INCREMENTAL",  # only takes effect on a new file: set before any table
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # durable across process crashes; WAL keeps it consistent
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
)

CREATE_SHARD = """
CREATE TABLE IF NOT EXISTS "{table}" (
    "{id}" {id_type} PRIMARY KEY NOT NULL,
    "{at}" INTEGER NOT NULL,
    payload BLOB NOT NULL,
    status INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_at INTEGER,
    fired_at INTEGER,
    last_error TEXT
){options}"""
CREATE_DUE_INDEX = 'CREATE INDEX IF NOT EXISTS "ix_{table}_due" ON "{table}" (status, due_at)'
LIST_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'"
DROP_TABLE = 'DROP TABLE IF EXISTS "{table}"'
# A script, not execute(): the pragma frees one page per step and execute() steps only once.
RECLAIM = "PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);"

INSERT = (
    'INSERT INTO "{table}" ("{id}", "{at}", payload, status, due_at, attempts, claimed_by,'
    " claimed_at) VALUES {rows}"
)
ON_DUPLICATE_IGNORE = ' ON CONFLICT ("{id}") DO NOTHING'
EXISTING_IDS = 'SELECT "{id}", status FROM "{table}" WHERE "{id}" IN ({keys})'

# The payload only for rows due before the first parameter: the rest are read nearly due.
CLAIM_SELECT = """
SELECT "{id}", "{at}", due_at, attempts, CASE WHEN due_at < ? THEN payload END FROM "{table}"
WHERE status = 0 AND due_at < ? ORDER BY due_at LIMIT ?"""
READ_PAYLOADS = """
SELECT "{id}", "{at}", payload FROM "{table}"
WHERE status = 1 AND claimed_by = ? AND "{id}" IN ({keys})"""
CLAIM_UPDATE = """
UPDATE "{table}" SET status = 1, claimed_by = ?, claimed_at = ?, attempts = attempts + 1
WHERE "{id}" IN ({keys})"""
MARK_DONE = """
UPDATE "{table}" SET status = 2, fired_at = ?
WHERE status = 1 AND claimed_by = ? AND "{id}" IN ({keys})"""
MARK_FAILED = """
UPDATE "{table}" SET status = ?, due_at = COALESCE(?, due_at), last_error = ?, fired_at = ?
WHERE status = 1 AND claimed_by = ? AND "{id}" = ?"""
# {where} narrows it down: repos.statements.release_statement.
RELEASE = """
UPDATE "{table}" SET status = 0, claimed_by = NULL, claimed_at = NULL,
    attempts = MAX(attempts - 1, 0)
WHERE status = 1{where}"""
RELEASE_KEYS = ' AND "{id}" IN ({keys})'
CANCEL = 'UPDATE "{table}" SET status = 4 WHERE status IN (0, 1) AND "{id}" IN ({keys})'

ROW_COLUMNS = (
    '"{id}", "{at}", status, due_at, attempts, claimed_by, claimed_at, fired_at, last_error,'
    " payload"
)
GET = "SELECT " + ROW_COLUMNS + ' FROM "{table}" WHERE "{id}" = ?'
PAGE = (
    "SELECT " + ROW_COLUMNS + ' FROM "{table}"'
    ' WHERE "{at}" >= ? AND "{at}" < ?{filters} ORDER BY "{at}", "{id}" LIMIT ?'
)
PAGE_STATUS = " AND status = ?"
PAGE_AFTER = ' AND ("{at}" > ? OR ("{at}" = ? AND "{id}" > ?))'
COUNT = 'SELECT status, COUNT(*) FROM "{table}" GROUP BY status'
# Two ranges of the (status, due_at) index, bound to STATUS_RANGE; the count is of them all.
UNKNOWN_STATUS = """
SELECT "{id}", status, COUNT(*) OVER () FROM "{table}" WHERE status < ? OR status > ?
ORDER BY "{id}" LIMIT ?"""


class SqliteRepository(Generic[TEntity, TKey]):
    """ShardingRepository over one SQLite file: table `{prefix}_{suffix}` per shard."""

    def __init__(
        self,
        spec: EntitySpec[TEntity, TKey],
        policy: ShardPolicy,
        *,
        path: str | Path,
        batch_size: int = 1000,
        create_missing: bool = False,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.spec: EntitySpec[TEntity, TKey] = spec
        self.policy = policy
        self.path = Path(path)
        self.create_missing = create_missing
        self.max_payload_bytes = max_payload_bytes
        self.batch_size = max(1, min(batch_size, MAX_VARIABLES // INSERT_WIDTH))
        self._fmt = {"id": spec.id_field, "at": spec.time_field}
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._busy = 0
        self.ignored_names: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"<SqliteRepository {self.spec.name} {self.path}>"

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{self.spec.name}")
        try:
            self._conn = await self._run("open", self._connect)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    async def close(self) -> None:
        if self._thread is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        self._thread.shutdown(wait=True)
        self._thread = None

    def checked_out(self) -> int:
        """Operations running on the connection right now (0 when idle)."""
        return self._busy

    async def ensure_shards(self, start_ms: int, end_ms: int) -> list[ShardInfo]:
        wanted = shards_between(start_ms, end_ms, self.policy.granularity)

        def work(db: sqlite3.Connection) -> list[ShardInfo]:
            with _write(db):
                self._create(db, wanted)
            return [ShardInfo(name=self._table(b), bounds=b, rows={}) for b in wanted]

        return await self._run("ensure shards", work)

    async def insert(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: str | None = None,
    ) -> int:
        rows = self.spec.encode_many(
            entities,
            now_ms=now_ms,
            retention_ms=self.policy.retention_ms,
            max_payload_bytes=self.max_payload_bytes,
        )
        return await self.insert_rows(
            rows, now_ms=now_ms, on_duplicate=on_duplicate, claimed_by=claimed_by
        )

    async def insert_rows(
        self,
        rows: Sequence[EncodedRow],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: str | None = None,
    ) -> int:
        if not rows:
            return 0
        state = insert_state(claimed_by, now_ms)
        groups = group_by_shard(rows, _at_ms, self.policy.granularity)

        def work(db: sqlite3.Connection) -> int:
            stored = 0
            with _write(db):
                self._create(db, list(groups))
                for bounds, group in groups.items():
                    table = self._table(bounds)
                    for chunk in chunks(group, self.batch_size):
                        args = [
                            a
                            for r in chunk
                            for a in (r.key, r.at_ms, r.payload, state[0], r.at_ms, *state[1:])
                        ]
                        stmt = self._insert_sql(table, len(chunk), on_duplicate)
                        stored += db.execute(stmt, args).rowcount
            return stored

        try:
            return await self._run("insert", work)
        except StoreError as exc:
            if isinstance(exc.cause, sqlite3.IntegrityError):
                raise await self._duplicate(groups) from exc
            raise

    async def claim_due(
        self,
        node_id: str,
        *,
        now_ms: int,
        before_ms: int,
        since_ms: int,
        limit: int,
        payload_before_ms: int | None = None,
    ) -> list[ClaimedJob]:
        if limit <= 0:
            return []
        select_args = (
            before_ms if payload_before_ms is None else payload_before_ms,
            before_ms,
            limit,
        )

        def work(db: sqlite3.Connection) -> list[ClaimedJob]:
            with _write(db):
                shards = self._window(db, since_ms, before_ms)
                per_shard = [
                    [(*r, table) for r in db.execute(self._q(CLAIM_SELECT, table), select_args)]
                    for table in shards
                ]
                picked = list(heapq.merge(*per_shard, key=lambda r: r[2]))[:limit]
                by_table: dict[str, list[Any]] = defaultdict(list)
                for r in picked:
                    by_table[r[5]].append(r[0])
                for table, keys in by_table.items():
                    stmt = self._q(CLAIM_UPDATE, table, keys=marks(len(keys), "?"))
                    db.execute(stmt, (node_id, now_ms, *keys))
            return [ClaimedJob.from_claim(r) for r in picked]

        return await self._run("claim", work)

    async def read_payloads(self, node_id: str, refs: Sequence[RowRef]) -> dict[RowRef, bytes]:
        by_table = self._keys_by_table(refs)

        def work(db: sqlite3.Connection) -> dict[RowRef, bytes]:
            live = set(self._tables(db).values())
            found: dict[RowRef, bytes] = {}
            for table, keys in by_table.items():
                if table not in live:
                    continue
                for chunk in chunks(keys, MAX_VARIABLES - 1):
                    stmt = self._q(READ_PAYLOADS, table, keys=marks(len(chunk), "?"))
                    for key, at_ms, payload in db.execute(stmt, (node_id, *chunk)):
                        found[RowRef(key, at_ms)] = payload
            # Only the rows named: a partitioned shard's oldest partition may hold others too.
            return {ref: found[ref] for ref in refs if ref in found}

        return await self._run("read payloads", work) if refs else {}

    async def mark_done(self, node_id: str, refs: Sequence[RowRef], *, fired_at_ms: int) -> int:
        return await self._update_refs("mark done", MARK_DONE, refs, (fired_at_ms, node_id))

    async def mark_failed(self, node_id: str, failures: Sequence[Failure], *, now_ms: int) -> int:
        if not failures:
            return 0

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with _write(db):
                live = set(self._tables(db).values())
                for f in failures:
                    table = self._table(bounds_of(f.ref.at_ms, self.policy.granularity))
                    if table not in live:
                        continue
                    status = f.status if f.retry_at_ms is None else Status.PENDING
                    args = (
                        int(status),
                        f.retry_at_ms,
                        f.error[:MAX_ERROR_CHARS],
                        now_ms,
                        node_id,
                        f.ref.key,
                    )
                    changed += db.execute(self._q(MARK_FAILED, table), args).rowcount
            return changed

        return await self._run("mark failed", work)

    async def release(
        self,
        node_id: str | None,
        refs: Sequence[RowRef] | None = None,
        *,
        claimed_at_ms: int | None = None,
    ) -> int:
        template, args = release_statement(
            RELEASE, node_id, refs, claimed_at_ms, mark="?", id_filter=RELEASE_KEYS
        )
        if refs is not None:
            return await self._update_refs("release", template, refs, args)

        def work(db: sqlite3.Connection) -> int:
            with _write(db):
                tables = self._tables(db).values()
                return sum(db.execute(self._q(template, t), args).rowcount for t in tables)

        return await self._run("release", work)

    async def cancel(self, keys: Sequence[TKey]) -> int:
        keys = self.spec.check_keys(keys)
        if not keys:
            return 0

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with _write(db):
                for table in self._tables(db).values():
                    for chunk in chunks(keys, MAX_VARIABLES):
                        stmt = self._q(CANCEL, table, keys=marks(len(chunk), "?"))
                        changed += db.execute(stmt, chunk).rowcount
            return changed

        return await self._run("cancel", work)

    async def get(self, key: TKey) -> list[StoredRow]:
        def work(db: sqlite3.Connection) -> list[StoredRow]:
            return [
                StoredRow.from_row(r, table)
                for table in self._tables(db).values()
                for r in db.execute(self._q(GET, table), (key,))
            ]

        return await self._run("get", work)

    async def page(
        self,
        *,
        start_ms: int,
        end_ms: int,
        status: Status | None = None,
        after: RowRef | None = None,
        limit: int = 1000,
    ) -> list[StoredRow]:
        if limit <= 0:
            return []
        filters, extra = "", list[Any]()
        if status is not None:
            filters, extra = PAGE_STATUS, [int(status)]
        if after is not None:
            filters += PAGE_AFTER.format(**self._fmt)
            extra += [after.at_ms, after.at_ms, after.key]

        def work(db: sqlite3.Connection) -> list[StoredRow]:
            rows: list[StoredRow] = []
            # Shards are disjoint in time and read oldest first, so the pages simply concatenate.
            for table in self._window(db, start_ms, end_ms):
                stmt = self._q(PAGE, table, filters=filters)
                args = (start_ms, end_ms, *extra, limit - len(rows))
                rows += [StoredRow.from_row(r, table) for r in db.execute(stmt, args)]
                if len(rows) >= limit:
                    break
            return rows

        return await self._run("page", work)

    async def list_shards(self, *, counts: bool = False) -> list[ShardInfo]:
        def work(db: sqlite3.Connection) -> list[ShardInfo]:
            return [
                ShardInfo(name=t, bounds=b, rows=_count(db, self._q(COUNT, t)) if counts else {})
                for b, t in self._tables(db).items()
            ]

        return await self._run("list shards", work)

    async def find_unknown_status(self, *, limit: int) -> list[UnknownStatus]:
        def work(db: sqlite3.Connection) -> list[UnknownStatus]:
            args = (*STATUS_RANGE, max(1, limit))  # one row at least, to carry the count
            per_table = {
                table: db.execute(self._q(UNKNOWN_STATUS, table), args).fetchall()
                for table in self._tables(db).values()
            }
            return [UnknownStatus.of(t, rows, limit) for t, rows in per_table.items() if rows]

        return await self._run("find unknown status", work)

    async def drop_shards_before(self, cutoff_ms: int) -> list[ShardInfo]:
        def work(db: sqlite3.Connection) -> list[ShardInfo]:
            dropped = []
            with _write(db):
                for bounds, table in self._tables(db).items():
                    if bounds.end_ms <= cutoff_ms:
                        rows = _count(db, self._q(COUNT, table))
                        db.execute(self._q(DROP_TABLE, table))
                        dropped.append(ShardInfo(name=table, bounds=bounds, rows=rows))
            if dropped:
                self._reclaim(db)
            return dropped

        return await self._run("drop shards", work)

    # -- internals (the functions below run on the connection's thread) ------------------

    def _connect(self, _: None) -> sqlite3.Connection:
        return connect(self.path, create_missing=self.create_missing)

    async def _run(self, operation: str, work: Callable[[Any], T]) -> T:
        if self._thread is None:
            raise StoreError(operation, RuntimeError(f"{self!r} is not open"))
        conn = self._conn

        def call() -> T:
            self._busy += 1
            try:
                return work(conn)
            finally:
                self._busy -= 1

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except sqlite3.OperationalError as exc:
            if operation == "open":
                raise StoreUnavailable(operation, exc, address=str(self.path)) from exc
            raise StoreError(operation, exc) from exc
        except sqlite3.Error as exc:
            raise StoreError(operation, exc) from exc
        except OSError as exc:
            raise StoreUnavailable(operation, exc, address=str(self.path)) from exc

    def _q(self, template: str, table: str, **extra: str) -> str:
        return template.format(table=table, **self._fmt, **extra)

    def _table(self, bounds: ShardBounds) -> str:
        return check_identifier("shard table", f"{self.spec.table_prefix}_{bounds.suffix}")

    def _tables(self, db: sqlite3.Connection) -> dict[ShardBounds, str]:
        """Live shards, oldest first (read each time: the catalogue is local and cheap)."""
        prefix = self.spec.table_prefix
        pattern = prefix.replace("_", "\\_") + "\\_%"
        names = (name for (name,) in db.execute(LIST_TABLES, (pattern,)))
        found, self.ignored_names = read_shard_names(names, f"{prefix}_", self.policy.granularity)
        return found

    def _reclaim(self, db: sqlite3.Connection) -> None:
        """Truncate the file by the dropped shards' pages, then fold the WAL (which took the
        moved pages) back in and truncate it, so the disk space really goes back. The drop has
        committed already: a failure here only postpones that to the next drop."""
        try:
            db.executescript(RECLAIM)
        except sqlite3.Error as exc:
            logger.warning(
                "%s: shards dropped, but their space is not reclaimed yet: %s",
                self.spec.name,
                exc,
                extra={"action": "drop shards", "entity": self.spec.name},
            )

    def _window(self, db: sqlite3.Connection, start_ms: int, end_ms: int) -> list[str]:
        return [
            table
            for bounds, table in self._tables(db).items()
            if bounds.end_ms > start_ms and bounds.start_ms < end_ms
        ]

    def _create(self, db: sqlite3.Connection, wanted: Sequence[ShardBounds]) -> None:
        id_type = "INTEGER" if self.spec.key_type is int else "TEXT"
        options = "" if self.spec.key_type is int else " WITHOUT ROWID"
        for bounds in wanted:
            table = self._table(bounds)
            db.execute(self._q(CREATE_SHARD, table, id_type=id_type, options=options))
            db.execute(self._q(CREATE_DUE_INDEX, table))

    def _insert_sql(self, table: str, n: int, on_duplicate: OnDuplicate) -> str:
        row = "(" + ", ".join(["?"] * INSERT_WIDTH) + ")"
        stmt = self._q(INSERT, table, rows=", ".join([row] * n))
        return stmt + (ON_DUPLICATE_IGNORE.format(**self._fmt) if on_duplicate == "ignore" else "")

    async def _duplicate(self, groups: dict[ShardBounds, list[EncodedRow]]) -> DuplicateJob:
        """Name the id that broke the (rolled back) insert: already stored, or twice in it."""

        def work(db: sqlite3.Connection) -> DuplicateJob:
            live = set(self._tables(db).values())
            for bounds, group in groups.items():
                table = self._table(bounds)
                if table in live:
                    for chunk in chunks([r.key for r in group], MAX_VARIABLES):
                        stmt = self._q(EXISTING_IDS, table, keys=marks(len(chunk), "?"))
                        for key, status in db.execute(stmt, chunk):
                            return DuplicateJob(
                                self.spec.name,
                                key,
                                table,
                                status=getattr(read_status(status), "name", str(status)),
                            )
                repeated = _repeated_key(group)
                if repeated is not None:
                    return DuplicateJob(self.spec.name, repeated, table, in_batch=True)
            return DuplicateJob(self.spec.name, "?", "?")

        return await self._run("find duplicate", work)

    def _keys_by_table(self, refs: Sequence[RowRef]) -> dict[str, list[Any]]:
        return {
            self._table(bounds): [ref.key for ref in group]
            for bounds, group in group_by_shard(refs, _at_ms, self.policy.granularity).items()
        }

    async def _update_refs(
        self, operation: str, template: str, refs: Sequence[RowRef], lead: tuple[Any, ...]
    ) -> int:
        if not refs:
            return 0
        by_table = self._keys_by_table(refs)

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with _write(db):
                live = set(self._tables(db).values())
                for table, keys in by_table.items():
                    if table not in live:
                        continue
                    for chunk in chunks(keys, MAX_VARIABLES - len(lead)):
                        stmt = self._q(template, table, keys=marks(len(chunk), "?"))
                        changed += db.execute(stmt, (*lead, *chunk)).rowcount
            return changed

        return await self._run(operation, work)


@contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the lock first so that readers-turned-writers never
    deadlock and concurrent claimers serialise."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _count(db: sqlite3.Connection, stmt: str) -> dict[Status | int, int]:
    return {read_status(status): int(n) for status, n in db.execute(stmt)}


def _repeated_key(rows: Sequence[EncodedRow]) -> int | str | None:
    seen: set[int | str] = set()
    for row in rows:
        if row.key in seen:
            return row.key
        seen.add(row.key)
    return None


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
        for pragma in PRAGMAS:
            db.execute(pragma)
    except BaseException:
        db.close()
        raise
    return db


def create_file(path: Path) -> StoreCreated:
    """Make the SQLite file (an empty database, PRAGMAS set) and its directory, if missing."""
    store = f"SQLite file {str(path)!r}"
    if path.exists():
        return StoreCreated(store=store, created=False)
    directory = _first_missing(path.parent)
    try:
        connect(path, create_missing=True).close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreError("create SQLite file", exc) from exc
    return StoreCreated(
        store=store, created=True, directory=None if directory is None else str(directory)
    )


def _first_missing(directory: Path) -> Path | None:
    """The outermost ancestor of `directory` (itself included) that does not exist."""
    missing = None
    while not directory.exists():
        missing, directory = directory, directory.parent
    return missing


def _at_ms(item: EncodedRow | RowRef) -> int:
    return item.at_ms
