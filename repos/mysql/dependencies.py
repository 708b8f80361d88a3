"""The dependencies table (repos/dependencies.py) over MySQL/MariaDB, on a small pool of its own
(one connection: the release reads and prunes it one step at a time). Both layouts share it."""

from __future__ import annotations

from collections.abc import Sequence

from repos.dependencies import Edge, JobRef, edge_of
from repos.mysql import sql
from repos.mysql.literals import tuple_literal
from repos.mysql.store_tables import MysqlStoreTables
from repos.statements import chunks

#: Jobs whose edges one DELETE removes at most.
REMOVE_BATCH = 1000


class MysqlDependencies(MysqlStoreTables):
    """DependencyStore (repos.dependencies) on one MySQL database: a pool of one."""

    TABLES = (("create dependencies table", sql.CREATE_DEPENDENCIES),)
    POOL_SIZE = 1

    async def waiting(self, *, after: JobRef | None, limit: int) -> list[Edge]:
        entity, key, at_ms = (None, None, None) if after is None else after
        args = {
            "entity": entity,
            "job_id": None if key is None else str(key),
            "job_at": at_ms,
            "limit": max(1, limit),
        }
        async with self._ex.transaction("read waiting jobs") as tx:
            rows = await tx.fetch_all(sql.WAITING_EDGES, args)
        return [edge_of(r) for r in rows]

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
