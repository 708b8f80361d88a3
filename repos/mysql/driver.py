"""The driver executor: one pool, transactions, and the one place driver errors are translated.

asyncmy (default) and aiomysql share the PyMySQL API: the same pool, connection and cursor
calls, and errors carrying the server's code in ``args[0]``. Nothing else in the project imports
either driver.

A URL of several hosts (a Galera cluster) is written through one of them at a time, the one
its HostSelector (repos/mysql/hosts.py) names; an executor that finds it gone has the selector
move on, and every executor of the URL follows with a new pool at its next call. The call that
found the host gone fails as with a single host (StoreUnavailable): only the caller knows
whether it may simply run again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from repos.errors import (
    AccessDenied,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    describe_cause,
)
from repos.events import NO_EVENTS, StoreEvents
from repos.mysql import sql
from repos.mysql.hosts import HostSelector, selector_for
from repos.server_guard import identity_from, writer_refusal
from repos.urls import Driver, HostPort, MysqlUrl

logger = logging.getLogger(__name__)

#: Server codes after which the transaction was rolled back and may simply run again: a lock
#: wait timeout, a deadlock, and on Galera a certification conflict (1213 at COMMIT: another
#: node committed a write to the same rows first).
RETRYABLE = frozenset({1205, 1213})
#: Codes that mean the server could not be reached or the connection died; and Galera's
#: 1047 "WSREP has not yet prepared node for application use" (a node out of the primary
#: component), which no retry on that node cures either.
UNREACHABLE = frozenset({1047, 2002, 2003, 2005, 2006, 2013, 2055})
UNKNOWN_DATABASE = 1049
#: The server refusing the user: a database (1044), the login (1045), a table (1142) or column
#: (1143) privilege, a global one (1227).
ACCESS_DENIED = frozenset({1044, 1045, 1142, 1143, 1227})
#: What the engine's database user needs (repos/mysql/sql.py, where the statements are).
ENGINE_PRIVILEGES = sql.ENGINE_PRIVILEGES
#: "INSERT command denied to user ..." (1142, 1143); "... you need (at least one of) the SUPER
#: privilege(s) for this operation" (1227).
_COMMAND_DENIED = re.compile(r"^(\w+) command denied", re.IGNORECASE)
_PRIVILEGE_NEEDED = re.compile(r"the (.+?) privilege\(s\)", re.IGNORECASE)
DUPLICATE_KEY = 1062
#: Runs of a statement that keeps losing (above): enough for two Galera writers claiming
#: the same burst (each round, one of them commits), bounded so a hot spot surfaces.
RETRY_ATTEMPTS = 6
#: The first retry's wait, doubled each time, jittered: two nodes that collided must not
#: come back at the same moment.
RETRY_BASE_S = 0.01
Row = tuple[Any, ...]
#: A statement's values by name (repos/mysql/sql.py); None for a statement without any.
Args = Mapping[str, Any] | None


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class Tx:
    """One connection inside a transaction (or autocommit, for DDL)."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    async def execute(self, statement: str | bytes, args: Args = None) -> int:
        """Run one statement; bytes go to the server as they are (a large insert, rendered
        as bytes so that the driver need not encode a copy of it)."""
        await self._cursor.execute(statement, args)
        return int(self._cursor.rowcount)

    async def fetch_all(self, statement: str, args: Args = None) -> list[Row]:
        await self._cursor.execute(statement, args)
        return list(await self._cursor.fetchall())


