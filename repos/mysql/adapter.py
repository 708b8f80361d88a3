"""MySQL/MariaDB repository: one class for both layouts and both drivers.

Hot-path shape: a claim is one UNION ALL select (FOR UPDATE SKIP LOCKED) over the shards in the
window plus one UPDATE per shard, in one transaction; acks are one UPDATE per shard listing the
ids. ``executemany`` would send an UPDATE per row, so multi-row statements are built here.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

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
    UnknownStatus,
    read_status,
)
from repos.entity import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PAYLOAD_BYTES_CEILING,
    EncodedRow,
    EntitySpec,
)
from repos.mysql import sql
from repos.mysql.driver import DUPLICATE_KEY, Executor, Row, Tx, error_code
from repos.mysql.layouts import Layout, MultiTable, Partitioned, Shard
from repos.mysql.literals import key_literal, literal, literal_list
from repos.shards import ShardBounds, bounds_of, bucket_of, group_by_shard, shards_between
from repos.statements import check_release, chunks, chunks_within, insert_state
from repos.urls import Driver, LayoutName, MysqlUrl

TEntity = TypeVar("TEntity")
TKey = TypeVar("TKey", bound=int | str)
T = TypeVar("T")
logger = logging.getLogger(__name__)

#: How long a read of the live shards is trusted before claims look again.
SHARD_CACHE_S = 1.0
#: Errors naming a table or partition that is not there: a shard dropped meanwhile.
SHARD_GONE = frozenset({1146, 1735})
#: Cap on the ids listed in one `IN (...)` (keeps statements well under max_allowed_packet).
MAX_IN = 5000
MAX_ERROR_CHARS = 4000
#: Payload bytes in one INSERT at most: rendered as hex they double, and the statement must
#: stay under the server's max_allowed_packet (16 MiB by default; lower ones lower this too).
MAX_INSERT_PAYLOAD_BYTES = 4 * 1024 * 1024
#: Bytes of an INSERT besides its payload literals: the statement's own text, and per row the
#: other values (a str id of 191 characters alone is up to 1,540 bytes as a hex literal).
STATEMENT_OVERHEAD = 64 * 1024
ROW_OVERHEAD = 2 * 1024
_DUPLICATE = re.compile(r"Duplicate entry '(.*)' for key")


class MysqlRepository(Generic[TEntity, TKey]):
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
    ) -> None:
        self.spec: EntitySpec[TEntity, TKey] = spec
        self.policy = policy
        self.batch_size = batch_size
        self._configured_payload_bytes = self.max_payload_bytes = max_payload_bytes
        self._insert_payload_bytes = MAX_INSERT_PAYLOAD_BYTES  # both lowered by open()
        self._ex = Executor(
            url,
            driver=driver,
            pool_size=pool_size,
            pool_recycle_s=pool_recycle_s,
            connect_timeout_s=connect_timeout_s,
            create_missing=create_missing,
        )
        self._fmt = {"id": spec.id_field, "at": spec.time_field}
        self._key = key_literal(spec.key_type)
        columns = {**self._fmt, "id_type": sql.ID_TYPE[spec.key_type]}
        kinds: dict[str, type[MultiTable] | type[Partitioned]] = {
            "multi-table": MultiTable,
            "partitioned": Partitioned,
        }
        self._layout: Layout = kinds[layout](spec.table_prefix, policy.granularity, columns)
        self._live: dict[int, Shard] = {}
        self._live_read_at = float("-inf")

    def __repr__(self) -> str:
        return f"<MysqlRepository {self.spec.name} {self._ex.url.address} shards={len(self._live)}>"

    async def open(self) -> None:
        await self._ex.open()
        await self._read_server_limits()
        await self._refresh()

    async def close(self) -> None:
        await self._ex.close()

    def checked_out(self) -> int:
        return self._ex.checked_out()

    @property
    def ignored_names(self) -> frozenset[str]:
        return self._layout.ignored

    async def ensure_shards(self, start_ms: int, end_ms: int) -> list[ShardInfo]:
        wanted = shards_between(start_ms, end_ms, self.policy.granularity)
        live = await self._refresh()
        missing = [b for b in wanted if not self._layout.covers(live, b)]
        if missing:
            await self._layout.create(self._ex, missing, list(live.values()))
            live = await self._refresh()
        return [_info(live[b.start_ms]) for b in wanted if b.start_ms in live]

    async def insert(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: str | None = None,
    ) -> int:
        return await self.insert_rows(
            self._encode(entities, now_ms),
            now_ms=now_ms,
            on_duplicate=on_duplicate,
            claimed_by=claimed_by,
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
        groups = await self._insert_groups(rows)
        status, attempts, by, at = insert_state(claimed_by, now_ms)
        # The same for every row of the call: the claim columns, then the layout's extra ones.
        state = f",{attempts},{literal(by or '')},{at or 0}"
        insert = partial(self._layout.inserts[on_duplicate].format, **self._fmt)
        in_flight: list[EncodedRow] = []  # the statement's rows: a duplicate is among them

        async def body(tx: Tx) -> int:
            stored = 0
            for (target, bounds), group in groups.items():
                tail = state + "".join(f",{v}" for v in self._layout.extra_values(bounds)) + ")"
                for chunk in chunks_within(
                    group, self.batch_size, self._insert_payload_bytes, _payload_size
                ):
                    in_flight[:] = chunk
                    values = ",".join(
                        f"({self._key(r.key)},{r.at_ms},X'{r.payload.hex()}',{status},{r.at_ms}"
                        + tail
                        for r in chunk
                    )
                    stored += await tx.execute(insert(target=target, rows=values))
            return stored

        try:
            return int(await self._ex.run("insert", body))
        except StoreError as exc:
            if error_code(exc.cause) == DUPLICATE_KEY:
                raise await self._duplicate(exc, in_flight, rows) from exc
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
        shards = self._window(await self._shards(), since_ms, before_ms)
        if not shards or limit <= 0:
            return []
        parts = sql.union_all(sql.CLAIM_SELECT_PART, [s.target for s in shards], **self._fmt)
        select = sql.CLAIM_SELECT.format(parts=parts)
        args = {
            "payload_before_ms": before_ms if payload_before_ms is None else payload_before_ms,
            "before_ms": before_ms,
            "limit": limit,
        }
        claim = {"node_id": node_id, "now_ms": now_ms}

        async def body(tx: Tx) -> list[Row]:
            rows = await tx.fetch_all(select, args)
            by_shard: dict[int, list[Any]] = defaultdict(list)
            for row in rows:
                by_shard[row[5]].append(row[0])
            for no, keys in by_shard.items():
                update = sql.CLAIM_UPDATE.format(
                    target=shards[no].target, keys=literal_list(self._key, keys), **self._fmt
                )
                await tx.execute(update, claim)
            return rows

        rows = await self._ex.run("claim", body)
        return [ClaimedJob.from_claim(r) for r in rows]

    async def read_payloads(self, node_id: str, refs: Sequence[RowRef]) -> dict[RowRef, bytes]:
        async def attempt(fallback: bool) -> dict[RowRef, bytes]:
            found: dict[RowRef, bytes] = {}
            by_target = self._keys_by_target(refs, fallback=fallback)
            if not by_target:
                return found
            async with self._ex.transaction("read payloads") as tx:
                for target, keys in by_target.items():
                    for chunk in chunks(keys, MAX_IN):
                        stmt = sql.READ_PAYLOADS.format(
                            target=target, keys=literal_list(self._key, chunk), **self._fmt
                        )
                        rows = await tx.fetch_all(stmt, {"node_id": node_id})
                        for key, at_ms, payload in rows:
                            found[RowRef(key, at_ms)] = payload
            return found

        found = await self._again_if_shard_dropped(attempt)
        # Only the rows named: a partitioned shard's oldest partition may hold others too.
        return {ref: found[ref] for ref in refs if ref in found}

    async def mark_done(self, node_id: str, refs: Sequence[RowRef], *, fired_at_ms: int) -> int:
        args = {"fired_at_ms": fired_at_ms, "node_id": node_id}
        return await self._update_refs("mark done", sql.MARK_DONE, refs, args)

    async def mark_failed(self, node_id: str, failures: Sequence[Failure], *, now_ms: int) -> int:
        async def body(tx: Tx, fallback: bool) -> int:
            changed = 0
            for f in failures:
                target = self._target_of(f.ref.at_ms, fallback=fallback)
                if target is None:
                    continue
                args = {
                    "status": f.status if f.retry_at_ms is None else Status.PENDING,
                    "retry_at_ms": f.retry_at_ms,
                    "error": f.error[:MAX_ERROR_CHARS],
                    "now_ms": now_ms,
                    "node_id": node_id,
                    "key": f.ref.key,
                }
                changed += await tx.execute(
                    sql.MARK_FAILED.format(target=target, **self._fmt), args
                )
            return changed

        if not failures:
            return 0
        return await self._again_if_shard_dropped(
            lambda fallback: self._ex.run("mark failed", lambda tx: body(tx, fallback))
        )

    async def release(
        self,
        node_id: str | None,
        refs: Sequence[RowRef] | None = None,
        *,
        claimed_at_ms: int | None = None,
    ) -> int:
        check_release(node_id, refs, claimed_at_ms)
        args = {"node_id": node_id, "claimed_at_ms": claimed_at_ms}
        if refs is not None:
            return await self._update_refs("release", sql.RELEASE_KEYS, refs, args)
        shards = list((await self._refresh()).values())

        async def body(tx: Tx) -> int:
            statements = (sql.RELEASE.format(target=s.target) for s in shards)
            return sum([await tx.execute(stmt, args) for stmt in statements])

        return int(await self._ex.run("release", body))

    async def cancel(self, keys: Sequence[TKey]) -> int:
        keys = self.spec.check_keys(keys)
        shards = list((await self._refresh()).values())

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

    async def get(self, key: TKey) -> list[StoredRow]:
        shards = list((await self._refresh()).values())
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
        shards = self._window(await self._shards(), start_ms, end_ms)
        if not shards or limit <= 0:
            return []
        parts = sql.union_all(sql.PAGE_PART, [s.target for s in shards], **self._fmt)
        args = {
            "start_ms": start_ms,
            "end_ms": end_ms,
            "status": None if status is None else int(status),
            "after_at_ms": None if after is None else after.at_ms,
            "after_key": None if after is None else after.key,
            "limit": limit,
        }
        return await self._read("page", sql.PAGE.format(parts=parts, **self._fmt), args, shards)

    async def list_shards(self, *, counts: bool = False) -> list[ShardInfo]:
        shards = list((await self._refresh()).values())
        tallies = await self._count(shards) if counts and shards else {}
        return [_info(s, tallies.get(i, {})) for i, s in enumerate(shards)]

    async def find_unknown_status(self, *, limit: int) -> list[UnknownStatus]:
        shards = list((await self._refresh()).values())
        if not shards:
            return []
        stmt = sql.union_all(sql.UNKNOWN_STATUS_PART, [s.target for s in shards], **self._fmt)
        first, last = STATUS_RANGE
        args = {"first": first, "last": last, "limit": max(1, limit)}  # a row at least: the count
        async with self._ex.transaction("find unknown status") as tx:
            rows = await tx.fetch_all(stmt, args)
        by_shard: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            by_shard[row[0]].append(row[1:])
        return [UnknownStatus.of(shards[i].name, by_shard[i], limit) for i in sorted(by_shard)]

    async def drop_shards_before(self, cutoff_ms: int) -> list[ShardInfo]:
        live = list((await self._refresh()).values())
        expired = [s for s in live if s.bounds.end_ms <= cutoff_ms]
        tallies = await self._count(expired) if expired else {}
        dropped = []
        for i, shard in enumerate(expired):
            await self._layout.drop(self._ex, shard, live)
            live.remove(shard)
            dropped.append(_info(shard, tallies.get(i, {})))
        await self._refresh()
        return dropped

    # -- internals ------------------------------------------------------------------------

    def _encode(self, entities: Sequence[TEntity], now_ms: int) -> list[EncodedRow]:
        return self.spec.encode_many(
            entities,
            now_ms=now_ms,
            retention_ms=self.policy.retention_ms,
            max_payload_bytes=self.max_payload_bytes,
        )

    async def _read_server_limits(self) -> None:
        """Lower the payload caps to what this server's max_allowed_packet lets through."""
        async with self._ex.transaction("read max_allowed_packet") as tx:
            [(packet,)] = await tx.fetch_all(sql.MAX_ALLOWED_PACKET)
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

    async def _refresh(self) -> dict[int, Shard]:
        shards = await self._layout.discover(self._ex)
        self._live = {s.bounds.start_ms: s for s in shards}
        self._live_read_at = time.monotonic()
        return self._live

    async def _shards(self) -> list[Shard]:
        """Live shards, re-read at most every SHARD_CACHE_S (another node may have made some)."""
        if time.monotonic() - self._live_read_at > SHARD_CACHE_S:
            await self._refresh()
        return list(self._live.values())

    def _window(self, shards: list[Shard], start_ms: int, end_ms: int) -> list[Shard]:
        # A partitioned table keeps rows older than its oldest partition in that partition, so
        # that one answers for every earlier time too (else such rows would fire late).
        oldest = shards[0] if shards and isinstance(self._layout, Partitioned) else None
        return [
            s
            for s in shards
            if s.bounds.end_ms > start_ms and (s.bounds.start_ms < end_ms or s is oldest)
        ]

    def _target_of(self, at_ms: int, *, fallback: bool = True) -> str | None:
        """The statement target of the shard holding at_ms; for a shard not in the live list,
        the layout's fallback (partitioned: the whole table) unless `fallback` is off."""
        shard = self._live.get(bucket_of(at_ms, self.policy.granularity))
        if shard is not None:
            return shard.target
        return self._layout.fallback_target(at_ms) if fallback else None

    async def _insert_groups(
        self, rows: Sequence[EncodedRow]
    ) -> dict[tuple[str, ShardBounds], list[EncodedRow]]:
        """Rows grouped by the statement target they go to, making missing shards first."""
        by_shard = group_by_shard(rows, _at_ms, self.policy.granularity)
        wanted = list(by_shard)
        if not all(self._layout.covers(self._live, bounds) for bounds in wanted):
            await self.ensure_shards(wanted[0].start_ms, wanted[-1].end_ms)
        return {
            (self._layout.insert_target(self._live, bounds), bounds): group
            for bounds, group in by_shard.items()
        }

    async def _duplicate(
        self, exc: StoreError, in_flight: list[EncodedRow], rows: Sequence[EncodedRow]
    ) -> DuplicateJob:
        """Name the id that broke the (rolled back) insert: already stored, or twice in it."""
        found = _DUPLICATE.search(str(exc.cause))
        entry = found.group(1) if found else "?"
        for row in in_flight:
            bounds = bounds_of(row.at_ms, self.policy.granularity)
            # The entry is the primary key: `id` (multi-table) or `id-shard_at` (partitioned).
            if entry in (str(row.key), f"{row.key}-{bounds.start_ms}"):
                return await self._duplicate_of(row.key, bounds, rows)
        return DuplicateJob(self.spec.name, entry, "?")

    async def _duplicate_of(
        self, key: Any, bounds: ShardBounds, rows: Sequence[EncodedRow]
    ) -> DuplicateJob:
        shard = self._layout.shard(bounds).name
        span = self.policy.granularity
        for stored in await self.get(key):
            if bucket_of(stored.at_ms, span) == bounds.start_ms:
                return DuplicateJob(
                    self.spec.name,
                    key,
                    shard,
                    status=getattr(stored.status, "name", str(stored.status)),
                )
        # Not stored: the earlier copy was this call's own, rolled back with it.
        twice = sum(1 for r in rows if r.key == key and bucket_of(r.at_ms, span) == bounds.start_ms)
        return DuplicateJob(self.spec.name, key, shard, in_batch=twice > 1)

    def _keys_by_target(
        self, refs: Sequence[RowRef], *, fallback: bool = True
    ) -> dict[str, list[Any]]:
        """The refs' ids by the statement target of their shard (refs of no shard left out)."""
        by_target: dict[str, list[Any]] = defaultdict(list)
        for ref in refs:
            target = self._target_of(ref.at_ms, fallback=fallback)
            if target is not None:
                by_target[target].append(ref.key)
        return by_target

    async def _update_refs(
        self, operation: str, template: str, refs: Sequence[RowRef], args: dict[str, Any]
    ) -> int:
        async def attempt(fallback: bool) -> int:
            by_target = self._keys_by_target(refs, fallback=fallback)

            async def body(tx: Tx) -> int:
                changed = 0
                for target, keys in by_target.items():
                    for chunk in chunks(keys, MAX_IN):
                        keys_sql = literal_list(self._key, chunk)
                        stmt = template.format(target=target, keys=keys_sql, **self._fmt)
                        changed += await tx.execute(stmt, args)
                return changed

            return int(await self._ex.run(operation, body)) if by_target else 0

        return await self._again_if_shard_dropped(attempt)

    async def _again_if_shard_dropped(self, attempt: Callable[[bool], Awaitable[T]]) -> T:
        """Run `attempt`; if a shard it named was dropped meanwhile (retention, maybe on
        another node, inside SHARD_CACHE_S), read the live shards and run it once more, this
        time leaving out the rows of shards no longer live: they went with their shard. (Not
        the partitioned layout's fallback to the whole table, where the same id may be
        another shard's row.)"""
        try:
            return await attempt(True)
        except StoreError as exc:
            if error_code(exc.cause) not in SHARD_GONE:
                raise
        await self._refresh()
        return await attempt(False)

    async def _read(
        self, operation: str, stmt: str, args: dict[str, Any], shards: list[Shard]
    ) -> list[StoredRow]:
        async with self._ex.transaction(operation) as tx:
            rows = await tx.fetch_all(stmt, args)
        return [StoredRow.from_row(r, shards[r[10]].name) for r in rows]

    async def _count(self, shards: list[Shard]) -> dict[int, dict[Status | int, int]]:
        stmt = sql.union_all(sql.COUNT_PART, [s.target for s in shards])
        async with self._ex.transaction("count rows") as tx:
            rows = await tx.fetch_all(stmt)
        tallies: dict[int, dict[Status | int, int]] = defaultdict(dict)
        for shard_no, status, n in rows:
            tallies[shard_no][read_status(status)] = int(n)
        return tallies


def payload_limits(max_allowed_packet: int, batch_size: int) -> tuple[int, int]:
    """(largest payload one row may carry, payload bytes one INSERT may carry) on a server that
    takes statements of up to `max_allowed_packet` bytes, with payloads as hex literals."""
    room = max_allowed_packet - STATEMENT_OVERHEAD
    row_bytes = min(PAYLOAD_BYTES_CEILING, (room - ROW_OVERHEAD) // 2)
    insert_bytes = min(MAX_INSERT_PAYLOAD_BYTES, (room - batch_size * ROW_OVERHEAD) // 2)
    return max(row_bytes, 1), max(insert_bytes, 1)


def _info(shard: Shard, rows: dict[Status | int, int] | None = None) -> ShardInfo:
    return ShardInfo(name=shard.name, bounds=shard.bounds, rows=rows or {})


def _at_ms(row: EncodedRow) -> int:
    return row.at_ms


def _payload_size(row: EncodedRow) -> int:
    return len(row.payload)
