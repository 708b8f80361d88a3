"""The two ways of laying shards out in MySQL: a table per shard, or a partition per shard.

Everything else (claims, acks, pages) is the same SQL aimed at a different *target*: a table
(`sms_20261122`) or a table with a PARTITION clause (`sms` PARTITION (`p20261122`)).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from repos.base import OnDuplicate
from repos.errors import StoreError
from repos.mysql import sql
from repos.mysql.driver import Executor, error_code
from repos.mysql.upgrade import Upgrades
from repos.shards import (
    Granularity,
    ShardBounds,
    check_identifier,
    read_shard_names,
    shards_between,
)

logger = logging.getLogger(__name__)

#: Duplicate partition name / VALUES LESS THAN not increasing: another node added it first.
_PARTITION_RACE = frozenset({1517, 1493})
#: "Cannot remove all partitions, use DROP TABLE instead".
_LAST_PARTITION = 1508


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    name: str
    bounds: ShardBounds
    target: str


class Layout(Protocol):
    """What differs between the layouts: finding, making and dropping shards."""

    #: The INSERT statement by on_duplicate (the partitioned one fills the extra_values too).
    inserts: Mapping[OnDuplicate, str]
    #: The same, of the rows of one JSON document (EncodedBatch.document).
    document_inserts: Mapping[OnDuplicate, str]
    #: Names the last discover() found under the prefix that are not shards (left alone).
    ignored: frozenset[str]

    def extra_values(self, bounds: ShardBounds) -> tuple[int, ...]: ...

    def shard(self, bounds: ShardBounds) -> Shard: ...

    def covers(self, live: dict[int, Shard], bounds: ShardBounds) -> bool:
        """Whether rows of this shard have somewhere to go already."""
        ...

    def insert_target(self, live: dict[int, Shard], bounds: ShardBounds) -> str: ...

    def fallback_target(self, at_ms: int) -> str | None:
        """Where rows of a shard missing from the live list would be, if anywhere."""
        ...

    async def discover(self, ex: Executor) -> list[Shard]:
        """The shards in the catalogue; those of the earlier version's shape upgraded first."""
        ...

    async def create(self, ex: Executor, wanted: list[ShardBounds], live: list[Shard]) -> None: ...

    async def drop(self, ex: Executor, shard: Shard, live: list[Shard]) -> None: ...


class MultiTable:
    """One table per shard, `{prefix}_{suffix}`; a missing table is simply an empty shard."""

    inserts: Mapping[OnDuplicate, str] = {"error": sql.INSERT, "ignore": sql.INSERT_IGNORE}
    document_inserts: Mapping[OnDuplicate, str] = {
        "error": sql.INSERT_DOCUMENT,
        "ignore": sql.INSERT_DOCUMENT_IGNORE,
    }

    def __init__(self, prefix: str, granularity: Granularity, columns: dict[str, str]) -> None:
        self.prefix = prefix
        self.granularity = granularity
        self.columns = columns
        self.ignored: frozenset[str] = frozenset()
        self._upgrades = Upgrades()

    def extra_values(self, bounds: ShardBounds) -> tuple[int, ...]:
        return ()

    def covers(self, live: dict[int, Shard], bounds: ShardBounds) -> bool:
        return bounds.start_ms in live

    def insert_target(self, live: dict[int, Shard], bounds: ShardBounds) -> str:
        return live[bounds.start_ms].target

    def fallback_target(self, at_ms: int) -> str | None:
        return None

    def shard(self, bounds: ShardBounds) -> Shard:
        name = check_identifier("shard table", f"{self.prefix}_{bounds.suffix}")
        return Shard(name=name, bounds=bounds, target=sql.TABLE_TARGET.format(table=name))

    async def discover(self, ex: Executor) -> list[Shard]:
        async with ex.transaction("list shards") as tx:
            pattern = self.prefix.replace("_", "\\_") + "\\_%"
            rows = await tx.fetch_all(sql.LIST_TABLES, {"pattern": pattern})
        found, self.ignored = read_shard_names(
            (r[0] for r in rows), f"{self.prefix}_", self.granularity
        )
        shards = [self.shard(bounds) for bounds in found]
        await self._upgrades.check(ex, [s.name for s in shards], pattern)
        return shards

    async def create(self, ex: Executor, wanted: list[ShardBounds], live: list[Shard]) -> None:
        have = {s.bounds.start_ms for s in live}
        for bounds in wanted:
            if bounds.start_ms not in have:
                shard = self.shard(bounds)
                ddl = sql.CREATE_SHARD_TABLE.format(table=shard.name, **self.columns)
                await ex.execute_ddl("create shard", ddl, shard=shard.name)

    async def drop(self, ex: Executor, shard: Shard, live: list[Shard]) -> None:
        await ex.execute_ddl(
            "drop shard", sql.DROP_TABLE.format(table=shard.name), shard=shard.name
        )


