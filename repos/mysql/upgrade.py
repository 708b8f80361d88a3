"""Shards of earlier versions, brought to this version's shape when found.

Tables of the version before epoch claims have no ``claim_epoch`` and index ``(status,
due_at)`` as ix_status_due; those of the version before priorities have no ``priority`` and
``category`` columns (added with their defaults); those of the version before the covering
claim index have ix_claim on ``(claim_epoch, due_at)`` only (rebuilt with ``priority``). The
first time a repository handle sees a shard table (the layouts' discover()), it asks the
catalogue once which of these it is, and upgrades it in place (the partitioned layout's one
table once): see repos/mysql/sql.py, OLD_SHARDS, HAS_PRIORITY, COVERING_CLAIM_INDEX and the
UPGRADE_ statements.

The claim index is rebuilt rather than old shards' ranked claims kept to the bound they had
(repos/ranked.py): the partitioned layout's one table never ages out, so its priorities would
reach no further than before for good, and the ranked claim would need to know each shard's
shape. The price is one online index build per old table at the first open (InnoDB builds it
beside the old one while claims and inserts go on): seconds per million rows. Each step can run again, so an upgrade cut short is finished by the next handle; two
handles racing through it leave one result. Engines of the earlier version must be stopped
first: they would neither stamp nor read the epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from repos.errors import StoreError
from repos.mysql import sql
from repos.mysql.driver import Executor, Tx, error_code

logger = logging.getLogger(__name__)

#: Rows each UPDATE of the upgrade changes at most: bounded transactions on a big shard.
STEP_ROWS = 10_000
#: Duplicate column / duplicate key name / can't drop the key: another handle got there first.
#: No such table: another node's maintenance dropped the shard (expired) since discover() listed
#: it, and a shard that is gone needs no upgrade.
_NO_SUCH_TABLE = 1146
_RACED = frozenset({1060, 1061, 1091, _NO_SUCH_TABLE})


class Upgrades:
    """The shard tables one handle has checked already (each is asked about once)."""

    def __init__(self) -> None:
        self._checked: set[str] = set()

    async def check(self, ex: Executor, tables: Collection[str], pattern: str) -> None:
        """Upgrade those of `tables` (a LIKE `pattern` matches them all) still of the old shape."""
        unchecked = set(tables) - self._checked
        if not unchecked:
            return
        args = {"pattern": pattern}
        async with ex.transaction("find old shards") as tx:
            before_epochs = {r[0] for r in await tx.fetch_all(sql.OLD_SHARDS, args)}
            with_priority = {r[0] for r in await tx.fetch_all(sql.HAS_PRIORITY, args)}
            covering = {r[0] for r in await tx.fetch_all(sql.COVERING_CLAIM_INDEX, args)}
        # The priority column first: both index builds below include it.
        for table in sorted(unchecked - with_priority):
            await _ddl(ex, sql.UPGRADE_ADD_PRIORITY.format(table=table), table)
            logger.info(
                "shard %s upgraded: priority and category columns added (defaults 500, none)",
                table,
                extra={"action": "upgrade", "shard": table},
            )
        for table in sorted(before_epochs & unchecked):
            await upgrade(ex, table)
        for table in sorted(unchecked - before_epochs - covering):
            await _ddl(ex, sql.UPGRADE_CLAIM_INDEX.format(table=table), table)
            logger.info(
                "shard %s upgraded: claim index rebuilt with priority (ranked claims)",
                table,
                extra={"action": "upgrade", "shard": table},
            )
        self._checked |= unchecked


async def upgrade(ex: Executor, table: str) -> None:
    """Bring one table of the old shape to this one; its CLAIMED rows go back to PENDING (the
    attempt handed back, so they fire once with the attempt number they had)."""
    async with ex.transaction("read shard columns", shard=table) as tx:
        has_epoch = bool(await tx.fetch_all(sql.HAS_CLAIM_EPOCH, {"table": table}))
    if not has_epoch:
        await _ddl(ex, sql.UPGRADE_ADD_EPOCH.format(table=table), table)
    await _in_steps(ex, sql.UPGRADE_PENDING.format(table=table), table)
    released = await _in_steps(ex, sql.UPGRADE_RELEASE.format(table=table), table)
    await _ddl(ex, sql.UPGRADE_INDEX.format(table=table), table)
    logger.warning(
        "shard %s upgraded to epoch claims; %d rows it held CLAIMED are PENDING again and fire"
        " once, now",
        table,
        released,
        extra={"action": "upgrade", "shard": table},
    )


async def _ddl(ex: Executor, ddl: str, table: str) -> None:
    try:
        await ex.execute_ddl("upgrade shard", ddl, shard=table)
    except StoreError as exc:
        if error_code(exc.cause) not in _RACED:
            raise


async def _in_steps(ex: Executor, statement: str, table: str) -> int:
    """Run an UPDATE ... LIMIT until it changes nothing; return the rows it changed."""
    changed = 0

    async def step(tx: Tx) -> int:
        return await tx.execute(statement, {"limit": STEP_ROWS})

    try:
        while n := int(await ex.run("upgrade shard", step, shard=table)):
            changed += n
    except StoreError as exc:
        if error_code(exc.cause) != _NO_SUCH_TABLE:
            raise
    return changed
