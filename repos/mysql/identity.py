"""The store guard's I/O on MySQL: read the server's identity once, judge it
(repos/server_guard.py), log the warnings and refuse an unsafe server.

Run by the membership's open (repos/mysql/cluster.py), the first thing an engine opens, before
any table is made: once per engine start, not per pooled connection.
"""

from __future__ import annotations

import logging

from repos.errors import UnsafeStore
from repos.mysql import sql
from repos.mysql.driver import Executor
from repos.server_guard import ServerIdentity, Verdict, identity_from, judge
from repos.urls import MysqlUrl

logger = logging.getLogger(__name__)


def url_hosts(url: MysqlUrl) -> int:
    """How many hosts the store URL names (the guard's failover warning reads it)."""
    return len(url.hosts)


async def read_identity(ex: Executor) -> ServerIdentity:
    """The version, version comment and wsrep variables and status of `ex`'s server."""
    async with ex.transaction("identify the server", one_statement=True) as tx:
        variables = {str(k).lower(): str(v) for k, v in await tx.fetch_all(sql.SERVER_VARIABLES)}
        status = {str(k).lower(): str(v) for k, v in await tx.fetch_all(sql.WSREP_STATUS)}
    return identity_from(variables, status)


async def check_server(ex: Executor, *, galera_multi_writer: bool) -> Verdict:
    """The guard's verdict on `ex`'s server (``store check`` prints it)."""
    identity = await read_identity(ex)
    return judge(identity, url_hosts=url_hosts(ex.url), galera_multi_writer=galera_multi_writer)


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
