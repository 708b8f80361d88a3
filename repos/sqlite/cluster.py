"""Membership over the embedded SQLite store: the nodes and leases tables in the same file as
the shards.

One file on one machine serves one node: join refuses a second live node of any id
(SingleNodeStore). Like the repository, every statement runs on one thread that owns the
connection; a join is one write transaction (``BEGIN IMMEDIATE``), so two processes joining at
once take turns and the second sees the first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from repos.cluster import (
    Joined,
    NodeIdInUse,
    NodeInfo,
    NodeState,
    Revocation,
    Roster,
    SingleNodeStore,
    check_settable,
)
from repos.sqlite import sql
from repos.sqlite.connection import write
from repos.sqlite.store_tables import SqliteStoreTables


class SqliteMembership(SqliteStoreTables):
    """Membership (repos.cluster) on one SQLite file."""

    TABLES = (
        sql.CREATE_NODES,
        sql.CREATE_NODES_STATE_INDEX,
        sql.CREATE_LEASES,
        sql.CREATE_REVOCATIONS,
    )
    THREAD = "nodes"

    async def join(
        self, node_id: str, *, host: str, pid: int, version: str, node_timeout_ms: int
    ) -> Joined:
        names = {"node_id": node_id, "node_timeout_ms": node_timeout_ms}

        def work(db: sqlite3.Connection) -> Joined:
            with write(db):
                live = db.execute(sql.LIVE_NODE, names).fetchone()
                if live is not None:
                    _refuse(node_id, live, node_timeout_ms)
                row = {**names, "host": host, "pid": pid, "version": version}
                epoch = db.execute(sql.INSERT_NODE, row).lastrowid
                assert epoch is not None
                earlier = db.execute(sql.EARLIER_EPOCHS, {**names, "epoch": epoch}).fetchall()
            return Joined(epoch=epoch, earlier=tuple(map(NodeInfo.from_row, earlier)))

        return await self._run("join", work)

    async def heartbeat(self, epoch: int, holds_from_ms: int) -> bool:
        args = {"epoch": epoch, "holds_from_ms": holds_from_ms}
        return await self._update("heartbeat", sql.HEARTBEAT, args)

    async def declare_dead(self, epoch: int, node_timeout_ms: int) -> bool:
        args = {"epoch": epoch, "node_timeout_ms": node_timeout_ms}
        return await self._update("declare dead", sql.DECLARE_DEAD, args)

    async def declare_gone(self, epoch: int) -> NodeInfo | None:
        args = {"epoch": epoch}

        def work(db: sqlite3.Connection) -> NodeInfo | None:
            with write(db):
                if not db.execute(sql.DECLARE_GONE, args).rowcount:
                    return None
                return NodeInfo.from_row(db.execute(sql.NODE_ROW, args).fetchone())

        return await self._run("declare gone", work)

    async def set_state(self, epoch: int, state: NodeState) -> bool:
        check_settable(state)
        args = {"epoch": epoch, "state": int(state)}
        return await self._update("set node state", sql.SET_STATE, args)

    async def list_nodes(self, *, finished: int = 20) -> Roster:
        def work(db: sqlite3.Connection) -> Roster:
            [(now_ms,)] = db.execute(sql.DB_NOW).fetchall()
            rows = db.execute(sql.LIST_NODES, {"finished": max(0, finished)}).fetchall()
            return Roster(now_ms=now_ms, nodes=tuple(map(NodeInfo.from_row, rows)))

        return await self._run("list nodes", work)

    async def take_revocations(self, epoch: int) -> list[Revocation]:
        def work(db: sqlite3.Connection) -> list[Revocation]:
            with write(db):  # one write transaction: nothing posted between read and delete
                rows = db.execute(sql.REVOCATIONS, {"epoch": epoch}).fetchall()
                if rows:
                    db.execute(sql.FORGET_REVOCATIONS, {"epoch": epoch})
            return [Revocation(*row) for row in rows]

        return await self._run("take revocations", work)

    async def prune_nodes(self, older_than_ms: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            with write(db):
                return db.execute(sql.PRUNE_NODES, {"older_than_ms": older_than_ms}).rowcount

        return await self._run("prune nodes", work)

    async def prune_revocations(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            with write(db):
                return db.execute(sql.PRUNE_REVOCATIONS).rowcount

        return await self._run("prune revocations", work)

    async def acquire_lease(self, name: str, epoch: int, ttl_ms: int) -> bool:
        args = {"name": name, "epoch": epoch, "ttl_ms": ttl_ms}

        def work(db: sqlite3.Connection) -> bool:
            with write(db):
                if db.execute(sql.RUNNING_EPOCH, args).fetchone() is None:
                    return False
                if db.execute(sql.TAKE_LEASE, args).rowcount:
                    return True
                return db.execute(sql.NEW_LEASE, args).rowcount == 1

        return await self._run("acquire lease", work)

    async def release_lease(self, name: str, epoch: int) -> None:
        await self._update("release lease", sql.RELEASE_LEASE, {"name": name, "epoch": epoch})

    async def db_now(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            [(now_ms,)] = db.execute(sql.DB_NOW).fetchall()
            return int(now_ms)

        return await self._run("read the database's clock", work)


def _refuse(node_id: str, live: Sequence[Any], node_timeout_ms: int) -> None:
    holder = NodeInfo.from_row(live)
    found = holder.as_live(int(live[-1]))
    if holder.node_id == node_id:
        raise NodeIdInUse(node_id, found, node_timeout_ms=node_timeout_ms)
    raise SingleNodeStore(node_id, found, node_timeout_ms=node_timeout_ms)
