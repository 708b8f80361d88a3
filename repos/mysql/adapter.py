"""MySQL/MariaDB repository: one class for both layouts and both drivers.

Hot-path shape: a claim is one UNION ALL select (FOR UPDATE SKIP LOCKED) over the shards in the
window plus one UPDATE per shard, in one transaction; acks are one UPDATE per shard listing the
ids. ``executemany`` would send an UPDATE per row, so multi-row statements are built here.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Generic, TypeVar

from repos.base import (
    Attempt,
    Claimant,
    ClaimedJob,
    ClaimsLocked,
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
from repos.dependencies import edge_row
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, EncodedBatch, EncodedRow, EntitySpec
from repos.events import NO_EVENTS, StoreEvents
from repos.mysql import sql
from repos.mysql.control import MysqlJobControl
from repos.mysql.driver import DUPLICATE_KEY, Executor, Row, Tx, error_code
from repos.mysql.duplicates import duplicate_entry, duplicate_of, row_of_entry
from repos.mysql.history import HistoryWriter
from repos.mysql.layouts import Layout, MultiTable, Partitioned, Shard
from repos.mysql.literals import (
    MAX_INSERT_PAYLOAD_BYTES,
    insert_values,
    int_literal,
    keeps_json_text,
    key_literal,
    literal,
    literal_list,
    payload_limits,
    shared_columns,
    tuple_literal,
    with_document,
)
from repos.mysql.live_shards import LiveShards
from repos.ranked import Candidate, RankedClaim
from repos.shards import bounds_of, shards_between
from repos.statements import (
    check_claimant,
    check_edges,
    chunks,
    chunks_within,
    failure_args,
    insert_state,
    unknown_status_args,
)
from repos.urls import Driver, LayoutName, MysqlUrl

TEntity = TypeVar("TEntity")
TKey = TypeVar("TKey", bound=int | str)
logger = logging.getLogger(__name__)

#: Cap on the ids listed in one `IN (...)` (keeps statements well under max_allowed_packet).
MAX_IN = 5000


class MysqlRepository(MysqlJobControl, Generic[TEntity, TKey]):
    """ShardingRepository over MySQL/MariaDB, multi-table or partitioned, asyncmy or aiomysql."""

    def __init__(
        self,
        spec: EntitySpec[TEntity, TKey],
        policy: ShardPolicy,
        *,
        url: MysqlUrl,
        layout: LayoutName = "multi-table",
        driver: Driver = "asyncmy",
        pool_size: int = 10,
        pool_recycle_s: int = 3600,
        batch_size: int = 1000,
        connect_timeout_s: float = 5.0,
        create_missing: bool = False,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        events: StoreEvents = NO_EVENTS,
    ) -> None:
        self.spec: EntitySpec[TEntity, TKey] = spec
        self.policy = policy
        self.batch_size = batch_size
        self._configured_payload_bytes = self.max_payload_bytes = max_payload_bytes
        self._insert_payload_bytes = MAX_INSERT_PAYLOAD_BYTES  # both lowered by open()
        self._documents = False  # inserts from documents: set by open() on MariaDB
        self._ex = Executor(
            url,
            driver=driver,
            pool_size=pool_size,
            pool_recycle_s=pool_recycle_s,
            connect_timeout_s=connect_timeout_s,
            create_missing=create_missing,
            events=events,
        )
        self._fmt = {"id": spec.id_field, "at": spec.time_field}
        self._key = key_literal(spec.key_type)
        columns = {**self._fmt, "id_type": sql.ID_TYPE[spec.key_type]}
        self._columns = columns
        kinds: dict[str, type[MultiTable] | type[Partitioned]] = {
            "multi-table": MultiTable,
            "partitioned": Partitioned,
        }
        self._layout: Layout = kinds[layout](spec.table_prefix, policy.granularity, columns)
        self._live = LiveShards(self._layout, self._ex, policy.granularity)
        #: The store's dependencies table is known to exist (made by the first insert with edges).
        self._dependencies_made = False
        self._history = HistoryWriter(spec.name)

    def __repr__(self) -> str:
        return f"<MysqlRepository {self.spec.name} {self._ex.address} shards={len(self._live)}>"

    async def open(self) -> None:
        await self._ex.open()
        await self._read_server_limits()
        await self._live.refresh()

    async def close(self) -> None:
        await self._ex.close()

    def checked_out(self) -> int:
        return self._ex.checked_out()

    @property
    def ignored_names(self) -> frozenset[str]:
        return self._layout.ignored

    async def ensure_shards(self, start_ms: int, end_ms: int) -> list[ShardInfo]:
        wanted = shards_between(start_ms, end_ms, self.policy.granularity)
        live = await self._live.refresh()
        missing = [b for b in wanted if not self._live.covers(b)]
        if missing:
            await self._layout.create(self._ex, missing, live)
            await self._live.refresh()
        made = self._live.by_start
        return [_info(made[b.start_ms]) for b in wanted if b.start_ms in made]

    async def insert(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: Claimant | None = None,
        edges: Sequence[Edge] = (),
    ) -> int:
        # From a document if it is one statement's rows: one shard (the encoder sees to it),
        # batch_size rows at most; a larger call goes in as VALUES, batch_size rows a statement.
        document = self._documents and len(entities) <= self.batch_size
        batch = encode_batch_for(self, entities, now_ms=now_ms, document=document)
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
        args: dict[str, Any] = {
            "payload_before_ms": before_ms if payload_before_ms is None else payload_before_ms,
            "before_ms": before_ms,
            "limit": limit,
        }
        node_id, epoch = check_claimant(claimant)
        claim = {"node_id": node_id, "epoch": epoch, "now_ms": now_ms}

        async def attempt(_: bool) -> list[Row]:
            # After a shard was dropped elsewhere, the window of the list read again skips it.
            shards = await self._live.window(since_ms, before_ms)
            if not shards or limit <= 0:
                return []
            if boost_per_minute is None:
                body = partial(self._claim, shards, args, claim)
            else:
                body = partial(self._claim_ranked, shards, args, claim, boost_per_minute)
            return list(await self._ex.run("claim", body))

        rows = await self._live.again_if_dropped(attempt)
        return [ClaimedJob.from_claim(r) for r in rows]

    async def read_payloads(self, epoch: int, refs: Sequence[RowRef]) -> dict[RowRef, bytes]:
        async def attempt(fallback: bool) -> dict[RowRef, bytes]:
            found: dict[RowRef, bytes] = {}
            by_target = self._live.keys_by_target(refs, fallback=fallback)
            if not by_target:
                return found
            async with self._ex.transaction("read payloads") as tx:
                for target, keys in by_target.items():
                    for chunk in chunks(keys, MAX_IN):
                        stmt = sql.READ_PAYLOADS.format(
                            target=target, keys=literal_list(self._key, chunk), **self._fmt
                        )
                        rows = await tx.fetch_all(stmt, {"epoch": epoch})
                        for key, at_ms, payload in rows:
                            found[RowRef(key, at_ms)] = payload
            return found

        found = await self._live.again_if_dropped(attempt)
        # Only the rows named: a partitioned shard's oldest partition may hold others too.
        return {ref: found[ref] for ref in refs if ref in found}

    async def mark_done(
        self,
        epoch: int,
        refs: Sequence[RowRef],
        *,
        fired_at_ms: int,
        history: Sequence[Attempt] = (),
    ) -> int:
        args = {"fired_at_ms": fired_at_ms, "epoch": epoch}
        if not history:
            return await self._update_refs("mark done", sql.MARK_DONE, refs, args)
        tables = await self._history.prepare(self._ex, history)

        async def record(tx: Tx, by_target: dict[str, list[Any]], changed: int) -> None:
            keep = None if changed == len(refs) else await self._done_now(tx, by_target, args)
            await self._history.write(tx, tables, keep)

        with self._forgetting_history():
            return await self._update_refs("mark done", sql.MARK_DONE, refs, args, record)

    async def mark_failed(self, epoch: int, failures: Sequence[Failure], *, now_ms: int) -> int:
        history = [f.history for f in failures if f.history is not None]
        tables = await self._history.prepare(self._ex, history) if history else {}

        async def body(tx: Tx, fallback: bool) -> int:
            changed = 0
            kept: set[tuple[Any, int]] = set()
            for f in failures:
                target = self._live.target_of(f.ref.at_ms, fallback=fallback)
                if target is None:
                    continue
                stmt = sql.MARK_FAILED.format(target=target, **self._fmt)
                if await tx.execute(stmt, failure_args(f, epoch, now_ms)):
                    changed += 1
                    kept.add(f.ref)
            if tables:
                await self._history.write(tx, tables, kept)
            return changed

        if not failures:
            return 0
        with self._forgetting_history():
            return await self._live.again_if_dropped(
                lambda fallback: self._ex.run("mark failed", lambda tx: body(tx, fallback))
            )

    @contextmanager
    def _forgetting_history(self) -> Iterator[None]:
        """An ack that failed may have found a history table gone: made again next time."""
        try:
            yield
        except StoreError:
            self._history.forget()
            raise

    async def _done_now(
        self, tx: Tx, by_target: dict[str, list[Any]], args: dict[str, Any]
    ) -> set[tuple[Any, int]]:
        """The rows this ack marked DONE (in its transaction): its history is theirs only."""
        done: set[tuple[Any, int]] = set()
        for target, keys in by_target.items():
            for chunk in chunks(keys, MAX_IN):
                keys_sql = literal_list(self._key, chunk)
                stmt = sql.DONE_BY_THIS_ACK.format(target=target, keys=keys_sql, **self._fmt)
                done.update((key, at_ms) for key, at_ms in await tx.fetch_all(stmt, args))
        return done

    async def release(self, epoch: int, refs: Sequence[RowRef]) -> int:
        return await self._update_refs("release", sql.RELEASE, refs, {"epoch": epoch})

    async def take_over(
        self,
        epoch: int,
        *,
        from_ms: int,
        before_ms: int | None = None,
        claimed_at_ms: int | None = None,
    ) -> int:
        # Every shard: a retried row is due after its shard's end.
        shards = await self._live.refresh()
        args = {"from_ms": from_ms, "before_ms": before_ms, "claimed_at_ms": claimed_at_ms}
        return await self._take_over([(s, [epoch]) for s in shards], args)

    async def take_over_earlier(self, epoch: int, *, keep: Collection[int], from_ms: int) -> int:
        shards = await self._live.refresh()
        if not shards:
            return 0
        stmt = sql.union_all(sql.CLAIM_EPOCHS_PART, [s.target for s in shards])
        async with self._ex.transaction("list claim epochs") as tx:
            rows = await tx.fetch_all(stmt)
        others: dict[int, list[int]] = defaultdict(list)
        for shard_no, claim_epoch in rows:
            if claim_epoch < epoch and claim_epoch not in keep:
                others[shard_no].append(claim_epoch)
        work = [(shards[no], epochs) for no, epochs in others.items()]
        args = {"from_ms": from_ms, "before_ms": None, "claimed_at_ms": None}
        return await self._take_over(work, args)

    async def fenced(self, epoch: int, refs: Sequence[RowRef]) -> list[StoredRow]:
        async def attempt(fallback: bool) -> list[Row]:
            by_target = self._live.keys_by_target(refs, fallback=fallback)
            found: list[Row] = []
            async with self._ex.transaction("read fenced rows") as tx:
                for target, keys in by_target.items():
                    for chunk in chunks(keys, MAX_IN):
                        keys_sql = literal_list(self._key, chunk)
                        stmt = sql.FENCED.format(target=target, keys=keys_sql, **self._fmt)
                        found += await tx.fetch_all(stmt, {"epoch": epoch})
            return found

        rows = await self._live.again_if_dropped(attempt) if refs else []
        # Only the rows named, each once: the partitioned layout's fallback to the whole table
        # (a ref older than its oldest partition) finds other shards' rows of the id too.
        found = {RowRef(r[0], r[1]): r for r in rows}
        return [
            StoredRow.from_row(found[ref], self._shard_name(ref.at_ms))
            for ref in dict.fromkeys(refs)
            if ref in found
        ]

    async def cancel(self, keys: Sequence[TKey]) -> int:
        keys = self.spec.check_keys(keys)
        shards = await self._live.refresh()

        async def body(tx: Tx) -> int:
            changed = 0
            for shard in shards:
                for chunk in chunks(list(keys), MAX_IN):
                    stmt = sql.CANCEL.format(
                        target=shard.target, keys=literal_list(self._key, chunk), **self._fmt
                    )
                    changed += await tx.execute(stmt)
            return changed

        return int(await self._ex.run("cancel", body)) if keys else 0

    async def locate(self, keys: Sequence[TKey]) -> dict[RowRef, Status | int]:
        keys = self.spec.check_keys(keys)
        shards = await self._live.refresh()
        found: dict[RowRef, Status | int] = {}
        if not keys or not shards:
            return found
        targets = [s.target for s in shards]
        async with self._ex.transaction("locate") as tx:
            for chunk in chunks(list(keys), MAX_IN):
                names = {**self._fmt, "keys": literal_list(self._key, chunk)}
                stmt = sql.union_all(sql.LOCATE_PART, targets, **names)
                for _, key, at_ms, status in await tx.fetch_all(stmt):
                    found[RowRef(key, at_ms)] = read_status(status)
        return found

    async def end_waits(self, ready: Sequence[RowRef], failed: Sequence[Failure]) -> int:
        async def attempt(fallback: bool) -> int:
            by_target = self._live.keys_by_target(ready, fallback=fallback)

            async def body(tx: Tx) -> int:
                changed = 0
                for target, keys in by_target.items():
                    for chunk in chunks(keys, MAX_IN):
                        keys_sql = literal_list(self._key, chunk)
                        stmt = sql.WAKE.format(target=target, keys=keys_sql, **self._fmt)
                        changed += await tx.execute(stmt)
                for f in failed:
                    at = self._live.target_of(f.ref.at_ms, fallback=fallback)
                    if at is not None:
                        args = {"status": int(f.status), "error": f.error, "key": f.ref.key}
                        changed += await tx.execute(
                            sql.FAIL_WAITING.format(target=at, **self._fmt), args
                        )
                return changed

            return int(await self._ex.run("end waits", body))

        if not ready and not failed:
            return 0
        return await self._live.again_if_dropped(attempt)

    async def get(self, key: TKey) -> list[StoredRow]:
        shards = await self._live.refresh()
        if not shards:
            return []
        parts = sql.union_all(sql.GET_PART, [s.target for s in shards], **self._fmt)
        stmt = sql.GET.format(parts=parts, **self._fmt)
        return await self._read("get", stmt, {"key": key}, shards)

    async def page(
        self,
        *,
        start_ms: int,
        end_ms: int,
        status: Status | None = None,
        after: RowRef | None = None,
        limit: int = 1000,
    ) -> list[StoredRow]:
        args = {
            "start_ms": start_ms,
            "end_ms": end_ms,
            "status": None if status is None else int(status),
            "after_at_ms": None if after is None else after.at_ms,
            "after_key": None if after is None else after.key,
            "limit": limit,
        }

        async def attempt(_: bool) -> list[StoredRow]:
            shards = await self._live.window(start_ms, end_ms)
            if not shards or limit <= 0:
                return []
            parts = sql.union_all(sql.PAGE_PART, [s.target for s in shards], **self._fmt)
            return await self._read("page", sql.PAGE.format(parts=parts, **self._fmt), args, shards)

        return await self._live.again_if_dropped(attempt)

    async def list_shards(self, *, counts: bool = False) -> list[ShardInfo]:
        shards = await self._live.refresh()
        tallies = await self._count(shards) if counts and shards else {}
        return [_info(s, tallies.get(i, {})) for i, s in enumerate(shards)]

    async def find_unknown_status(
        self, *, limit: int, due_before_ms: int | None = None, cutoff_ms: int | None = None
    ) -> list[UnknownStatus]:
        shards = await self._live.refresh()
        if not shards:
            return []

        def part(shard: Shard) -> str:
            whole = due_before_ms is None or (
                cutoff_ms is not None and shard.bounds.end_ms <= cutoff_ms
            )
            return sql.UNKNOWN_STATUS_PART if whole else sql.UNKNOWN_STATUS_DUE_PART

        targets = [s.target for s in shards]
        stmt = sql.union_all([part(s) for s in shards], targets, **self._fmt)
        async with self._ex.transaction("find unknown status") as tx:
            rows = await tx.fetch_all(stmt, unknown_status_args(limit, due_before_ms))
        by_shard: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            by_shard[row[0]].append(row[1:])
        return [UnknownStatus.of(shards[i].name, by_shard[i], limit) for i in sorted(by_shard)]

    async def drop_shards_before(self, cutoff_ms: int) -> list[ShardInfo]:
        live = await self._live.refresh()
        expired = [s for s in live if s.bounds.end_ms <= cutoff_ms]
        tallies = await self._count(expired) if expired else {}
        dropped = []
        for i, shard in enumerate(expired):
            await self._layout.drop(self._ex, shard, live)
            live.remove(shard)
            dropped.append(_info(shard, tallies.get(i, {})))
        await self._live.refresh()
        return dropped

    # -- internals ------------------------------------------------------------------------

    async def _read_server_limits(self) -> None:
        """Lower the payload caps to what this server's max_allowed_packet lets through; insert
        from documents on MariaDB only (sql.INSERT_DOCUMENT)."""
        async with self._ex.transaction("read max_allowed_packet") as tx:
            [(packet, version)] = await tx.fetch_all(sql.SERVER_LIMITS)
        self._documents = keeps_json_text(str(version))
        row_bytes, insert_bytes = payload_limits(int(packet), self.batch_size)
        self.max_payload_bytes = min(self._configured_payload_bytes, row_bytes)
        self._insert_payload_bytes = insert_bytes
        if self.max_payload_bytes < self._configured_payload_bytes:
            logger.warning(
                "%s: max_payload_bytes %d lowered to %d: the server's max_allowed_packet is %d"
                " and payloads travel hex-encoded, at twice their size",
                self.spec.name,
                self._configured_payload_bytes,
                self.max_payload_bytes,
                packet,
                extra={"action": "open", "entity": self.spec.name},
            )

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
        if waiting and not self._dependencies_made:
            await self._ex.execute_ddl("create dependencies table", sql.CREATE_DEPENDENCIES)
            self._dependencies_made = True
        status, attempts, epoch, by, at = insert_state(claimed_by, now_ms, waiting=waiting)
        # The same for every row of the call: the claim columns (priority, category and the
        # layout's columns follow).
        state = f",{attempts},{epoch},{literal(by or '')},{at or 0}"
        statements = await self._insert_statements(batch)
        in_flight = [batch]  # the statement's rows: a duplicate is among them

        async def body(tx: Tx) -> int:
            stored = 0
            for target, extra, chunk in statements:
                in_flight[0] = chunk
                shared = (status, state, extra)
                stored += await tx.execute(self._render_insert(chunk, target, shared, on_duplicate))
            for some in chunks(list(edges), MAX_IN):
                rows = ",".join(tuple_literal(edge_row(edge)) for edge in some)
                await tx.execute(sql.INSERT_EDGES.format(rows=rows))
            return stored

        try:
            alone = len(statements) == 1 and not edges
            return int(await self._ex.run("insert", body, one_statement=alone))
        except StoreError as exc:
            if error_code(exc.cause) == DUPLICATE_KEY:
                raise await self._duplicate(exc, in_flight[0].rows(), batch.rows()) from exc
            raise

    async def _insert_statements(self, batch: EncodedBatch) -> list[tuple[str, str, EncodedBatch]]:
        """(target, the layout's values of each row, rows) of every INSERT the rows need, in batch_size
        rows and the payload bytes a statement takes at most; missing shards are made first.
        A batch's document goes in whole if it fits one statement (the usual batch)."""
        by_shard = batch.by_shard(self.policy.granularity)
        wanted = list(by_shard)
        if not all(self._live.covers(bounds) for bounds in wanted):
            await self.ensure_shards(wanted[0].start_ms, wanted[-1].end_ms)
        statements = []
        limit = self._insert_payload_bytes
        for bounds, group in by_shard.items():
            target = self._live.insert_target(bounds)
            extra = "".join(f",{v}" for v in self._layout.extra_values(bounds))
            document = group.document
            if document is not None and len(group) <= self.batch_size and len(document) <= limit:
                statements.append((target, extra, group))
                continue
            sizes = list(map(len, group.payloads))
            statements += [
                (target, extra, c) for c in chunks_within(group, self.batch_size, limit, sizes)
            ]
        return statements

    def _render_insert(
        self,
        rows: EncodedBatch,
        target: str,
        state: tuple[int, str, str],
        on_duplicate: OnDuplicate,
    ) -> str | bytes:
        """One INSERT of `rows` into `target`: from their document if they have one (its rows
        have the default priority and category), else VALUES. `state`: the status, claim
        columns and layout's columns every row shares."""
        status, claim, extra = state
        if rows.document is not None:
            return with_document(
                self._layout.document_inserts[on_duplicate],
                rows.document,
                target=target,
                state=shared_columns(status, claim, extra),
                **self._columns,
            )
        values = insert_values(rows, self._key, status, claim, extra)
        return self._layout.inserts[on_duplicate].format(target=target, rows=values, **self._fmt)

    async def _duplicate(
        self, exc: StoreError, in_flight: list[EncodedRow], rows: Sequence[EncodedRow]
    ) -> DuplicateJob:
        """Name the id that broke the (rolled back) insert: already stored, or twice in it."""
        entry = duplicate_entry(exc.cause)
        span = self.policy.granularity
        found = row_of_entry(entry, in_flight, span)
        if found is None:
            return DuplicateJob(self.spec.name, entry, "?")
        row, bounds = found
        key: Any = row.key
        name = self._layout.shard(bounds).name
        stored = await self.get(key)
        return duplicate_of(
            self.spec.name, row, bounds, name, stored=stored, rows=rows, granularity=span
        )

    async def _update_refs(
        self,
        operation: str,
        template: str,
        refs: Sequence[RowRef],
        args: dict[str, Any],
        then: Callable[[Tx, dict[str, list[Any]], int], Awaitable[None]] | None = None,
    ) -> int:
        """One UPDATE per shard (and MAX_IN ids); `then` runs in the same transaction after
        them, given the ids by target and the rows changed."""

        async def attempt(fallback: bool) -> int:
            by_target = self._live.keys_by_target(refs, fallback=fallback)

            async def body(tx: Tx) -> int:
                changed = 0
                for target, keys in by_target.items():
                    for chunk in chunks(keys, MAX_IN):
                        keys_sql = literal_list(self._key, chunk)
                        stmt = template.format(target=target, keys=keys_sql, **self._fmt)
                        changed += await tx.execute(stmt, args)
                if then is not None:
                    await then(tx, by_target, changed)
                return changed

            return int(await self._ex.run(operation, body)) if by_target else 0

        return await self._live.again_if_dropped(attempt)

    async def _take_over(self, work: list[tuple[Shard, list[int]]], args: dict[str, Any]) -> int:
        """Per shard, the epochs' claims in the range `args` gives: locked, skipping the rows
        an open transaction holds, and moved back by id; ClaimsLocked if any stayed locked."""
        ranges = [
            {"target": shard.target, "epochs": literal_list(int_literal, epochs), **self._fmt}
            for shard, epochs in work
        ]

        async def body(tx: Tx) -> int:
            moved = 0
            for where in ranges:
                rows = await tx.fetch_all(sql.TAKE_OVER_LOCK.format(**where), args)
                for chunk in chunks([row[0] for row in rows], MAX_IN):
                    keys = literal_list(self._key, chunk)
                    moved += await tx.execute(sql.TAKE_OVER.format(keys=keys, **where), args)
            return moved

        if not ranges:
            return 0
        moved = int(await self._ex.run("take over", body))
        async with self._ex.transaction("count claims left locked") as tx:
            left = [await tx.fetch_all(sql.TAKE_OVER_LEFT.format(**w), args) for w in ranges]
        locked = sum(int(rows[0][0]) for rows in left)
        if locked:
            epochs = sorted({e for _, shard_epochs in work for e in shard_epochs})
            raise ClaimsLocked("take over", epochs=epochs, moved=moved, locked=locked)
        return moved

    def _shard_name(self, at_ms: int) -> str:
        return self._layout.shard(bounds_of(at_ms, self.policy.granularity)).name

    async def _claim(
        self, shards: list[Shard], args: dict[str, Any], claim: dict[str, Any], tx: Tx
    ) -> list[Row]:
        """Select the due rows over `shards` and claim them, in the caller's transaction."""
        if len(shards) == 1:
            select = sql.CLAIM_SELECT_ONE.format(target=shards[0].target, shard_no=0, **self._fmt)
        else:
            parts = sql.union_all(sql.CLAIM_SELECT_PART, [s.target for s in shards], **self._fmt)
            select = sql.CLAIM_SELECT.format(parts=parts)
        rows = await tx.fetch_all(select, args)
        await self._mark_claimed(tx, shards, rows, claim)
        return rows

    async def _claim_ranked(
        self,
        shards: list[Shard],
        args: dict[str, Any],
        claim: dict[str, Any],
        boost_per_minute: float,
        tx: Tx,
    ) -> list[Row]:
        """The claim of a backlog (repos/ranked.py): read the oldest due rows, lock the best of
        them; again for those other claims took in between. Returned by rank."""
        plan = RankedClaim(limit=args["limit"], boost_per_minute=boost_per_minute)
        rows: list[Row] = []
        more = True
        while more:
            picked = plan.pick(await self._candidates(tx, shards, args, plan))
            by_shard: dict[int, list[Any]] = defaultdict(list)
            for c in picked:
                by_shard[c.shard].append(c.key)
            got = 0
            for no, keys in by_shard.items():
                lock = sql.RANKED_LOCK.format(
                    target=shards[no].target,
                    shard_no=no,
                    keys=literal_list(self._key, keys),
                    **self._fmt,
                )
                locked = await tx.fetch_all(lock, args)
                rows += locked
                got += len(locked)
            more = plan.took(got, len(picked))
        await self._mark_claimed(tx, shards, rows, claim)
        return sorted(rows, key=lambda r: plan.order(r[2], r[5]))

    async def _candidates(
        self, tx: Tx, shards: list[Shard], args: dict[str, Any], plan: RankedClaim
    ) -> list[Candidate]:
        """Step 1 of a ranked claim, unlocked: the best of the oldest due unclaimed rows of each
        shard (up to the window bound, plan.scan_rows() per shard), best first."""
        targets = [s.target for s in shards]
        scan_before_ms, nth = args["before_ms"], plan.nth_offset()
        if nth is not None:
            stmt = sql.union_all(sql.RANKED_NTH_PART, targets)
            found = await tx.fetch_all(stmt, {"before_ms": scan_before_ms, "nth": nth})
            scan_before_ms = plan.scan_before(scan_before_ms, [int(r[0]) for r in found])
        parts = sql.union_all(sql.RANKED_SCAN_PART, targets, **self._fmt)
        stmt = sql.RANKED_SCAN.format(parts=parts, **self._fmt)
        scan = {
            "scan_before_ms": scan_before_ms,
            "scan_rows": plan.scan_rows(),
            "boost_per_ms": plan.boost_per_ms(),
            "pick_rows": plan.pick_rows(),
        }
        return [Candidate(*r) for r in await tx.fetch_all(stmt, scan)]

    async def _mark_claimed(
        self, tx: Tx, shards: list[Shard], rows: list[Row], claim: dict[str, Any]
    ) -> None:
        """CLAIMED under `claim`: the rows selected (their shard_no, the 8th column)."""
        by_shard: dict[int, list[Any]] = defaultdict(list)
        for row in rows:
            by_shard[row[7]].append(row[0])
        for no, keys in by_shard.items():
            update = sql.CLAIM_UPDATE.format(
                target=shards[no].target, keys=literal_list(self._key, keys), **self._fmt
            )
            await tx.execute(update, claim)

    async def _read(
        self, operation: str, stmt: str, args: dict[str, Any], shards: list[Shard]
    ) -> list[StoredRow]:
        async with self._ex.transaction(operation) as tx:
            rows = await tx.fetch_all(stmt, args)
        return [StoredRow.from_row(r, shards[r[13]].name) for r in rows]

    async def _count(self, shards: list[Shard]) -> dict[int, dict[Status | int, int]]:
        stmt = sql.union_all(sql.COUNT_PART, [s.target for s in shards])
        async with self._ex.transaction("count rows") as tx:
            rows = await tx.fetch_all(stmt)
        tallies: dict[int, dict[Status | int, int]] = defaultdict(dict)
        for shard_no, status, n in rows:
            tallies[shard_no][read_status(status)] = int(n)
        return tallies


def _info(shard: Shard, rows: dict[Status | int, int] | None = None) -> ShardInfo:
    return ShardInfo(name=shard.name, bounds=shard.bounds, rows=rows or {})