class Executor:
    """A connection pool for one MySQL database on asyncmy or aiomysql."""

    def __init__(
        self,
        url: MysqlUrl,
        *,
        driver: Driver = "asyncmy",
        pool_size: int = 10,
        pool_recycle_s: int = 3600,
        connect_timeout_s: float = 5.0,
        create_missing: bool = False,
        events: StoreEvents = NO_EVENTS,
    ) -> None:
        self.url = url
        self.driver = driver
        self._pool_size = pool_size
        self._pool_recycle_s = pool_recycle_s
        self._connect_timeout_s = connect_timeout_s
        self._create_missing = create_missing
        self._events = events
        self._pool: Any = None
        #: The host the pool connects to; a multi-host URL's writer as of the pool's making.
        self.host: HostPort = url.hosts[0]
        self._selector: HostSelector | None = None
        self._generation = 0  # the selector's, when the pool was made
        self._following: asyncio.Lock | None = None
        self._retired: list[Any] = []  # pools to a former writer, closed, not yet waited for

    @property
    def address(self) -> str:
        """``host:port`` of the server written through now."""
        return self.host.address

    async def open(self) -> None:
        """Make the pool (inside the running loop). A missing database raises StoreMissing, or
        with `create_missing` is created first."""
        if self._pool is not None:
            return
        self._join_selector()
        if self._selector is not None:
            self._selector.listen(self._events)
        try:
            self._pool = await self._connect_writer(self.url.database)
        except StoreError as exc:
            if error_code(exc.cause) != UNKNOWN_DATABASE:
                raise
            if not self._create_missing:
                raise StoreMissing(
                    "database", self.url.database, exc.cause, address=self.address
                ) from exc.cause
            await self.create_database()
            self._pool = await self._connect_writer(self.url.database)

    async def close(self) -> None:
        if self._selector is not None:
            self._selector.unlisten(self._events)
        pools, self._pool = [self._pool, *self._retired], None
        self._retired.clear()
        for pool in pools:
            if pool is not None:
                pool.close()
                await pool.wait_closed()

    def checked_out(self) -> int:
        """Connections currently lent out; 0 whenever no call is running."""
        pools = [p for p in (self._pool, *self._retired) if p is not None]
        return sum(int(p.size - p.freesize) for p in pools)

    @asynccontextmanager
    async def transaction(
        self, operation: str, *, shard: str | None = None, one_statement: bool = False
    ) -> AsyncIterator[Tx]:
        """Run the body in one transaction; commit on success, roll back on any error.

        Driver errors leave as StoreError/StoreUnavailable. Retrying deadlocks is the caller's
        business (see :meth:`run`), because only the caller can run the body again. A body of
        `one_statement` runs without BEGIN and COMMIT: under autocommit a statement is a
        transaction of its own, and the two round trips cost an insert more than its rows.
        """
        if self._pool is None:
            raise StoreError(operation, RuntimeError("repository is not open"), shard=shard)
        if self._selector is not None and self._selector.generation != self._generation:
            await self._follow_writer(operation)
        # The pool and its host as of now: a failure is the host's this call used, even when
        # another call moves the executor to the next writer while this one waits.
        pool, host = self._pool, self.host
        connected = False
        try:
            async with pool.acquire() as conn:
                connected = True
                if not one_statement:
                    await conn.begin()
                try:
                    async with conn.cursor() as cursor:
                        yield Tx(cursor)
                    if not one_statement:
                        await conn.commit()
                except BaseException:
                    await _rollback_quietly(conn)
                    raise
        except StoreError:
            raise
        except Exception as exc:
            error = self._failure(operation, exc, connected=connected, shard=shard, host=host)
            if error is None:
                raise
            if isinstance(error, StoreUnavailable):
                await self._writer_lost(error, host)
            raise error from exc

    def _failure(
        self,
        operation: str,
        exc: Exception,
        *,
        connected: bool,
        shard: str | None,
        host: HostPort,
    ) -> StoreError | None:
        """The StoreError a transaction's `exc` on `host` means; None for one that is not the
        store's."""
        if not connected:
            # Whatever a driver raises while (re)connecting means the server is out of
            # reach: asyncmy on uvloop even raises RuntimeError for a reset connection.
            return StoreUnavailable(operation, exc, address=host.address)
        if _is_driver_error(exc):
            return self._translate(operation, exc, shard=shard, host=host)
        return None

    async def run(
        self, operation: str, body: Any, *, shard: str | None = None, one_statement: bool = False
    ) -> Any:
        """Run ``await body(tx)`` in a transaction, again after a deadlock or lock timeout."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                async with self.transaction(
                    operation, shard=shard, one_statement=one_statement
                ) as tx:
                    return await body(tx)
            except StoreError as exc:
                if error_code(exc.cause) not in RETRYABLE or attempt == RETRY_ATTEMPTS:
                    raise
                self._events.conflict(operation)
                logger.warning(
                    "%s: %s, retrying (attempt %d of %d)",
                    operation,
                    exc.cause,
                    attempt + 1,
                    RETRY_ATTEMPTS,
                    extra={"action": operation, "shard": shard},
                )
                await asyncio.sleep(random.uniform(0.5, 1.0) * RETRY_BASE_S * 2**attempt)
        raise AssertionError("unreachable")

    async def execute_ddl(self, operation: str, ddl: str, *, shard: str | None = None) -> None:
        """Run one DDL statement outside any transaction (DDL commits implicitly anyway); again
        after a deadlock: on Galera a DDL (total order isolation) may lose to a write
        replicated ahead of it."""
        logger.debug("%s %s", operation, shard or "", extra={"action": operation, "shard": shard})
        await self.run(operation, lambda tx: _without_notes(tx.execute, ddl), shard=shard)

    def _join_selector(self) -> None:
        """With several hosts, write through the one the URL's selector names (in the loop)."""
        if len(self.url.hosts) > 1 and self._selector is None:
            self._selector = selector_for(self.url)
            self._following = asyncio.Lock()
            self.host, self._generation = self._selector.writer, self._selector.generation

    async def _connect_writer(self, database: str | None) -> Any:
        """A pool to the writer; with several hosts, to the next one that takes writes if the
        writer is gone (one pass over the hosts, at most)."""
        for _ in self.url.hosts:
            try:
                return await self._connect(database)
            except StoreUnavailable as exc:
                await self._writer_lost(exc, self.host)
                if self._selector is None or self._selector.writer == self.host:
                    raise
                self.host, self._generation = self._selector.writer, self._selector.generation
        return await self._connect(database)

    async def _follow_writer(self, operation: str) -> None:
        """Move this executor's pool to the selector's writer (another pool, or an earlier
        call of this one, found the old writer gone)."""
        assert self._selector is not None and self._following is not None
        async with self._following:
            if self._selector.generation == self._generation:
                return  # a call running beside this one moved already
            writer, generation = self._selector.writer, self._selector.generation
            try:
                pool = await self._connect(self.url.database, host=writer)
            except StoreError as exc:
                if isinstance(exc, StoreUnavailable):
                    await self._writer_lost(exc, writer)
                raise StoreUnavailable(operation, exc.cause, address=writer.address) from exc
            # Pool, host and generation change together: a call never sees one without the
            # other (an error on the old pool blamed on the new writer moved it on again).
            old, self._pool = self._pool, pool
            self.host, self._generation = writer, generation
            old.close()  # its connections close as they come back
            self._retired.append(old)

    async def _writer_lost(self, error: StoreUnavailable, host: HostPort) -> None:
        """Have the selector move off `host`, which just failed `error` (a no-op when the
        writer has moved off it already)."""
        if self._selector is not None:
            reason = describe_cause(error.cause)
            await self._selector.failover(host, reason, self._probe)

    async def _probe(self, host: HostPort) -> str | None:
        """Why `host` cannot take writes now, or None: it answers, and a Galera node is
        ready and synced (server_guard.writer_refusal)."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                pool = await self._create_pool(None, host=host, size=1)
                try:
                    async with pool.acquire() as conn, conn.cursor() as cursor:
                        await cursor.execute(sql.SERVER_VARIABLES)
                        variables = _named(await cursor.fetchall())
                        await cursor.execute(sql.WSREP_STATUS)
                        status = _named(await cursor.fetchall())
                finally:
                    pool.close()
                    await pool.wait_closed()
        except TimeoutError:
            return f"no answer within {self._connect_timeout_s:g} s"
        except Exception as exc:
            return describe_cause(exc)
        return writer_refusal(identity_from(variables, status))

    async def _connect(self, database: str | None, *, host: HostPort | None = None) -> Any:
        """The pool, its first connection made, within connect_timeout_s in all.

        The drivers' own connect_timeout bounds the TCP connect only: a peer that accepts and
        never sends the server greeting (a wedged server, a proxy with no backend) would hang
        the handshake read for minutes.
        """
        host = host or self.host
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await self._create_pool(database, host=host)
        except TimeoutError as exc:
            raise StoreUnavailable(
                "connect", exc, address=host.address, timeout_s=self._connect_timeout_s
            ) from exc
        except Exception as exc:
            raise self._translate("connect", exc, host=host) from exc

    async def _create_pool(
        self, database: str | None, *, host: HostPort | None = None, size: int | None = None
    ) -> Any:
        host = host or self.host
        kwargs: dict[str, Any] = {
            "host": host.host,
            "port": host.port,
            "user": self.url.user,
            "password": self.url.password,
            "minsize": 1,
            "maxsize": size or self._pool_size,
            # Explicit: the drivers' defaults differ (asyncmy 3600 s, aiomysql never).
            "pool_recycle": self._pool_recycle_s,
            "connect_timeout": self._connect_timeout_s,
            "autocommit": True,
            "charset": "utf8mb4",
            "init_command": sql.SESSION_INIT,
        }
        if database is not None:
            kwargs["db"] = database
        if self.driver == "aiomysql":
            import aiomysql

            return await aiomysql.create_pool(**kwargs)
        import asyncmy

        return await asyncmy.create_pool(**kwargs)

    async def create_database(self) -> bool:
        """Create the URL's database (utf8mb4) unless it exists; True if it was created."""
        self._join_selector()
        pool = await self._connect_writer(None)
        try:
            async with pool.acquire() as conn, conn.cursor() as cursor:
                if await cursor.execute(sql.DATABASE_EXISTS, {"database": self.url.database}):
                    return False
                created = await cursor.execute(
                    sql.CREATE_DATABASE.format(database=self.url.database)
                )
        except Exception as exc:
            # 1044 names no privilege: making a database takes CREATE on it.
            privilege = sql.CREATE_DATABASE_PRIVILEGE
            raise self._translate("create database", exc, privilege=privilege) from exc
        finally:
            pool.close()
            await pool.wait_closed()
        return bool(created)  # affected rows: 0 when another node made it meanwhile

    def _translate(
        self,
        operation: str,
        exc: BaseException,
        *,
        shard: str | None = None,
        privilege: str | None = None,
        host: HostPort | None = None,
    ) -> StoreError:
        """`exc` (on `host`, the executor's by default) as the StoreError it means;
        `privilege` is what an access denied without the privilege's name (1044) was refused
        for."""
        code = error_code(exc)
        if code in UNREACHABLE or isinstance(exc, OSError | asyncio.TimeoutError):
            return StoreUnavailable(operation, exc, address=(host or self.host).address)
        if code in ACCESS_DENIED:
            privilege = denied_privilege(exc) or privilege
            return AccessDenied(
                operation, exc, privilege=privilege, needed=ENGINE_PRIVILEGES, shard=shard
            )
        return StoreError(operation, exc, shard=shard)


