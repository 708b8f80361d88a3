"""The dependencies table (repos/dependencies.py) over MySQL/MariaDB, on a small pool of its own
(one connection: the release reads and prunes it one step at a time). Both layouts share it."""

from __future__ import annotations

from collections.abc import Sequence

from repos.dependencies import Edge, JobRef, edge_of, edge_row
from repos.errors import StoreError
from repos.mysql import sql
from repos.mysql.driver import error_code
from repos.mysql.literals import int_literal, tuple_literal
from repos.mysql.store_tables import MysqlStoreTables
from repos.statements import chunks

#: Jobs whose edges one DELETE removes at most (and edges or dependencies one UPDATE names).
REMOVE_BATCH = 1000
#: Duplicate column / duplicate key name: another node upgraded the table first.
_RACED = frozenset({1060, 1061})


class MysqlDependencies(MysqlStoreTables):
    """DependencyStore (repos.dependencies) on one MySQL database: a pool of one."""

    TABLES = (("create dependencies table", sql.CREATE_DEPENDENCIES),)
    POOL_SIZE = 1

    async def open(self) -> None:
        await super().open()
        try:
            await self._upgrade()
        except BaseException:
            await self._ex.close()
            raise

    async def _upgrade(self) -> None:
        """A table of the version before check_at gets it (0: every edge looked at once) and
        its keys; a node racing to do the same first is no error."""
        async with self._ex.transaction("read dependencies columns") as tx:
            [(has,)] = await tx.fetch_all(sql.DEPENDENCIES_HAS_CHECK_AT)
        if has:
            return
        try:
            await self._ex.execute_ddl("upgrade dependencies table", sql.UPGRADE_DEPENDENCIES)
        except StoreError as exc:
            if error_code(exc.cause) not in _RACED:
                raise

    async def due(self, *, before_ms: int, limit: int) -> list[Edge]:
        args = {"before_ms": before_ms, "limit": max(1, limit)}
        async with self._ex.transaction("read due dependencies") as tx:
            rows = await tx.fetch_all(sql.DUE_EDGES, args)
        return [edge_of(r) for r in rows]

    async def postpone(self, edges: Sequence[Edge], *, at_ms: int, their_time: bool = False) -> int:
        template = sql.POSTPONE_EDGES_TO_THEIR_TIME if their_time else sql.POSTPONE_EDGES
        keys = [tuple_literal(edge_row(edge)[:6]) for edge in edges]
        return await self._update_in("postpone dependencies", template, keys, at_ms)

    async def check_dependents(
        self, on: Sequence[JobRef], *, at_ms: int, their_time: bool = False
    ) -> int:
        template = sql.CHECK_DEPENDENTS_AT_THEIR_TIME if their_time else sql.CHECK_DEPENDENTS
        keys = [tuple_literal((ref.entity, str(ref.key), ref.at_ms)) for ref in on]
        return await self._update_in("check dependents", template, keys, at_ms)

    async def _update_in(self, operation: str, template: str, keys: list[str], at_ms: int) -> int:
        changed = 0
        for chunk in chunks(keys, REMOVE_BATCH):
            stmt = template.format(keys=",".join(chunk), at_ms=int_literal(at_ms))
            changed += int(
                await self._ex.run(operation, lambda tx, s=stmt: tx.execute(s), one_statement=True)
            )
        return changed

    async def remove(self, jobs: Sequence[JobRef]) -> int:
        keys = [tuple_literal((job.entity, str(job.key), job.at_ms)) for job in jobs]
        removed = 0
        for chunk in chunks(keys, REMOVE_BATCH):
            stmt = sql.REMOVE_EDGES.format(keys=",".join(chunk))
            removed += int(
                await self._ex.run(
                    "remove dependencies", lambda tx, s=stmt: tx.execute(s), one_statement=True
                )
            )
        return removed

    async def count(self) -> int:
        async with self._ex.transaction("count dependencies") as tx:
            [(n,)] = await tx.fetch_all(sql.COUNT_EDGES)
        return int(n)
