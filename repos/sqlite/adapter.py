"""Embedded SQLite repository: the zero-setup store, one table per shard in one WAL file.

sqlite3 blocks, so every statement runs on one dedicated thread that owns the connection; the
event loop only awaits it. Writes take the database lock up front (``BEGIN IMMEDIATE``), which
is SQLite's equivalent of ``FOR UPDATE SKIP LOCKED`` for a single writer: two repositories on
the same file claim in turn and never get the same row.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from repos.base import (
    Attempt,
    Claimant,
    ClaimedJob,
    DuplicateJob,
    Edge,
    Failure,
    OnDuplicate,
    RowRef,
    ShardInfo,
    ShardPolicy,
    Status,
    StoredRow,
    StoreError,
    UnknownStatus,
    encode_batch_for,
    read_status,
)
from repos.dependencies import COLUMNS, edge_row
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, EncodedBatch, EncodedRow, EntitySpec
from repos.options import DEFAULT_PRIORITY
from repos.ranked import Candidate, RankedClaim
from repos.shards import (
    ShardBounds,
    bounds_of,
    check_identifier,
    group_by_shard,
    read_shard_names,
    shards_between,
)
from repos.sqlite import sql
from repos.sqlite.connection import ConnectionThread, connect, reclaim, write
from repos.sqlite.control import SqliteJobControl
from repos.sqlite.history import HistoryWriter
from repos.sqlite.sql import MAX_VARIABLES, marks
from repos.statements import (
    check_claimant,
    check_edges,
    chunks,
    failure_args,
    insert_state,
    unknown_status_args,
)

TEntity = TypeVar("TEntity")
TKey = TypeVar("TKey", bound=int | str)
T = TypeVar("T")
logger = logging.getLogger(__name__)


class SqliteRepository(SqliteJobControl, Generic[TEntity, TKey]):
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
        self.batch_size = max(1, min(batch_size, MAX_VARIABLES // sql.INSERT_WIDTH))
        self._fmt = {"id": spec.id_field, "at": spec.time_field}
        self._db = ConnectionThread(self.path, spec.name)
        self.ignored_names: frozenset[str] = frozenset()
        self._history = HistoryWriter(spec.name)

    def __repr__(self) -> str:
        return f"<SqliteRepository {self.spec.name} {self.path}>"

    async def open(self) -> None:
        await self._db.open(self._connect)

    async def close(self) -> None:
        await self._db.close()

    def checked_out(self) -> int:
        """Operations running on the connection right now (0 when idle)."""
        return self._db.busy

    async def ensure_shards(self, start_ms: int, end_ms: int) -> list[ShardInfo]:
        wanted = shards_between(start_ms, end_ms, self.policy.granularity)

        def work(db: sqlite3.Connection) -> list[ShardInfo]:
            with write(db):
                self._create(db, wanted)
            return [ShardInfo(name=self._table(b), bounds=b, rows={}) for b in wanted]

        return await self._run("ensure shards", work)

    async def insert(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: Claimant | None = None,
        edges: Sequence[Edge] = (),
    ) -> int:
        batch = encode_batch_for(self, entities, now_ms=now_ms)
        return await self._insert(batch, now_ms, on_duplicate, claimed_by, edges)

    async def insert_rows(
        self,
        rows: Sequence[EncodedRow],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: Claimant | None = None,
        edges: Sequence[Edge] = (),
    ) -> int:
        batch = EncodedBatch.of_rows(rows)
        return await self._insert(batch, now_ms, on_duplicate, claimed_by, edges)

    async def _insert(
        self,
        batch: EncodedBatch,
        now_ms: int,
        on_duplicate: OnDuplicate,
        claimed_by: Claimant | None,
        edges: Sequence[Edge] = (),
    ) -> int:
        waiting = check_edges(edges, claimed_by, on_duplicate)
        if not batch.keys:
            return 0
        state = insert_state(claimed_by, now_ms, waiting=waiting)
        groups = batch.by_shard(self.policy.granularity)
        insert = sql.INSERT_IGNORE if on_duplicate == "ignore" else sql.INSERT

        def work(db: sqlite3.Connection) -> int:
            stored = 0
            with write(db):
                self._create(db, list(groups))
                for bounds, group in groups.items():
                    table = self._table(bounds)
                    for chunk in chunks(group, self.batch_size):
                        stmt = self._q(insert, table, rows=sql.rows(len(chunk)))
                        stored += db.execute(stmt, _insert_values(chunk, state)).rowcount
                named = (dict(zip(COLUMNS, edge_row(e), strict=True)) for e in edges)
                db.executemany(sql.INSERT_EDGE, named)
            return stored

        try:
            return await self._run("insert", work)
        except StoreError as exc:
            if isinstance(exc.cause, sqlite3.IntegrityError):
                raise await self._duplicate(groups) from exc
            raise

    async def claim_due(
        self,
        claimant: Claimant,
        *,
        now_ms: int,
        before_ms: int,
        since_ms: int,
        limit: int,
        payload_before_ms: int | None = None,
        boost_per_minute: float | None = None,
    ) -> list[ClaimedJob]:
        node_id, epoch = check_claimant(claimant)
        if limit <= 0:
            return []
        args: dict[str, Any] = {
            "payload_before_ms": before_ms if payload_before_ms is None else payload_before_ms,
            "before_ms": before_ms,
            "limit": limit,
        }

        def work(db: sqlite3.Connection) -> list[ClaimedJob]:
            with write(db):
                shards = self._window(db, since_ms, before_ms)
                if boost_per_minute is None:
                    per_shard = [
                        [(*r, table) for r in db.execute(self._q(sql.CLAIM_SELECT, table), args)]
                        for table in shards
                    ]
                    picked = list(heapq.merge(*per_shard, key=_by_due))[:limit]
                else:
                    picked = self._pick_ranked(db, shards, args, boost_per_minute)
                by_table: dict[str, list[Any]] = defaultdict(list)
                for r in picked:
                    by_table[r[-1]].append(r[0])
                for table, keys in by_table.items():
                    stmt = self._q(sql.CLAIM_UPDATE, table, keys=marks(len(keys)))
                    db.execute(stmt, (epoch, node_id, now_ms, *keys))
            return [ClaimedJob.from_claim(r) for r in picked]

        return await self._run("claim", work)

    def _pick_ranked(
        self, db: sqlite3.Connection, shards: list[str], args: dict[str, Any], boost: float
    ) -> list[tuple[Any, ...]]:
        """The claim of a backlog (repos/ranked.py), in the claim's write transaction: the best
        of the oldest due rows of each shard, merged; returned by rank, each with its table.
        Nothing else claims meanwhile, but step 1 does not test status: a row of a status this
        version does not know is picked and not taken, and the next round replaces it."""
        plan = RankedClaim(limit=args["limit"], boost_per_minute=boost)
        rows: list[tuple[Any, ...]] = []
        more = True
        while more:
            picked = plan.pick(self._ranked_candidates(db, shards, args, plan))
            by_shard: dict[int, list[Any]] = defaultdict(list)
            for c in picked:
                by_shard[c.shard].append(c.key)
            got = 0
            for no, keys in by_shard.items():
                table = shards[no]
                stmt = self._q(sql.RANKED_TAKE, table, keys=marks(len(keys)))
                values = (args["payload_before_ms"], args["before_ms"], *keys)
                taken = [(*r, table) for r in db.execute(stmt, values)]
                rows += taken
                got += len(taken)
            more = plan.took(got, len(picked))
        return sorted(rows, key=lambda r: plan.order(r[2], r[5]))

    def _ranked_candidates(
        self, db: sqlite3.Connection, shards: list[str], args: dict[str, Any], plan: RankedClaim
    ) -> list[Candidate]:
        """Step 1 of a ranked claim: the best of each shard's oldest due rows (up to the window
        bound, plan.scan_rows() per shard), merged, best first."""
        scan_before_ms, nth = args["before_ms"], plan.nth_offset()
        if nth is not None:
            nths = [self._q(sql.RANKED_NTH, table) for table in shards]
            found = [
                db.execute(q, {"before_ms": scan_before_ms, "nth": nth}).fetchone() for q in nths
            ]
            scan_before_ms = plan.scan_before(scan_before_ms, [r[0] for r in found if r])
        scan = {
            "scan_before_ms": scan_before_ms,
            "scan_rows": plan.scan_rows(),
            "boost_per_ms": plan.boost_per_ms(),
            "pick_rows": plan.pick_rows(),
        }
        per_shard = [
            [Candidate(r[0], r[1], r[2], no) for r in db.execute(self._q(sql.RANKED_SCAN, t), scan)]
            for no, t in enumerate(shards)
        ]
        best = heapq.merge(*per_shard, key=lambda c: plan.order(c.due_ms, c.priority))
        return list(islice(best, plan.pick_rows()))

    async def read_payloads(self, epoch: int, refs: Sequence[RowRef]) -> dict[RowRef, bytes]:
        by_table = self._keys_by_table(refs)

        def work(db: sqlite3.Connection) -> dict[RowRef, bytes]:
            live = set(self._tables(db).values())
            found: dict[RowRef, bytes] = {}
            for table, keys in by_table.items():
                if table not in live:
                    continue
                for chunk in chunks(keys, MAX_VARIABLES - 1):
                    stmt = self._q(sql.READ_PAYLOADS, table, keys=marks(len(chunk)))
                    for key, at_ms, payload in db.execute(stmt, (epoch, *chunk)):
                        found[RowRef(key, at_ms)] = payload
            # Only the rows named: a partitioned shard's oldest partition may hold others too.
            return {ref: found[ref] for ref in refs if ref in found}

        return await self._run("read payloads", work) if refs else {}

    async def mark_done(
        self,
        epoch: int,
        refs: Sequence[RowRef],
        *,
        fired_at_ms: int,
        history: Sequence[Attempt] = (),
    ) -> int:
        lead = (epoch, fired_at_ms)
        if not history:
            return await self._update_refs("mark done", sql.MARK_DONE, refs, lead)

        def record(db: sqlite3.Connection, by_table: dict[str, list[Any]], changed: int) -> None:
            keep = None if changed == len(refs) else self._done_now(db, by_table, lead)
            self._history.write(db, history, keep)

        return await self._update_refs("mark done", sql.MARK_DONE, refs, lead, record)

    async def mark_failed(self, epoch: int, failures: Sequence[Failure], *, now_ms: int) -> int:
        if not failures:
            return 0

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            history = []
            with write(db):
                live = set(self._tables(db).values())
                for f in failures:
                    table = self._table(bounds_of(f.ref.at_ms, self.policy.granularity))
                    if table not in live:
                        continue
                    args = failure_args(f, epoch, now_ms)
                    if db.execute(self._q(sql.MARK_FAILED, table), args).rowcount:
                        changed += 1
                        if f.history is not None:
                            history.append(f.history)
                if history:
                    self._history.write(db, history)
            return changed

        try:
            return await self._run("mark failed", work)
        except Exception:
            self._history.forget()  # a history table made in the rolled-back transaction
            raise

    def _done_now(
        self, db: sqlite3.Connection, by_table: dict[str, list[Any]], lead: tuple[Any, ...]
    ) -> set[tuple[Any, int]]:
        """The rows this ack marked DONE (in its transaction): its history is theirs only."""
        done: set[tuple[Any, int]] = set()
        live = set(self._tables(db).values())
        for table in by_table.keys() & live:
            for chunk in chunks(by_table[table], MAX_VARIABLES - len(lead)):
                stmt = self._q(sql.DONE_BY_THIS_ACK, table, keys=marks(len(chunk)))
                done.update((key, at_ms) for key, at_ms in db.execute(stmt, (*lead, *chunk)))
        return done

    async def release(self, epoch: int, refs: Sequence[RowRef]) -> int:
        return await self._update_refs("release", sql.RELEASE, refs, (epoch,))

    async def take_over(
        self,
        epoch: int,
        *,
        from_ms: int,
        before_ms: int | None = None,
        claimed_at_ms: int | None = None,
    ) -> int:
        args = {
            "epoch": epoch,
            "from_ms": from_ms,
            "before_ms": before_ms,
            "claimed_at_ms": claimed_at_ms,
        }
        return await self._every_table("take over", sql.TAKE_OVER, args)

    async def take_over_earlier(self, epoch: int, *, keep: Collection[int], from_ms: int) -> int:
        args = {"epoch": epoch, "keep": orjson.dumps(sorted(keep)).decode(), "from_ms": from_ms}
        return await self._every_table("take over", sql.TAKE_OVER_EARLIER, args)

    async def fenced(self, epoch: int, refs: Sequence[RowRef]) -> list[StoredRow]:
        by_table = self._keys_by_table(refs)
        named = set(refs)

        def work(db: sqlite3.Connection) -> list[StoredRow]:
            live = set(self._tables(db).values())
            found = []
            for table, keys in by_table.items():
                if table not in live:
                    continue
                for chunk in chunks(keys, MAX_VARIABLES - 1):
                    stmt = self._q(sql.FENCED, table, keys=marks(len(chunk)))
                    rows = db.execute(stmt, (epoch, *chunk))
                    found += [StoredRow.from_row(r, table) for r in rows]
            return [r for r in found if RowRef(r.key, r.at_ms) in named]

        return await self._run("read fenced rows", work) if refs else []

    async def cancel(self, keys: Sequence[TKey]) -> int:
        keys = self.spec.check_keys(keys)
        if not keys:
            return 0

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with write(db):
                for table in self._tables(db).values():
                    for chunk in chunks(keys, MAX_VARIABLES):
                        stmt = self._q(sql.CANCEL, table, keys=marks(len(chunk)))
                        changed += db.execute(stmt, chunk).rowcount
            return changed

        return await self._run("cancel", work)

    async def locate(self, keys: Sequence[TKey]) -> dict[RowRef, Status | int]:
        keys = self.spec.check_keys(keys)

        def work(db: sqlite3.Connection) -> dict[RowRef, Status | int]:
            found: dict[RowRef, Status | int] = {}
            for table in self._tables(db).values():
                for chunk in chunks(keys, MAX_VARIABLES):
                    stmt = self._q(sql.LOCATE, table, keys=marks(len(chunk)))
                    for key, at_ms, status in db.execute(stmt, chunk):
                        found[RowRef(key, at_ms)] = read_status(status)
            return found

        return await self._run("locate", work) if keys else {}

    async def end_waits(self, ready: Sequence[RowRef], failed: Sequence[Failure]) -> int:
        by_table = self._keys_by_table(ready)

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with write(db):
                live = set(self._tables(db).values())
                for table, keys in by_table.items():
                    if table in live:
                        for chunk in chunks(keys, MAX_VARIABLES):
                            stmt = self._q(sql.WAKE, table, keys=marks(len(chunk)))
                            changed += db.execute(stmt, chunk).rowcount
                for f in failed:
                    table = self._table(bounds_of(f.ref.at_ms, self.policy.granularity))
                    if table in live:
                        args = {"status": int(f.status), "error": f.error, "key": f.ref.key}
                        changed += db.execute(self._q(sql.FAIL_WAITING, table), args).rowcount
            return changed

        return await self._run("end waits", work) if ready or failed else 0

    async def get(self, key: TKey) -> list[StoredRow]:
        def work(db: sqlite3.Connection) -> list[StoredRow]:
            return [
                StoredRow.from_row(r, table)
                for table in self._tables(db).values()
                for r in db.execute(self._q(sql.GET, table), {"key": key})
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
        args = {
            "start_ms": start_ms,
            "end_ms": end_ms,
            "status": None if status is None else int(status),
            "after_at_ms": None if after is None else after.at_ms,
            "after_key": None if after is None else after.key,
        }

        def work(db: sqlite3.Connection) -> list[StoredRow]:
            rows: list[StoredRow] = []
            # Shards are disjoint in time and read oldest first, so the pages simply concatenate.
            for table in self._window(db, start_ms, end_ms):
                stmt = self._q(sql.PAGE, table)
                found = db.execute(stmt, {**args, "limit": limit - len(rows)})
                rows += [StoredRow.from_row(r, table) for r in found]
                if len(rows) >= limit:
                    break
            return rows

        return await self._run("page", work)

    async def list_shards(self, *, counts: bool = False) -> list[ShardInfo]:
        def work(db: sqlite3.Connection) -> list[ShardInfo]:
            return [
                ShardInfo(
                    name=t, bounds=b, rows=_count(db, self._q(sql.COUNT, t)) if counts else {}
                )
                for b, t in self._tables(db).items()
            ]

        return await self._run("list shards", work)

    async def find_unknown_status(
        self, *, limit: int, due_before_ms: int | None = None, cutoff_ms: int | None = None
    ) -> list[UnknownStatus]:
        def statement(bounds: ShardBounds) -> str:
            whole = due_before_ms is None or (cutoff_ms is not None and bounds.end_ms <= cutoff_ms)
            return sql.UNKNOWN_STATUS if whole else sql.UNKNOWN_STATUS_DUE

        def work(db: sqlite3.Connection) -> list[UnknownStatus]:
            args = unknown_status_args(limit, due_before_ms)
            per_table = {
                table: db.execute(self._q(statement(bounds), table), args).fetchall()
                for bounds, table in self._tables(db).items()
            }
            return [UnknownStatus.of(t, rows, limit) for t, rows in per_table.items() if rows]

        return await self._run("find unknown status", work)

    async def drop_shards_before(self, cutoff_ms: int) -> list[ShardInfo]:
        def work(db: sqlite3.Connection) -> list[ShardInfo]:
            dropped = []
            with write(db):
                for bounds, table in self._tables(db).items():
                    if bounds.end_ms <= cutoff_ms:
                        rows = _count(db, self._q(sql.COUNT, table))
                        db.execute(self._q(sql.DROP_TABLE, table))
                        dropped.append(ShardInfo(name=table, bounds=bounds, rows=rows))
            if dropped:
                reclaim(db, self.spec.name)
            return dropped

        return await self._run("drop shards", work)

    # -- internals (the functions below run on the connection's thread) ------------------

    def _connect(self) -> sqlite3.Connection:
        db = connect(self.path, create_missing=self.create_missing)
        try:
            self._upgrade(db)
        except BaseException:
            db.close()
            raise
        return db

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Make the store's dependencies and revocations tables if missing (an insert with
        edges writes the one, a change to a claimed row the other), and
        bring the tables of earlier versions to this shape (sql.UPGRADE_*): before priorities
        and categories (first: the claim index has priority), before epoch claims, before the
        claim index had priority. At open only: the embedded store is one process, so no older
        one makes tables later."""
        with write(db):
            db.execute(sql.CREATE_DEPENDENCIES)
            db.execute(sql.CREATE_REVOCATIONS)
        columns = {
            table: {c for (c,) in db.execute(sql.TABLE_COLUMNS, {"table": table})}
            for table in self._tables(db).values()
        }
        for table in [t for t, names in columns.items() if "priority" not in names]:
            with write(db):
                for ddl in sql.UPGRADE_ADD_PRIORITY:
                    db.execute(self._q(ddl, table))
            logger.info(
                "shard %s upgraded: priority and category columns added (defaults 500, none)",
                table,
                extra={"action": "upgrade", "shard": table},
            )
        for table in [t for t, names in columns.items() if "claim_epoch" not in names]:
            self._upgrade_epoch(db, table)
        for table in columns:
            self._upgrade_claim_index(db, table)

    def _upgrade_claim_index(self, db: sqlite3.Connection, table: str) -> None:
        """The claim index of a table made before it had priority, made again with it."""
        index = {"index": f"ix_{table}_claim"}
        if "priority" in {c for (c,) in db.execute(sql.CLAIM_INDEX_COLUMNS, index)}:
            return
        with write(db):
            db.execute(self._q(sql.DROP_CLAIM_INDEX, table))
            db.execute(self._q(sql.CREATE_CLAIM_INDEX, table))
        logger.info(
            "shard %s upgraded: claim index rebuilt with priority (ranked claims)",
            table,
            extra={"action": "upgrade", "shard": table},
        )

    def _upgrade_epoch(self, db: sqlite3.Connection, table: str) -> None:
        with write(db):
            db.execute(self._q(sql.UPGRADE_ADD_EPOCH, table))
            released = db.execute(self._q(sql.UPGRADE_RELEASE, table)).rowcount
            db.execute(self._q(sql.UPGRADE_FINISHED, table))
            db.execute(self._q(sql.DROP_OLD_INDEX, table))
            db.execute(self._q(sql.CREATE_CLAIM_INDEX, table))
        logger.warning(
            "shard %s upgraded to epoch claims; %d rows it held CLAIMED are PENDING again"
            " and fire once, now",
            table,
            released,
            extra={"action": "upgrade", "shard": table},
        )

    async def _every_table(self, operation: str, template: str, args: dict[str, Any]) -> int:
        def work(db: sqlite3.Connection) -> int:
            with write(db):
                tables = self._tables(db).values()
                return sum(db.execute(self._q(template, t), args).rowcount for t in tables)

        return await self._run(operation, work)

    async def _run(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(operation, work)

    def _q(self, template: str, table: str, **extra: str) -> str:
        return template.format(table=table, **self._fmt, **extra)

    def _table(self, bounds: ShardBounds) -> str:
        return check_identifier("shard table", f"{self.spec.table_prefix}_{bounds.suffix}")

    def _tables(self, db: sqlite3.Connection) -> dict[ShardBounds, str]:
        """Live shards, oldest first (read each time: the catalogue is local and cheap)."""
        prefix = self.spec.table_prefix
        pattern = prefix.replace("_", "\\_") + "\\_%"
        names = (name for (name,) in db.execute(sql.LIST_TABLES, {"pattern": pattern}))
        found, self.ignored_names = read_shard_names(names, f"{prefix}_", self.policy.granularity)
        return found

    def _window(self, db: sqlite3.Connection, start_ms: int, end_ms: int) -> list[str]:
        return [
            table
            for bounds, table in self._tables(db).items()
            if bounds.end_ms > start_ms and bounds.start_ms < end_ms
        ]

    def _create(self, db: sqlite3.Connection, wanted: Sequence[ShardBounds]) -> None:
        create = sql.CREATE_SHARD[self.spec.key_type]
        for bounds in wanted:
            table = self._table(bounds)
            db.execute(self._q(create, table))
            db.execute(self._q(sql.CREATE_CLAIM_INDEX, table))

    async def _duplicate(self, groups: dict[ShardBounds, EncodedBatch]) -> DuplicateJob:
        """Name the id that broke the (rolled back) insert: already stored, or twice in it."""

        def work(db: sqlite3.Connection) -> DuplicateJob:
            live = set(self._tables(db).values())
            for bounds, group in groups.items():
                table = self._table(bounds)
                if table in live:
                    for chunk in chunks(group.keys, MAX_VARIABLES):
                        stmt = self._q(sql.EXISTING_IDS, table, keys=marks(len(chunk)))
                        for key, status in db.execute(stmt, chunk):
                            return DuplicateJob(
                                self.spec.name,
                                key,
                                table,
                                status=getattr(read_status(status), "name", str(status)),
                            )
                repeated = _repeated_key(group.keys)
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
        self,
        operation: str,
        template: str,
        refs: Sequence[RowRef],
        lead: tuple[Any, ...],
        then: Callable[[sqlite3.Connection, dict[str, list[Any]], int], None] | None = None,
    ) -> int:
        """One UPDATE per shard (and MAX_VARIABLES ids); `then` runs in the same transaction
        after them, given the ids by table and the rows changed."""
        if not refs:
            return 0
        by_table = self._keys_by_table(refs)

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with write(db):
                live = set(self._tables(db).values())
                for table, keys in by_table.items():
                    if table not in live:
                        continue
                    for chunk in chunks(keys, MAX_VARIABLES - len(lead)):
                        stmt = self._q(template, table, keys=marks(len(chunk)))
                        changed += db.execute(stmt, (*lead, *chunk)).rowcount
                if then is not None:
                    then(db, by_table, changed)
            return changed

        try:
            return await self._run(operation, work)
        except Exception:
            self._history.forget()  # a history table made in the rolled-back transaction
            raise


