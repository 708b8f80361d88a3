"""The driver executor: one pool, transactions, and the one place driver errors are translated.

asyncmy (default) and aiomysql share the PyMySQL API: the same pool, connection and cursor
calls, and errors carrying the server's code in ``args[0]``. Nothing else in the project imports
either driver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from repos.errors import StoreError, StoreMissing, StoreUnavailable
from repos.mysql import sql
from repos.urls import Driver, MysqlUrl

logger = logging.getLogger(__name__)

#: Server codes after which the transaction was rolled back by InnoDB and may simply run again.
RETRYABLE = frozenset({1205, 1213})  # lock wait timeout, deadlock
#: Codes that mean the server could not be reached or the connection died.
UNREACHABLE = frozenset({2002, 2003, 2005, 2006, 2013, 2055})
UNKNOWN_DATABASE = 1049
DUPLICATE_KEY = 1062
RETRY_ATTEMPTS = 3
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

    async def execute(self, statement: str, args: Args = None) -> int:
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
    ) -> None:
        self.url = url
        self.driver = driver
        self._pool_size = pool_size
        self._pool_recycle_s = pool_recycle_s
        self._connect_timeout_s = connect_timeout_s
        self._create_missing = create_missing
        self._pool: Any = None

    async def open(self) -> None:
        """Make the pool (inside the running loop). A missing database raises StoreMissing, or
        with `create_missing` is created first."""
        if self._pool is not None:
            return
        try:
            self._pool = await self._connect(self.url.database)
        except StoreError as exc:
            if error_code(exc.cause) != UNKNOWN_DATABASE:
                raise
            if not self._create_missing:
                raise StoreMissing(
                    "database", self.url.database, exc.cause, address=self.url.address
                ) from exc.cause
            await self.create_database()
            self._pool = await self._connect(self.url.database)

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        pool.close()
        await pool.wait_closed()

    def checked_out(self) -> int:
        """Connections currently lent out; 0 whenever no call is running."""
        return 0 if self._pool is None else int(self._pool.size - self._pool.freesize)

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
        connected = False
        try:
            async with self._pool.acquire() as conn:
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
            if not connected:
                # Whatever a driver raises while (re)connecting means the server is out of
                # reach: asyncmy on uvloop even raises RuntimeError for a reset connection.
                raise StoreUnavailable(operation, exc, address=self.url.address) from exc
            if _is_driver_error(exc):
                raise self._translate(operation, exc, shard=shard) from exc
            raise

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
                logger.warning(
                    "%s: %s, retrying (attempt %d of %d)",
                    operation,
                    exc.cause,
                    attempt + 1,
                    RETRY_ATTEMPTS,
                    extra={"action": operation, "shard": shard},
                )
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def execute_ddl(self, operation: str, ddl: str, *, shard: str | None = None) -> None:
        """Run one DDL statement outside any transaction (DDL commits implicitly anyway)."""
        logger.debug("%s %s", operation, shard or "", extra={"action": operation, "shard": shard})
        async with self.transaction(operation, shard=shard) as tx:
            await _without_notes(tx.execute, ddl)

    async def _connect(self, database: str | None) -> Any:
        """The pool, its first connection made, within connect_timeout_s in all.

        The drivers' own connect_timeout bounds the TCP connect only: a peer that accepts and
        never sends the server greeting (a wedged server, a proxy with no backend) would hang
        the handshake read for minutes.
        """
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await self._create_pool(database)
        except TimeoutError as exc:
            raise StoreUnavailable(
                "connect", exc, address=self.url.address, timeout_s=self._connect_timeout_s
            ) from exc
        except Exception as exc:
            raise self._translate("connect", exc) from exc

    async def _create_pool(self, database: str | None) -> Any:
        kwargs: dict[str, Any] = {
            "host": self.url.host,
            "port": self.url.port,
            "user": self.url.user,
            "password": self.url.password,
            "minsize": 1,
            "maxsize": self._pool_size,
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
        pool = await self._connect(None)
        try:
            async with pool.acquire() as conn, conn.cursor() as cursor:
                if await cursor.execute(sql.DATABASE_EXISTS, {"database": self.url.database}):
                    return False
                created = await cursor.execute(
                    sql.CREATE_DATABASE.format(database=self.url.database)
                )
        except Exception as exc:
            raise self._translate("create database", exc) from exc
        finally:
            pool.close()
            await pool.wait_closed()
        return bool(created)  # affected rows: 0 when another node made it meanwhile

    def _translate(
        self, operation: str, exc: BaseException, *, shard: str | None = None
    ) -> StoreError:
        if error_code(exc) in UNREACHABLE or isinstance(exc, OSError | asyncio.TimeoutError):
            return StoreUnavailable(operation, exc, address=self.url.address)
        return StoreError(operation, exc, shard=shard)


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
