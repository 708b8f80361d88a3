"""The api_tokens and audit_log tables (repos/access.py) in the embedded SQLite store, on a
connection (and thread) of their own beside the shards' and the schedules'."""

from __future__ import annotations

import sqlite3

from repos.access import AuditRow, TokenExists, TokenRow
from repos.sqlite import sql
from repos.sqlite.connection import write
from repos.sqlite.store_tables import SqliteStoreTables


class SqliteAccessStore(SqliteStoreTables):
    """AccessStore (repos.access) on one SQLite file."""

    TABLES = (sql.CREATE_API_TOKENS, sql.CREATE_AUDIT_LOG)
    THREAD = "access"

    async def ping(self) -> None:
        await self._run("read api tokens", lambda db: db.execute(sql.PING_TOKENS).fetchall())

    async def create_token(self, row: TokenRow) -> TokenRow:
        args = {
            "name": row.name,
            "role": row.role,
            "owner": row.owner,
            "secret_hash": row.secret_hash,
            "created_at_ms": row.created_at_ms,
        }

        def work(db: sqlite3.Connection) -> TokenRow:
            with write(db):
                try:
                    new_id = db.execute(sql.INSERT_TOKEN, args).lastrowid
                except sqlite3.IntegrityError:
                    raise TokenExists(row.name) from None
                return TokenRow.from_row(db.execute(sql.TOKEN_BY_ID, {"id": new_id}).fetchone())

        return await self._run("create api token", work)

    async def token_by_hash(self, secret_hash: str) -> TokenRow | None:
        def work(db: sqlite3.Connection) -> TokenRow | None:
            found = db.execute(sql.TOKEN_BY_HASH, {"secret_hash": secret_hash}).fetchone()
            return None if found is None else TokenRow.from_row(found)

        return await self._run("read api token", work)

    async def tokens(self) -> list[TokenRow]:
        def work(db: sqlite3.Connection) -> list[TokenRow]:
            return [TokenRow.from_row(r) for r in db.execute(sql.LIST_TOKENS).fetchall()]

        return await self._run("list api tokens", work)

    async def revoke_token(self, name: str, *, now_ms: int) -> bool:
        args = {"name": name, "now_ms": now_ms}
        return await self._update("revoke api token", sql.REVOKE_TOKEN, args)

    async def live_tokens(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            [(n,)] = db.execute(sql.COUNT_LIVE_TOKENS).fetchall()
            return int(n)

        return await self._run("count api tokens", work)

    async def append_audit(self, row: AuditRow) -> AuditRow:
        def work(db: sqlite3.Connection) -> AuditRow:
            with write(db):
                new_id = db.execute(sql.INSERT_AUDIT, row.values()).lastrowid
                return AuditRow.from_row(db.execute(sql.AUDIT_BY_ID, {"id": new_id}).fetchone())

        return await self._run("append audit row", work)

    async def audit(self, *, before_id: int | None = None, limit: int = 100) -> list[AuditRow]:
        args = {"before_id": before_id, "limit": limit}

        def work(db: sqlite3.Connection) -> list[AuditRow]:
            return [AuditRow.from_row(r) for r in db.execute(sql.AUDIT_PAGE, args).fetchall()]

        return await self._run("read audit log", work)
