"""Who may use the HTTP API, and what was changed through it: the contract, and its rows.

Two store-wide tables beside ``nodes`` and ``schedules``: ``api_tokens`` (one row per bearer
token: its name, role, owner and the SHA-256 of its secret, never the secret) and
``audit_log`` (one row per change made through the API or the token commands: who, what,
when, the target before and after, as JSON). The adapters store and read rows; what a role
allows (infinite_scheduler/api/) is none of their business.

Times are epoch milliseconds passed in by the caller, as in the other store-wide tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from repos.errors import TokenExists as TokenExists

TOKENS_TABLE = "api_tokens"
AUDIT_TABLE = "audit_log"
#: Longest token name, owner, action and target the tables hold.
MAX_NAME = 64
MAX_OWNER = 191
MAX_ACTION = 64
MAX_TARGET = 255


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRow:
    """One row of api_tokens. `id` is the store's (0 before it is stored); `role` is the role's
    name (READ, SCHEDULE, EXECUTE, ADMIN); `secret_hash` the hex SHA-256 of the secret."""

    id: int = 0
    name: str
    role: str
    owner: str = ""
    secret_hash: str
    created_at_ms: int
    revoked_at_ms: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms is not None

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> TokenRow:
        """From the adapters' row tuple, in the field order above."""
        return cls(
            id=int(r[0]),
            name=r[1],
            role=r[2],
            owner=r[3],
            secret_hash=r[4],
            created_at_ms=int(r[5]),
            revoked_at_ms=None if r[6] is None else int(r[6]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRow:
    """One row of audit_log: `actor` (a token's name) did `action` (``schedule.pause``) to
    `target` (``schedule 7``) at `at_ms`; `before_json` / `after_json` are the target's JSON
    before and after (None: it did not exist)."""

    id: int = 0
    at_ms: int
    actor: str
    action: str
    target: str
    before_json: str | None = None
    after_json: str | None = None
    request_id: str = ""

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> AuditRow:
        return cls(
            id=int(r[0]),
            at_ms=int(r[1]),
            actor=r[2],
            action=r[3],
            target=r[4],
            before_json=r[5],
            after_json=r[6],
            request_id=r[7],
        )

    def values(self) -> dict[str, Any]:
        """The row's columns as bound parameters (without id: the store's)."""
        return {
            "at_ms": self.at_ms,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before_json": self.before_json,
            "after_json": self.after_json,
            "request_id": self.request_id,
        }


class AccessStore(Protocol):
    """The api_tokens and audit_log tables of one store. Driver errors surface as StoreError
    (StoreUnavailable when the database cannot be reached), as in ShardingRepository."""

    async def open(self) -> None:
        """Connect and make both tables if missing. Idempotent."""

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def ping(self) -> None:
        """Read the tokens table once: raises StoreError when the store cannot answer (the
        API's readiness)."""

    async def create_token(self, row: TokenRow) -> TokenRow:
        """Store a new token; the row as stored. TokenExists if its name or its hash is taken
        (a revoked token's name too: names stay unique in the audit log), storing nothing."""
        ...

    async def token_by_hash(self, secret_hash: str) -> TokenRow | None:
        """The token whose secret hashes to this, revoked or not; None if there is none."""
        ...

    async def tokens(self) -> list[TokenRow]:
        """Every token, revoked ones included, by id."""
        ...

    async def revoke_token(self, name: str, *, now_ms: int) -> bool:
        """Mark the live token of that name revoked at now_ms; False if there is no such live
        token (none of that name, or revoked already)."""
        ...

    async def live_tokens(self) -> int:
        """Tokens not revoked."""
        ...

    async def append_audit(self, row: AuditRow) -> AuditRow:
        """Store one audit row; the row as stored (its id: larger than every earlier one's)."""
        ...

    async def audit(self, *, before_id: int | None = None, limit: int = 100) -> list[AuditRow]:
        """Audit rows newest first, those with id < before_id if given (keyset pages)."""
        ...