def denied_privilege(exc: BaseException) -> str | None:
    """The privilege a server's access-denied error names (``INSERT``, ``SUPER``), or None."""
    args: tuple[object, ...] = exc.args
    message = str(args[1]) if len(args) > 1 else ""
    found = _COMMAND_DENIED.match(message) or _PRIVILEGE_NEEDED.search(message)
    return found.group(1).upper() if found else None


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("asyncmy", "pymysql", "aiomysql")) or isinstance(
        exc, OSError | asyncio.TimeoutError
    )


async def _without_notes(execute: Callable[[str], Awaitable[Any]], statement: str) -> None:
    """Run DDL with the server's notes off.

    Two nodes making the same shard (or database) race; the loser's IF NOT EXISTS leaves the
    note "Table ... already exists", which asyncmy logs at WARNING and aiomysql issues as a
    Python warning, though the outcome is exactly the one wanted. execute_ddl logs the
    statement at DEBUG instead.
    """
    await execute(sql.NOTES_OFF)
    await execute(statement)
    # Not in a finally: a failed statement's own error must reach the caller (layouts read its
    # code); that connection then keeps notes off, which only ever silences notes.
    await execute(sql.NOTES_ON)


async def _rollback_quietly(conn: Any) -> None:
    try:
        await conn.rollback()
    except Exception:  # the connection may be gone; the server rolls back on disconnect
        logger.debug("rollback failed", exc_info=True)


def _named(rows: Any) -> dict[str, str]:
    """SHOW's (name, value) rows as a dict, the names lower-cased."""
    return {str(name).lower(): str(value) for name, value in rows}
