"""Job control (repos/control.py) on SQLite: a part of SqliteRepository, kept in a module of
its own because the engine never calls it."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from repos.base import DuplicateJob, RowRef, ShardPolicy, Status, StoredRow, read_status
from repos.control import JobQuery, Transition, check_move, shards_in_order
from repos.entity import EntitySpec
from repos.shards import ShardBounds, bounds_of
from repos.sqlite import sql
from repos.sqlite.connection import write
from repos.sqlite.sql import MAX_VARIABLES, marks
from repos.statements import chunks

T = TypeVar("T")
#: Values ahead of the ids in TRANSITION.
_LEAD = 6


class SqliteJobControl:
    """find, transition and move over the repository's shard tables."""

    if TYPE_CHECKING:
        spec: EntitySpec[Any, Any]
        policy: ShardPolicy

        async def _run(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T: ...
        def _q(self, template: str, table: str, **extra: str) -> str: ...
        def _table(self, bounds: ShardBounds) -> str: ...
        def _tables(self, db: sqlite3.Connection) -> dict[ShardBounds, str]: ...
        def _create(self, db: sqlite3.Connection, wanted: Sequence[ShardBounds]) -> None: ...

    async def find(
        self, query: JobQuery, *, after: RowRef | None = None, limit: int = 100
    ) -> list[StoredRow]:
        args = _find_args(query, after)
        template = sql.FIND_DESC if query.descending else sql.FIND

        def work(db: sqlite3.Connection) -> list[StoredRow]:
            rows: list[StoredRow] = []
            for table in shards_in_order(self._tables(db).items(), query, after):
                found = db.execute(self._q(template, table), {**args, "limit": limit - len(rows)})
                rows += [StoredRow.from_row(r, table) for r in found]
                if len(rows) >= limit:
                    break
            return rows

        return await self._run("find", work) if limit > 0 else []

    async def transition(self, changes: Sequence[Transition]) -> int:
        groups: dict[tuple[Any, ...], list[RowRef]] = defaultdict(list)
        for c in changes:
            table = self._table(bounds_of(c.ref.at_ms, self.policy.granularity))
            lead = (int(c.status), c.epoch, c.due_ms, c.release, c.seen_status, c.seen_epoch)
            groups[(table, *lead)].append(c.ref)
        name = self.spec.name

        def work(db: sqlite3.Connection) -> int:
            changed = 0
            with write(db):
                live = set(self._tables(db).values())
                for (table, *lead), refs in groups.items():
                    if table not in live:
                        continue
                    for chunk in chunks([r.key for r in refs], MAX_VARIABLES - _LEAD):
                        stmt = self._q(sql.TRANSITION, table, keys=marks(len(chunk)))
                        changed += db.execute(stmt, (*lead, *chunk)).rowcount
                    if lead[4] == Status.CLAIMED:
                        _revoke(db, name, lead[5], refs)
            return changed

        return await self._run("transition", work) if changes else 0

    async def move(
        self, ref: RowRef, *, seen_status: int, seen_epoch: int, at_ms: int, due_ms: int
    ) -> bool:
        check_move(seen_status)
        span = self.policy.granularity
        source = self._table(bounds_of(ref.at_ms, span))
        target_bounds = bounds_of(at_ms, span)
        target = self._table(target_bounds)
        args = {"key": ref.key, "status": seen_status, "epoch": seen_epoch}
        moved = {**args, "at_ms": at_ms, "due_ms": due_ms}
        dependents = {"entity": self.spec.name, "on_id": str(ref.key), "seen_at_ms": ref.at_ms}

        def work(db: sqlite3.Connection) -> bool:
            with write(db):
                if source not in self._tables(db).values():
                    return False
                if source == target:
                    if db.execute(self._q(sql.MOVE_IN_PLACE, source), moved).rowcount == 0:
                        return False
                    db.execute(sql.MOVE_DEPENDENTS, {**dependents, "at_ms": at_ms})
                    return True
                if db.execute(self._q(sql.STILL_SEEN, source), args).fetchone() is None:
                    return False
                self._create(db, [target_bounds])
                there = db.execute(self._q(sql.ID_STORED, target), {"key": ref.key}).fetchone()
                if there is not None:
                    status = read_status(there[0])
                    raise DuplicateJob(
                        self.spec.name, ref.key, target, status=getattr(status, "name", str(status))
                    )
                db.execute(self._q(sql.MOVE_COPY, source, target=target), moved)
                db.execute(self._q(sql.MOVE_DELETE, source), args)
                db.execute(sql.MOVE_DEPENDENTS, {**dependents, "at_ms": at_ms})
                return True

        return await self._run("move", work)


def _find_args(query: JobQuery, after: RowRef | None) -> dict[str, Any]:
    statuses = sorted(int(s) for s in query.statuses)
    return {
        "from_ms": query.from_ms,
        "before_ms": query.before_ms,
        "statuses": orjson.dumps(statuses).decode() if statuses else None,
        "category": query.category,
        "key_from": query.key_from,
        "key_before": query.key_before,
        "after_at_ms": None if after is None else after.at_ms,
        "after_key": None if after is None else after.key,
    }


def _revoke(db: sqlite3.Connection, entity: str, epoch: int, refs: Sequence[RowRef]) -> None:
    for ref in refs:
        row = {"epoch": epoch, "entity": entity, "job_id": str(ref.key), "at_ms": ref.at_ms}
        db.execute(sql.REVOKE, row)