def _count(db: sqlite3.Connection, stmt: str) -> dict[Status | int, int]:
    return {read_status(status): int(n) for status, n in db.execute(stmt)}


def _insert_values(rows: EncodedBatch, state: tuple[Any, ...]) -> list[Any]:
    """INSERT's values for `rows`, row after row, laid out a column at a time (a slice
    assignment each); `state`: repos.statements.insert_state."""
    status, attempts, epoch, claimed_by, claimed_at = state
    n = len(rows)
    priorities = rows.priorities or [DEFAULT_PRIORITY] * n
    categories = rows.categories or [""] * n
    columns: tuple[list[Any], ...] = (
        rows.keys,
        rows.at_ms,
        rows.payloads,
        [status] * n,
        rows.at_ms,  # due_at
        [attempts] * n,
        [epoch] * n,
        [claimed_by] * n,
        [claimed_at] * n,
        priorities,
        categories,
    )
    values: list[Any] = [None] * (sql.INSERT_WIDTH * n)
    for i, column in enumerate(columns):
        values[i :: sql.INSERT_WIDTH] = column
    return values


def _repeated_key(keys: Sequence[int | str]) -> int | str | None:
    seen: set[int | str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None


#: The sharding time of a RowRef, read in C (group_by_shard).
_at_ms = attrgetter("at_ms")


def _by_due(r: Sequence[Any]) -> Any:
    """A claimed row's place in a claim in due order (its due_at)."""
    return r[2]
