"""The store guard's I/O on MySQL: read the server's identity once, judge it
(repos/server_guard.py), log the warnings and refuse an unsafe server.

Run by the membership's open (repos/mysql/cluster.py), the first thing an engine opens, before
any table is made: once per engine start, not per pooled connection.
"""

from __future__ import annotations

import logging

from repos.errors import StoreError, UnsafeStore
from repos.mysql import sql
from repos.mysql.driver import Executor, error_code
from repos.server_guard import GaleraWriter, ServerIdentity, Verdict, identity_from, judge
from repos.urls import MysqlUrl

logger = logging.getLogger(__name__)

#: No nodes table yet, or one made before the writer column: no engine has recorded a writer.
_NO_WRITERS_YET = frozenset({1146, 1054})


def url_hosts(url: MysqlUrl) -> int:
    """How many hosts the store URL names (the guard's failover warning reads it)."""
    return len(url.hosts)


async def read_identity(ex: Executor) -> ServerIdentity:
    """The version, version comment and wsrep variables and status of `ex`'s server."""
    async with ex.transaction("identify the server", one_statement=True) as tx:
        variables = {str(k).lower(): str(v) for k, v in await tx.fetch_all(sql.SERVER_VARIABLES)}
        status = {str(k).lower(): str(v) for k, v in await tx.fetch_all(sql.WSREP_STATUS)}
    return identity_from(variables, status)


async def writers_elsewhere(ex: Executor, node_timeout_ms: int) -> tuple[str, list[GaleraWriter]]:
    """The Galera node `ex` writes through, and the live engine nodes (their heartbeat younger
    than `node_timeout_ms`) that write through another one."""
    try:
        async with ex.transaction("read writer nodes") as tx:
            rows = await tx.fetch_all(sql.OTHER_WRITERS, {"node_timeout_ms": node_timeout_ms})
            [(this,)] = await tx.fetch_all(sql.GALERA_NODE_NAME)
    except StoreError as exc:
        if error_code(exc.cause) not in _NO_WRITERS_YET:
            raise
        return "", []
    return str(this), [GaleraWriter(node_id=r[0], epoch=int(r[1]), galera_node=r[2]) for r in rows]


async def check_server(
    ex: Executor, *, galera_multi_writer: bool, node_timeout_ms: int | None = None
) -> Verdict:
    """The guard's verdict on `ex`'s server (``store check`` prints it); with
    `node_timeout_ms`, on Galera, also on the live engines writing through other nodes."""
    identity = await read_identity(ex)
    others: list[GaleraWriter] = []
    if node_timeout_ms is not None and identity.galera and not galera_multi_writer:
        _, others = await writers_elsewhere(ex, node_timeout_ms)
    return judge(
        identity,
        url_hosts=url_hosts(ex.url),
        galera_multi_writer=galera_multi_writer,
        other_writers=others,
    )


async def guard_server(ex: Executor, *, galera_multi_writer: bool) -> Verdict:
    """Refuse `ex`'s server with UnsafeStore if the claim is unsafe on it; log the warnings."""
    verdict = await check_server(ex, galera_multi_writer=galera_multi_writer)
    context = {"action": "open", "store": ex.url.address}
    if not verdict.accepted:
        raise UnsafeStore(ex.url.address, verdict.server, verdict.refusals)
    for warning in verdict.warnings:
        logger.warning("store %s: %s", ex.url.address, warning, extra=context)
    logger.info("store %s: %s", ex.url.address, verdict.server, extra=context)
    return verdict
