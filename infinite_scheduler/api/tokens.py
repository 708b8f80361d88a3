"""API tokens: made, listed, revoked (the CLI's ``tokens`` commands), and checked per request.

A token's secret is ``ist_`` and 32 random bytes (URL-safe base64); only its SHA-256 is
stored. A plain hash is enough here, unlike for passwords: a slow hash (bcrypt, argon2) makes
guessing a low-entropy password from its hash costly, but no guessing finds a 256-bit random
secret, and a slow hash would cost every request tens of milliseconds. The secret is shown
once, when it is made; a lost one is revoked and made anew.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass

from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.roles import Caller, Role
from infinite_scheduler.clock import Clock
from repos.access import MAX_NAME, MAX_OWNER, AccessStore, TokenRow

PREFIX = "ist_"
SECRET_BYTES = 32
#: A token's name: the audit log's actor.
NAME = re.compile(r"[A-Za-z0-9_.@-]{1," + str(MAX_NAME) + "}")


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: hex SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """A token as listed: never its secret nor its hash."""

    name: str
    role: str
    owner: str
    created_at_ms: int
    revoked_at_ms: int | None

    @classmethod
    def of(cls, row: TokenRow) -> TokenInfo:
        return cls(
            name=row.name,
            role=row.role,
            owner=row.owner,
            created_at_ms=row.created_at_ms,
            revoked_at_ms=row.revoked_at_ms,
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class TokenBook:
    """The store's tokens; every change is written to the audit log as `actor`'s."""

    def __init__(self, store: AccessStore, auditor: Auditor, *, clock: Clock) -> None:
        self._store = store
        self._auditor = auditor
        self._clock = clock

    async def create(
        self, name: str, role: str, *, owner: str | None = None, actor: str
    ) -> tuple[TokenInfo, str]:
        """Store a token; the token and its secret (shown this once). ValueError for a bad
        name, role or owner; TokenExists for a name taken. The owner defaults to the name."""
        if not NAME.fullmatch(name):
            raise ValueError(
                f"token name {name!r}: 1-{MAX_NAME} characters from A-Z a-z 0-9 _ . @ -"
            )
        parsed = Role.parse(role)
        owner = name if owner is None else owner
        if len(owner) > MAX_OWNER:
            raise ValueError(f"owner: at most {MAX_OWNER} characters")
        secret = new_secret()
        row = TokenRow(
            name=name,
            role=parsed.name,
            owner=owner,
            secret_hash=hash_secret(secret),
            created_at_ms=self._clock.now_ms(),
        )
        info = TokenInfo.of(await self._store.create_token(row))
        await self._auditor.record(actor, "token.create", f"token {name}", None, info.as_dict())
        return info, secret

    async def list(self) -> list[TokenInfo]:
        return [TokenInfo.of(row) for row in await self._store.tokens()]

    async def revoke(self, name: str, *, actor: str) -> bool:
        """Revoke the live token of that name; False if there is none."""
        before = next(
            (t for t in await self.list() if t.name == name and t.revoked_at_ms is None), None
        )
        if before is None or not await self._store.revoke_token(name, now_ms=self._clock.now_ms()):
            return False
        after = next(t for t in await self.list() if t.name == name)
        await self._auditor.record(
            actor, "token.revoke", f"token {name}", before.as_dict(), after.as_dict()
        )
        return True

    async def caller(self, secret: str) -> Caller | None:
        """Who a bearer secret stands for; None for an unknown or revoked one."""
        row = await self._store.token_by_hash(hash_secret(secret))
        if row is None or row.revoked:
            return None
        return Caller(name=row.name, role=Role[row.role], owner=row.owner)
