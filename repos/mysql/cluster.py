"""Membership over MySQL/MariaDB: the nodes and leases tables, on a small pool of their own.

Both layouts and both drivers share them. Every time in it is the server's clock, read inside the
statements (repos/mysql/sql.py), so nodes whose clocks disagree still agree on who is dead.

A write of one statement runs under autocommit (``one_statement``), never between BEGIN and
COMMIT: a node frozen or cut off after its renewal's UPDATE would otherwise leave its nodes row
locked, in a transaction the server keeps open until it notices the node is gone (for a silent
partition, hours), and no other node could declare it dead or take its claims over meanwhile.
"""

from __future__ import annotations

from repos.cluster import (
    Joined,
    NodeIdInUse,
    NodeInfo,
    NodeState,
    Revocation,
    Roster,
    check_settable,
)
from repos.errors import StoreError, UnsafeStore
from repos.events import NO_EVENTS, StoreEvents
from repos.mysql import sql
from repos.mysql.driver import DUPLICATE_KEY, Tx, error_code
from repos.mysql.identity import guard_server, writers_elsewhere
from repos.mysql.store_tables import MysqlStoreTables
from repos.server_guard import multi_writer_refusal
from repos.urls import Driver, MysqlUrl

#: Duplicate column: another process added it first.
DUPLICATE_COLUMN = 1060
#: Joins retried when the live node in the way turned out not to be live after all (its
#: heartbeat aged past the timeout between the insert and the look at it).
JOIN_ATTEMPTS = 3


