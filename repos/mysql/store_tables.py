"""The shape every store-wide table adapter on MySQL shares (nodes and leases, dependencies,
schedules and blockouts): a small pool of its own, its tables made at open."""

from __future__ import annotations

from repos.events import NO_EVENTS, StoreEvents
from repos.mysql.driver import Executor
from repos.urls import Driver, MysqlUrl


class MysqlStoreTables:
    """A pool of its own on one MySQL database; `open` makes the TABLES (``(operation,
    DDL)``) if missing, after `_check` (nothing made if it raises: the pool is closed), then
    `_upgrade`s those an earlier version made."""

    TABLES: tuple[tuple[str, str], ...] = ()
    POOL_SIZE = 2

    def __init__(
        self,
        url: MysqlUrl,
        *,
        driver: Driver = "asyncmy",
        pool_recycle_s: int = 3600,
        connect_timeout_s: float = 5.0,
        create_missing: bool = False,
        events: StoreEvents = NO_EVENTS,
    ) -> None:
        self._ex = Executor(
            url,
            driver=driver,
            pool_size=self.POOL_SIZE,
            pool_recycle_s=pool_recycle_s,
            connect_timeout_s=connect_timeout_s,
            create_missing=create_missing,
            events=events,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._ex.address}/{self._ex.url.database}>"

    async def open(self) -> None:
        await self._ex.open()
        try:
            await self._check()
            for operation, ddl in self.TABLES:
                await self._ex.execute_ddl(operation, ddl)
            await self._upgrade()
        except BaseException:
            await self._ex.close()
            raise

    async def close(self) -> None:
        await self._ex.close()

    def checked_out(self) -> int:
        """Connections lent out now; 0 whenever no call runs."""
        return self._ex.checked_out()

    async def _check(self) -> None:
        """What must hold before any table is made (the membership's store guard)."""

    async def _upgrade(self) -> None:
        """Tables an earlier version made, brought to this version's shape (after TABLES)."""
