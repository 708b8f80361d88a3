"""Job control (repos/control.py) on MySQL/MariaDB, both layouts: a part of MysqlRepository,
kept in a module of its own because the engine never calls it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from repos.base import DuplicateJob, RowRef, ShardInfo, ShardPolicy, Status, StoredRow, StoreError
from repos.control import JobQuery, Transition, check_move, shards_in_order
from repos.entity import EntitySpec
from repos.mysql import sql
from repos.mysql.driver import DUPLICATE_KEY, Executor, Tx, error_code
from repos.mysql.layouts import Layout, Partitioned
from repos.mysql.literals import KeyLiteral, int_literal, literal_list
from repos.mysql.live_shards import LiveShards
from repos.shards import bounds_of
from repos.statements import chunks

#: Cap on the ids listed in one `IN (...)`, as the adapter's.
MAX_IN = 5000


class MysqlJobControl:
    """find, transition and move over the repository's shards."""

    if TYPE_CHECKING:
        spec: EntitySpec[Any, Any]
        policy: ShardPolicy
        _ex: Executor
        _live: LiveShards
        _layout: Layout
        _fmt: dict[str, str]
        _key: KeyLiteral
        _dependencies_made: bool

        async def ensure_shards(self, start_ms: int, end_ms: int) -> list[ShardInfo]: ...

    _revocations_made = False

    async def find(
        self, query: JobQuery, *, after: RowRef | None = None, limit: int = 100
    ) -> list[StoredRow]:
        statuses = sorted(int(s) for s in query.statuses)
        args = {
            "from_ms": query.from_ms,
            "before_ms": query.before_ms,
            "any_status": not statuses,
            "category": query.category,
            "key_from": query.key_from,
            "key_before": query.key_before,
            "after_at_ms": None if after is None else after.at_ms,
            "after_key": None if after is None else after.key,
        }
        listed = literal_list(int_literal, statuses) or "NULL"
        template = sql.FIND_DESC if query.descending else sql.FIND
        shards = await self._live.refresh()
        rows: list[StoredRow] = []
        async with self._ex.transaction("find") as tx:
            for shard in shards_in_order(((s.bounds, s) for s in shards), query, after):
                stmt = template.format(target=shard.target, statuses=listed, **self._fmt)
                found = await tx.fetch_all(stmt, {**args, "limit": limit - len(rows)})
                rows += [StoredRow.from_row(r, shard.name) for r in found]
                if len(rows) >= limit:
                    break
        return rows

    async def transition(self, changes: Sequence[Transition]) -> int:
        if not changes:
            return 0
        if any(c.seen_status == Status.CLAIMED for c in changes):
            await self._make_revocations()
        groups: dict[tuple[Any, ...], list[RowRef]] = defaultdict(list)
        for c in changes:
            key = (c.status, c.epoch, c.due_ms, c.release, c.seen_status, c.seen_epoch)
            groups[key].append(c.ref)

        async def attempt(fallback: bool) -> int:
            async def body(tx: Tx) -> int:
                changed = 0
                for (status, epoch, due_ms, release, seen, seen_epoch), refs in groups.items():
                    args = {
                        "status": int(status),
                        "epoch": epoch,
                        "due_ms": due_ms,
                        "release": release,
                        "seen_status": seen,
                        "seen_epoch": seen_epoch,
                    }
                    changed += await self._transition(tx, refs, args, fallback)
                    if seen == Status.CLAIMED:
                        await self._revoke(tx, seen_epoch, refs)
                return changed

            return int(await self._ex.run("transition", body))

        return await self._live.again_if_dropped(attempt)

    async def move(
        self, ref: RowRef, *, seen_status: int, seen_epoch: int, at_ms: int, due_ms: int
    ) -> bool:
        check_move(seen_status)
        span = self.policy.granularity
        source_bounds, target_bounds = bounds_of(ref.at_ms, span), bounds_of(at_ms, span)
        await self.ensure_shards(target_bounds.start_ms, target_bounds.end_ms)
        if not self._dependencies_made:  # the dependents' edges move with the row
            await self._ex.execute_ddl("create dependencies table", sql.CREATE_DEPENDENCIES)
            self._dependencies_made = True
        dependents = {
            "entity": self.spec.name,
            "on_id": str(ref.key),
            "seen_at_ms": ref.at_ms,
            "at_ms": at_ms,
        }
        args: dict[str, Any] = {
            "key": ref.key,
            "status": seen_status,
            "epoch": seen_epoch,
            "at_ms": at_ms,
            "due_ms": due_ms,
        }
        source = self._live.target_of(ref.at_ms, fallback=False)
        target = self._live.target_of(at_ms, fallback=False)
        if source is None or target is None:
            return False
        names = {"source": source, "target": target, **self._fmt}
        if isinstance(self._layout, Partitioned):
            names["table"] = self._layout.table
            args.update(shard_at=target_bounds.start_ms, seen_shard_at=source_bounds.start_ms)
            statements = [sql.MOVE_PARTITIONED]
        elif source_bounds == target_bounds:
            statements = [sql.MOVE_IN_PLACE]
        else:
            statements = [sql.MOVE_COPY, sql.MOVE_DELETE]

        async def body(tx: Tx) -> bool:
            for stmt in statements:
                if await tx.execute(stmt.format(**names), args) == 0:
                    return False  # the first statement found the row moved on: nothing done
            await tx.execute(sql.MOVE_DEPENDENTS, dependents)
            return True

        try:
            return bool(await self._ex.run("move", body))
        except StoreError as exc:
            if error_code(exc.cause) != DUPLICATE_KEY:
                raise
            name = self._layout.shard(target_bounds).name
            raise DuplicateJob(self.spec.name, ref.key, name) from exc

    async def _transition(
        self, tx: Tx, refs: list[RowRef], args: dict[str, Any], fallback: bool
    ) -> int:
        changed = 0
        for target, keys in self._live.keys_by_target(refs, fallback=fallback).items():
            for chunk in chunks(keys, MAX_IN):
                keys_sql = literal_list(self._key, chunk)
                stmt = sql.TRANSITION.format(target=target, keys=keys_sql, **self._fmt)
                changed += await tx.execute(stmt, args)
        return changed

    async def _revoke(self, tx: Tx, epoch: int, refs: list[RowRef]) -> None:
        for ref in refs:
            row = {"epoch": epoch, "entity": self.spec.name, "job_id": str(ref.key)}
            await tx.execute(sql.REVOKE, {**row, "at_ms": ref.at_ms})

    async def _make_revocations(self) -> None:
        if not self._revocations_made:
            await self._ex.execute_ddl("create revocations table", sql.CREATE_REVOCATIONS)
            self._revocations_made = True
