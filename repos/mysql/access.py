"""The api_tokens and audit_log tables (repos/access.py) over MySQL/MariaDB, on a small pool
of their own; both layouts and both drivers share them."""

from __future__ import annotations

from repos.access import AuditRow, TokenExists, TokenRow
from repos.errors import StoreError
from repos.mysql import sql
from repos.mysql.driver import DUPLICATE_KEY, Tx, error_code
from repos.mysql.store_tables import MysqlStoreTables


class MysqlAccessStore(MysqlStoreTables):
    """AccessStore (repos.access) on one MySQL database."""

    TABLES = (
        ("create api_tokens table", sql.CREATE_API_TOKENS),
        ("create audit_log table", sql.CREATE_AUDIT_LOG),
    )

    async def ping(self) -> None:
        async with self._ex.transaction("read api tokens", one_statement=True) as tx:
            await tx.fetch_all(sql.PING_TOKENS)

    async def create_token(self, row: TokenRow) -> TokenRow:
        args = {
            "name": row.name,
            "role": row.role,
            "owner": row.owner,
            "secret_hash": row.secret_hash,
            "created_at_ms": row.created_at_ms,
        }

        async def body(tx: Tx) -> TokenRow:
            await tx.execute(sql.INSERT_TOKEN, args)
            [(new_id,)] = await tx.fetch_all(sql.LAST_EPOCH)
            [found] = await tx.fetch_all(sql.TOKEN_BY_ID, {"id": new_id})
            return TokenRow.from_row(found)

        try:
            created: TokenRow = await self._ex.run("create api token", body)
        except StoreError as exc:
            if error_code(exc.cause) == DUPLICATE_KEY:
                raise TokenExists(row.name) from None
            raise
        return created

    async def token_by_hash(self, secret_hash: str) -> TokenRow | None:
        async with self._ex.transaction("read api token", one_statement=True) as tx:
            rows = await tx.fetch_all(sql.TOKEN_BY_HASH, {"secret_hash": secret_hash})
        return TokenRow.from_row(rows[0]) if rows else None

    async def tokens(self) -> list[TokenRow]:
        async with self._ex.transaction("list api tokens", one_statement=True) as tx:
            rows = await tx.fetch_all(sql.LIST_TOKENS)
        return [TokenRow.from_row(r) for r in rows]

    async def revoke_token(self, name: str, *, now_ms: int) -> bool:
        args = {"name": name, "now_ms": now_ms}
        changed = await self._ex.run(
            "revoke api token",
            lambda tx: tx.execute(sql.REVOKE_TOKEN, args),
            one_statement=True,
        )
        return bool(changed)

    async def live_tokens(self) -> int:
        async with self._ex.transaction("count api tokens", one_statement=True) as tx:
            [(n,)] = await tx.fetch_all(sql.COUNT_LIVE_TOKENS)
        return int(n)

    async def append_audit(self, row: AuditRow) -> AuditRow:
        async def body(tx: Tx) -> AuditRow:
            await tx.execute(sql.INSERT_AUDIT, row.values())
            [(new_id,)] = await tx.fetch_all(sql.LAST_EPOCH)
            [found] = await tx.fetch_all(sql.AUDIT_BY_ID, {"id": new_id})
            return AuditRow.from_row(found)

        appended: AuditRow = await self._ex.run("append audit row", body)
        return appended

    async def audit(self, *, before_id: int | None = None, limit: int = 100) -> list[AuditRow]:
        args = {"before_id": before_id, "limit": limit}
        async with self._ex.transaction("read audit log", one_statement=True) as tx:
            rows = await tx.fetch_all(sql.AUDIT_PAGE, args)
        return [AuditRow.from_row(r) for r in rows]