class MysqlMembership(MysqlStoreTables):
    """Membership (repos.cluster) on one MySQL database. Its open refuses a server the claim
    is unsafe on (UnsafeStore, nothing made) before it makes the nodes and leases tables; on
    Galera its join refuses to write through another node than the live engines do, unless
    multi-writer is declared."""

    TABLES = (
        ("create nodes table", sql.CREATE_NODES),
        ("create leases table", sql.CREATE_LEASES),
        ("create revocations table", sql.CREATE_REVOCATIONS),
    )

    def __init__(
        self,
        url: MysqlUrl,
        *,
        driver: Driver = "asyncmy",
        pool_recycle_s: int = 3600,
        connect_timeout_s: float = 5.0,
        create_missing: bool = False,
        galera_multi_writer: bool = False,
        events: StoreEvents = NO_EVENTS,
    ) -> None:
        super().__init__(
            url,
            driver=driver,
            pool_recycle_s=pool_recycle_s,
            connect_timeout_s=connect_timeout_s,
            create_missing=create_missing,
            events=events,
        )
        self._galera_multi_writer = galera_multi_writer
        self._server = ""
        self._galera = False

    async def _check(self) -> None:
        verdict = await guard_server(self._ex, galera_multi_writer=self._galera_multi_writer)
        self._server, self._galera = verdict.server, verdict.identity.galera

    async def _upgrade(self) -> None:
        async with self._ex.transaction("read nodes columns") as tx:
            if await tx.fetch_all(sql.NODES_HAVE_WRITER):
                return
        try:
            await self._ex.execute_ddl("upgrade nodes table", sql.ADD_NODES_WRITER)
        except StoreError as exc:
            if error_code(exc.cause) != DUPLICATE_COLUMN:
                raise

    async def join(
        self, node_id: str, *, host: str, pid: int, version: str, node_timeout_ms: int
    ) -> Joined:
        names = {"node_id": node_id, "node_timeout_ms": node_timeout_ms}
        row = {**names, "host": host, "pid": pid, "version": version}
        if self._galera and not self._galera_multi_writer:
            await self._refuse_other_writers(node_timeout_ms)
        insert = sql.GALERA_INSERT_NODE if self._galera else sql.INSERT_NODE
        for attempt in range(1, JOIN_ATTEMPTS + 1):
            await self._ex.run(
                "join", lambda tx: tx.execute(sql.FREE_STALE_ID, names), one_statement=True
            )
            try:
                epoch = int(await self._ex.run("join", lambda tx: _insert(tx, insert, row)))
            except StoreError as exc:
                if error_code(exc.cause) != DUPLICATE_KEY:
                    raise
                await self._refuse(node_id, node_timeout_ms, last=attempt == JOIN_ATTEMPTS)
                continue
            async with self._ex.transaction("join") as tx:
                rows = await tx.fetch_all(sql.EARLIER_EPOCHS, {**names, "epoch": epoch})
            return Joined(epoch=epoch, earlier=tuple(map(NodeInfo.from_row, rows)))
        raise StoreError("join", RuntimeError(f"node id {node_id!r} kept changing hands"))

    async def heartbeat(self, epoch: int, holds_from_ms: int) -> bool:
        args = {"epoch": epoch, "holds_from_ms": holds_from_ms}
        heartbeat = sql.GALERA_HEARTBEAT if self._galera else sql.HEARTBEAT
        renewed = await self._ex.run(
            "heartbeat", lambda tx: tx.execute(heartbeat, args), one_statement=True
        )
        return bool(renewed)

    async def declare_dead(self, epoch: int, node_timeout_ms: int) -> bool:
        args = {"epoch": epoch, "node_timeout_ms": node_timeout_ms}
        changed = await self._ex.run(
            "declare dead", lambda tx: tx.execute(sql.DECLARE_DEAD, args), one_statement=True
        )
        return bool(changed)

    async def declare_gone(self, epoch: int) -> NodeInfo | None:
        async def body(tx: Tx) -> NodeInfo | None:
            if not await tx.execute(sql.DECLARE_GONE, {"epoch": epoch}):
                return None
            [found] = await tx.fetch_all(sql.NODE_ROW, {"epoch": epoch})
            return NodeInfo.from_row(found)

        result: NodeInfo | None = await self._ex.run("declare gone", body)
        return result

    async def set_state(self, epoch: int, state: NodeState) -> bool:
        check_settable(state)
        args = {"epoch": epoch, "state": int(state)}
        return bool(
            await self._ex.run(
                "set node state", lambda tx: tx.execute(sql.SET_STATE, args), one_statement=True
            )
        )

    async def list_nodes(self, *, finished: int = 20) -> Roster:
        async with self._ex.transaction("list nodes") as tx:
            [(now_ms,)] = await tx.fetch_all(sql.DB_NOW)
            rows = await tx.fetch_all(sql.LIST_NODES, {"finished": max(0, finished)})
        return Roster(now_ms=int(now_ms), nodes=tuple(map(NodeInfo.from_row, rows)))

    async def prune_nodes(self, older_than_ms: int) -> int:
        args = {"older_than_ms": older_than_ms}
        pruned = await self._ex.run(
            "prune nodes", lambda tx: tx.execute(sql.PRUNE_NODES, args), one_statement=True
        )
        return int(pruned)

    async def prune_revocations(self) -> int:
        pruned = await self._ex.run(
            "prune revocations",
            lambda tx: tx.execute(sql.PRUNE_REVOCATIONS, {}),
            one_statement=True,
        )
        return int(pruned)

    async def acquire_lease(self, name: str, epoch: int, ttl_ms: int) -> bool:
        args = {"name": name, "epoch": epoch, "ttl_ms": ttl_ms}

        if await self._ex.run(
            "acquire lease", lambda tx: tx.execute(sql.TAKE_LEASE, args), one_statement=True
        ):
            return True
        made = await self._ex.run(
            "acquire lease", lambda tx: tx.execute(sql.NEW_LEASE, args), one_statement=True
        )
        return bool(made == 1)

    async def release_lease(self, name: str, epoch: int) -> None:
        args = {"name": name, "epoch": epoch}
        await self._ex.run(
            "release lease", lambda tx: tx.execute(sql.RELEASE_LEASE, args), one_statement=True
        )

    async def take_revocations(self, epoch: int) -> list[Revocation]:
        async with self._ex.transaction("take revocations") as tx:
            rows = await tx.fetch_all(sql.REVOCATIONS, {"epoch": epoch})
        found = [Revocation(int(e), entity, key, int(at)) for e, entity, key, at in rows]
        if found:  # by key: one posted since the read stays for the next call

            async def body(tx: Tx) -> None:
                for r in found:
                    args = {"epoch": r.epoch, "entity": r.entity, "job_id": r.key}
                    await tx.execute(sql.FORGET_REVOCATION, {**args, "at_ms": r.at_ms})

            await self._ex.run("take revocations", body)
        return found

    async def db_now(self) -> int:
        async with self._ex.transaction("read the database's clock") as tx:
            [(now_ms,)] = await tx.fetch_all(sql.DB_NOW)
        return int(now_ms)

    async def _refuse_other_writers(self, node_timeout_ms: int) -> None:
        """Raise UnsafeStore if live engine nodes write through another Galera node than the
        one this process writes through (nothing written)."""
        reason = multi_writer_refusal(*await writers_elsewhere(self._ex, node_timeout_ms))
        if reason is not None:
            raise UnsafeStore(self._ex.address, self._server, (reason,), operation="join")

    async def _refuse(self, node_id: str, node_timeout_ms: int, *, last: bool) -> None:
        """Raise NodeIdInUse naming the live holder of `node_id`; return if it is not live
        (any more), for the join to try again, unless this was the `last` try."""
        async with self._ex.transaction("join") as tx:
            rows = await tx.fetch_all(sql.LIVE_HOLDER, {"node_id": node_id})
        if rows:
            holder, now_ms = NodeInfo.from_row(rows[0]), int(rows[0][-1])
            if holder.heartbeat_age_ms(now_ms) <= node_timeout_ms or last:
                raise NodeIdInUse(node_id, holder.as_live(now_ms), node_timeout_ms=node_timeout_ms)


async def _insert(tx: Tx, statement: str, row: dict[str, object]) -> int:
    await tx.execute(statement, row)
    [(epoch,)] = await tx.fetch_all(sql.LAST_EPOCH)
    return int(epoch)
