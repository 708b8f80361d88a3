"""The api_tokens and audit_log adapters (repos/access.py) on every store combination."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from repos.access import AccessStore, AuditRow, TokenExists, TokenRow
from repos.registry import make_access_store

T0 = 1_790_000_000_000


@pytest.fixture
async def access(backend: Any, backend_url: str) -> AsyncIterator[AccessStore]:
    store = make_access_store(backend_url, driver=backend.driver)
    await store.open()
    try:
        yield store
    finally:
        leaked = cast(Any, store).checked_out()
        await store.close()
    assert not leaked, f"connections still checked out after the test: {leaked}"


def token(name: str, secret_hash: str, role: str = "READ", owner: str = "") -> TokenRow:
    return TokenRow(name=name, role=role, owner=owner, secret_hash=secret_hash, created_at_ms=T0)


async def test_a_token_is_stored_found_by_hash_listed_and_revoked(access: AccessStore) -> None:
    created = await access.create_token(token("ci", "a" * 64, "SCHEDULE", "team-a"))
    assert created.id > 0 and created.name == "ci" and created.owner == "team-a"
    assert created.role == "SCHEDULE" and not created.revoked
    assert await access.token_by_hash("a" * 64) == created
    assert await access.token_by_hash("b" * 64) is None
    await access.create_token(token("ops", "c" * 64, "ADMIN"))
    assert [t.name for t in await access.tokens()] == ["ci", "ops"]
    assert await access.live_tokens() == 2
    assert await access.revoke_token("ci", now_ms=T0 + 5) is True
    assert await access.revoke_token("ci", now_ms=T0 + 6) is False  # revoked already
    assert await access.revoke_token("nobody", now_ms=T0) is False
    found = await access.token_by_hash("a" * 64)
    assert found is not None and found.revoked_at_ms == T0 + 5
    assert await access.live_tokens() == 1


async def test_a_taken_name_or_hash_is_refused_and_nothing_stored(access: AccessStore) -> None:
    await access.create_token(token("ci", "a" * 64))
    await access.revoke_token("ci", now_ms=T0)
    with pytest.raises(TokenExists, match="'ci'"):
        await access.create_token(token("ci", "d" * 64))  # a revoked token's name too
    with pytest.raises(TokenExists):
        await access.create_token(token("other", "a" * 64))
    assert [t.name for t in await access.tokens()] == ["ci"]


async def test_sql_metacharacters_are_stored_as_text(access: AccessStore) -> None:
    name = "x'; DROP TABLE api_tokens; --"
    await access.create_token(token(name, "e" * 64, owner='o"\\%_'))
    [stored] = await access.tokens()
    assert (stored.name, stored.owner) == (name, 'o"\\%_')


async def test_audit_rows_page_newest_first_by_keyset(access: AccessStore) -> None:
    appended = [
        await access.append_audit(
            AuditRow(
                at_ms=T0 + i,
                actor="ops",
                action="schedule.pause",
                target=f"schedule {i}",
                before_json=None if i == 0 else '{"paused": false}',
                after_json='{"paused": true}',
                request_id=f"r{i}",
            )
        )
        for i in range(5)
    ]
    ids = [row.id for row in appended]
    assert ids == sorted(ids) and len(set(ids)) == 5
    first = await access.audit(limit=2)
    assert [r.target for r in first] == ["schedule 4", "schedule 3"]
    rest = await access.audit(before_id=first[-1].id, limit=10)
    assert [r.target for r in rest] == ["schedule 2", "schedule 1", "schedule 0"]
    assert rest[-1].before_json is None and rest[0].after_json == '{"paused": true}'
    assert rest[0].request_id == "r2" and rest[0].at_ms == T0 + 2
    assert await access.audit(before_id=ids[0]) == []


async def test_ping_answers_on_an_open_store(access: AccessStore) -> None:
    await access.ping()