class Partitioned:
    """One table `{prefix}` with a RANGE partition `p{suffix}` per shard, made ahead while empty.

    Partitions must stay contiguous and increasing, so making a far-future shard also makes
    every shard between the newest one and it. Rows older than the oldest partition land in it.
    """

    inserts: Mapping[OnDuplicate, str] = {
        "error": sql.INSERT_PARTITIONED,
        "ignore": sql.INSERT_PARTITIONED_IGNORE,
    }
    document_inserts: Mapping[OnDuplicate, str] = {
        "error": sql.INSERT_PARTITIONED_DOCUMENT,
        "ignore": sql.INSERT_PARTITIONED_DOCUMENT_IGNORE,
    }

    def __init__(self, prefix: str, granularity: Granularity, columns: dict[str, str]) -> None:
        self.table = prefix
        self.granularity = granularity
        self.columns = columns
        self.ignored: frozenset[str] = frozenset()
        self._upgrades = Upgrades()

    def extra_values(self, bounds: ShardBounds) -> tuple[int, ...]:
        return (bounds.start_ms,)

    def covers(self, live: dict[int, Shard], bounds: ShardBounds) -> bool:
        return bool(live) and bounds.end_ms <= max(s.bounds.end_ms for s in live.values())

    def insert_target(self, live: dict[int, Shard], bounds: ShardBounds) -> str:
        # One statement for every shard: MySQL routes each row to its partition.
        return sql.TABLE_TARGET.format(table=self.table)

    def fallback_target(self, at_ms: int) -> str | None:
        # Rows older than the oldest partition live in it; address them through the table.
        return sql.TABLE_TARGET.format(table=self.table)

    def shard(self, bounds: ShardBounds) -> Shard:
        name = check_identifier("partition", f"p{bounds.suffix}")
        target = sql.PARTITION_TARGET.format(table=self.table, name=name)
        return Shard(name=name, bounds=bounds, target=target)

    async def discover(self, ex: Executor) -> list[Shard]:
        async with ex.transaction("list shards") as tx:
            rows = await tx.fetch_all(sql.LIST_PARTITIONS, {"table": self.table})
        found, self.ignored = read_shard_names((r[0] for r in rows), "p", self.granularity)
        if rows:  # the table exists
            await self._upgrades.check(ex, [self.table], self.table.replace("_", "\\_"))
        return [self.shard(bounds) for bounds in found]

    async def create(self, ex: Executor, wanted: list[ShardBounds], live: list[Shard]) -> None:
        if not wanted:
            return
        if not live:
            defs = self._definitions(wanted[0].start_ms, wanted[-1].end_ms)
            ddl = sql.CREATE_PARTITIONED_TABLE.format(
                table=self.table, partitions=defs, **self.columns
            )
            await ex.execute_ddl("create shard", ddl, shard=self.table)
            live = await self.discover(ex)
        # No shard partition but the table exists: only partitions we ignore are left in it.
        top_ms = live[-1].bounds.end_ms if live else wanted[0].start_ms
        if wanted[-1].end_ms <= top_ms:
            return
        ddl = sql.ADD_PARTITIONS.format(
            table=self.table, partitions=self._definitions(top_ms, wanted[-1].end_ms)
        )
        try:
            await ex.execute_ddl("add partitions", ddl, shard=self.table)
        except StoreError as exc:
            if error_code(exc.cause) not in _PARTITION_RACE:
                raise
            live = await self.discover(ex)
            if not live or live[-1].bounds.end_ms <= top_ms:
                raise  # nobody added ours: a partition we ignore is in the way
            logger.info("partitions of %s were added concurrently; rechecking", self.table)
            await self.create(ex, wanted, live)

    async def drop(self, ex: Executor, shard: Shard, live: list[Shard]) -> None:
        # The last partition goes with its table, unless partitions we ignore are in it too.
        if len(live) == 1 and not self.ignored:
            await ex.execute_ddl(
                "drop shard", sql.DROP_TABLE.format(table=self.table), shard=shard.name
            )
            return
        ddl = sql.DROP_PARTITION.format(table=self.table, name=shard.name)
        try:
            await ex.execute_ddl("drop shard", ddl, shard=shard.name)
        except StoreError as exc:
            if error_code(exc.cause) != _LAST_PARTITION:
                raise
            await ex.execute_ddl(
                "drop shard", sql.DROP_TABLE.format(table=self.table), shard=shard.name
            )

    def _definitions(self, start_ms: int, end_ms: int) -> str:
        return ", ".join(
            sql.PARTITION_DEF.format(name=self.shard(b).name, end_ms=b.end_ms)
            for b in shards_between(start_ms, end_ms, self.granularity)
        )
