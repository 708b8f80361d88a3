"""The HTTP API in-process (httpx over the ASGI app) on a real store, SQLite and MariaDB:
roles x operations x owners, bad input, the audit log, readiness."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from infinite_scheduler.api.server import api_access
from infinite_scheduler.config import load_config
from infinite_scheduler.errors import ConfigError
from tests.integration.api_harness import ROLES, TEMPLATE, Api, api, check_error, schedule_id

__all__ = ["api"]  # the fixture, used by name

# -- roles x operations x owners -------------------------------------------------------------

#: (operation, role it needs); each is tried on alice's schedule a1 and bob's b1.
OPERATIONS: list[tuple[str, str]] = [
    ("get", "READ"),
    ("update", "SCHEDULE"),
    ("pause", "SCHEDULE"),
    ("resume", "SCHEDULE"),
    ("delete", "SCHEDULE"),
]


async def call(api: Api, operation: str, target: int, headers: dict[str, str]) -> httpx.Response:
    path = f"/schedules/{target}"
    if operation == "get":
        return await api.http.get(path, headers=headers)
    if operation == "update":
        return await api.http.patch(path, json={"priority": 7}, headers=headers)
    if operation == "delete":
        return await api.http.delete(path, headers=headers)
    return await api.http.post(f"{path}/{operation}", headers=headers)


def expected(operation_role: str, role: str, owned: bool) -> int:
    if ROLES.index(role) < ROLES.index(operation_role):
        return 403
    if not owned and role != "ADMIN":
        return 404  # another owner's: hidden as absent
    return 200


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation,needs", OPERATIONS)
@pytest.mark.parametrize("owner", ["alice", "bob"])
async def test_role_operation_owner_matrix(
    api: Api, role: str, operation: str, needs: str, owner: str
) -> None:
    target = await schedule_id(api, "a1" if owner == "alice" else "b1")
    before = await api.snapshot()
    audit_before = await api.services.access.audit(limit=1000)
    response = await call(api, operation, target, api.auth(role))
    status = expected(needs, role, owner == "alice")
    if status == 200 and operation == "delete":
        status = 204
    assert response.status_code == status, response.text
    if status >= 400:
        check_error(response, status, {403: "forbidden", 404: "not_found"}[status])
        assert await api.snapshot() == before
        assert await api.services.access.audit(limit=1000) == audit_before
    elif operation != "get":
        [row] = await api.services.access.audit(limit=1)
        assert row.actor == f"alice-{role.lower()}" and row.target == f"schedule {target}"
        assert row.action == f"schedule.{operation}"
        assert row.request_id == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer ist_wrong"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "basic", "empty"],
)
async def test_no_or_a_wrong_token_is_401_and_changes_nothing(
    api: Api, headers: dict[str, str]
) -> None:
    before = await api.snapshot()
    target = await schedule_id(api, "a1")
    for response in (
        await api.http.get("/schedules", headers=headers),
        await api.http.post(f"/schedules/{target}/pause", headers=headers),
        await api.http.delete(f"/schedules/{target}", headers=headers),
    ):
        check_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert await api.snapshot() == before


async def test_a_revoked_token_is_401(api: Api) -> None:
    check_error(await api.http.get("/schedules", headers=api.auth("revoked")), 401, "unauthorized")


async def test_a_non_admin_lists_only_its_owners_schedules(api: Api) -> None:
    def names(response: httpx.Response) -> list[str]:
        return [s["name"] for s in response.json()["items"]]

    assert names(await api.http.get("/schedules", headers=api.auth("READ"))) == ["a1"]
    assert names(await api.http.get("/schedules", headers=api.auth("bob"))) == ["b1"]
    assert names(await api.http.get("/schedules", headers=api.auth("ADMIN"))) == ["a1", "b1"]


async def test_schedules_page_by_keyset(api: Api) -> None:
    for n in range(5):
        created = await api.http.post("/schedules", headers=api.auth("SCHEDULE"), json={
            "name": f"p{n}", "entity": "sms", "trigger": {"kind": "rate", "every_s": 60},
            "payload_template": TEMPLATE})  # fmt: skip
        assert created.status_code == 201, created.text
    seen: list[str] = []
    after = 0
    while True:
        page = (
            await api.http.get(f"/schedules?limit=2&after={after}", headers=api.auth("READ"))
        ).json()
        seen += [s["name"] for s in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == ["a1", "p0", "p1", "p2", "p3", "p4"]


async def test_create_owns_by_the_token_and_refuses_another_owner(api: Api) -> None:
    body = {"name": "mine", "entity": "sms", "trigger": {"kind": "rate", "every_s": 30},
            "payload_template": TEMPLATE}  # fmt: skip
    created = await api.http.post("/schedules", json=body, headers=api.auth("SCHEDULE"))
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "alice"
    before = await api.snapshot()
    refused = await api.http.post(
        "/schedules", json={**body, "name": "theirs", "owner": "bob"}, headers=api.auth("SCHEDULE")
    )
    assert check_error(refused, 403, "forbidden")["field"] == "body.owner"
    give = await api.http.patch(
        f"/schedules/{created.json()['id']}", json={"owner": "bob"}, headers=api.auth("SCHEDULE")
    )
    check_error(give, 403, "forbidden")
    assert await api.snapshot() == before
    by_admin = await api.http.post(
        "/schedules", json={**body, "name": "theirs", "owner": "bob"}, headers=api.auth("ADMIN")
    )
    assert by_admin.status_code == 201 and by_admin.json()["owner"] == "bob"


async def test_create_too_low_a_role_is_403(api: Api) -> None:
    before = await api.snapshot()
    body = {
        "name": "x",
        "entity": "sms",
        "trigger": {"kind": "rate", "every_s": 30},
        "payload_template": TEMPLATE,
    }
    check_error(
        await api.http.post("/schedules", json=body, headers=api.auth("READ")), 403, "forbidden"
    )
    assert await api.snapshot() == before


async def test_blockouts_read_by_any_role_changed_by_admin_only(api: Api) -> None:
    body = {"name": "xmas", "start": "2030-12-24T18:00:00Z", "end": "2030-12-26T06:00:00Z"}
    before = await api.snapshot()
    for role in ("READ", "SCHEDULE", "EXECUTE"):
        check_error(
            await api.http.post("/blockouts", json=body, headers=api.auth(role)), 403, "forbidden"
        )
    assert await api.snapshot() == before
    made = await api.http.post("/blockouts", json=body, headers=api.auth("ADMIN"))
    assert made.status_code == 201, made.text
    assert made.json()["end"] == "2030-12-26T06:00:00Z"
    listed = await api.http.get("/blockouts", headers=api.auth("READ"))
    assert [b["name"] for b in listed.json()] == ["xmas"]
    check_error(
        await api.http.post("/blockouts", json=body, headers=api.auth("ADMIN")), 409, "conflict"
    )
    check_error(
        await api.http.delete("/blockouts/xmas", headers=api.auth("SCHEDULE")), 403, "forbidden"
    )
    assert (await api.http.delete("/blockouts/xmas", headers=api.auth("ADMIN"))).status_code == 204
    check_error(
        await api.http.delete("/blockouts/xmas", headers=api.auth("ADMIN")), 404, "not_found"
    )
    actions = [r.action for r in await api.services.access.audit(limit=2)]
    assert actions == ["blockout.delete", "blockout.create"]


# -- the audit log ----------------------------------------------------------------------------


async def test_each_change_is_audited_with_before_and_after_and_admin_reads_it(api: Api) -> None:
    target = await schedule_id(api, "a1")
    await api.http.post(f"/schedules/{target}/pause", headers=api.auth("SCHEDULE"))
    await api.http.patch(f"/schedules/{target}", json={"priority": 9}, headers=api.auth("SCHEDULE"))
    check_error(await api.http.get("/audit", headers=api.auth("EXECUTE")), 403, "forbidden")
    first = (await api.http.get("/audit?limit=2", headers=api.auth("ADMIN"))).json()
    update, pause = first["items"]
    assert (update["action"], pause["action"]) == ("schedule.update", "schedule.pause")
    assert pause["before"]["paused"] is False and pause["after"]["paused"] is True
    assert update["before"]["priority"] == 500 and update["after"]["priority"] == 9
    assert pause["actor"] == "alice-schedule"
    rest = (
        await api.http.get(f"/audit?before={first['next_before']}", headers=api.auth("ADMIN"))
    ).json()
    assert [r["action"] for r in rest["items"]][:2] == ["token.revoke", "token.create"]
    assert rest["next_before"] is None


# -- bad input --------------------------------------------------------------------------------

GOOD = {
    "name": "n",
    "entity": "sms",
    "trigger": {"kind": "rate", "every_s": 60},
    "payload_template": TEMPLATE,
}


@pytest.mark.parametrize("content,status,code,field", [
    (b'{"name": ', 400, "malformed_json", None),
    (b"[1, 2]", 422, "invalid", "body"),
    ({**GOOD, "priority": "high"}, 422, "invalid", "body.priority"),
    ({**GOOD, "priority": 1001}, 422, "invalid", "body.priority"),
    ({**GOOD, "colour": "red"}, 422, "invalid", "body.colour"),
    ({**GOOD, "start": "2026-01-01T00:00:00"}, 422, "invalid", "body.start"),
    ({**GOOD, "start": "10000-01-01T00:00:00Z"}, 422, "invalid", "body.start"),
    ({**GOOD, "end": "1969-01-01T00:00:00Z"}, 422, "invalid", "body.end"),
    ({**GOOD, "trigger": {"kind": "cron", "cron": "61 * * * *"}}, 422, "invalid", "body.trigger.cron"),
    ({**GOOD, "trigger": {"kind": "rate", "every_s": 10**30}}, 422, "invalid", "body.trigger.every_s"),
    ({**GOOD, "payload_template": {"phone": 5}}, 422, "invalid", None),
    ({**GOOD, "entity": "nope'; DROP TABLE schedules; --"}, 422, "invalid", "body.entity"),
    ({**GOOD, "name": "x" * 192}, 422, "invalid", "body.name"),
    ({**GOOD, "name": "a1"}, 409, "conflict", None),
], ids=["malformed", "array", "wrong-type", "out-of-range", "unknown-field", "naive-time",
        "year-10000", "end-before-start", "bad-cron", "huge-int", "bad-template", "sql-entity",
        "long-name", "name-taken"])  # fmt: skip
async def test_bad_input_is_4xx_with_the_uniform_body_and_changes_nothing(
    api: Api, content: Any, status: int, code: str, field: str | None
) -> None:
    before = await api.snapshot()
    audit_before = await api.services.access.audit(limit=1000)
    raw = content if isinstance(content, bytes) else None
    response = await api.http.post(
        "/schedules", content=raw, json=None if raw else content,
        headers={**api.auth("ADMIN"), "content-type": "application/json"},
    )  # fmt: skip
    body = check_error(response, status, code)
    if field is not None:
        assert body["field"] == field, body
    assert await api.snapshot() == before
    assert await api.services.access.audit(limit=1000) == audit_before


async def test_sql_metacharacters_in_strings_are_stored_as_text(api: Api) -> None:
    name = "x'); DROP TABLE schedules; -- \" \\ % _"
    template = {"phone": "+1' OR '1'='1", "message": "'; DELETE FROM api_tokens; --"}
    created = await api.http.post(
        "/schedules",
        json={**GOOD, "name": name, "payload_template": template},
        headers=api.auth("ADMIN"),
    )
    assert created.status_code == 201, created.text
    got = await api.http.get(f"/schedules/{created.json()['id']}", headers=api.auth("ADMIN"))
    assert got.json()["name"] == name and got.json()["payload_template"] == template
    assert len(await api.services.access.tokens()) == 6


@pytest.mark.parametrize(
    "path",
    [
        "/schedules/abc",
        "/schedules/0",
        f"/schedules/{2**64}",
        "/audit?before=x",
        "/schedules?limit=0",
    ],
)
async def test_ids_of_the_wrong_type_or_range_are_422(api: Api, path: str) -> None:
    check_error(await api.http.get(path, headers=api.auth("ADMIN")), 422, "invalid")


async def test_a_body_over_the_limit_is_413_unread(api: Api) -> None:
    before = await api.snapshot()
    huge = {**GOOD, "payload_template": {"phone": "+1", "message": "x" * 10_000}}
    check_error(
        await api.http.post("/schedules", json=huge, headers=api.auth("ADMIN")),
        413,
        "body_too_large",
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    chunked = await api.http.post(
        "/schedules",
        content=chunks(),
        headers={**api.auth("ADMIN"), "content-type": "application/json"},
    )
    check_error(chunked, 413, "body_too_large")
    assert await api.snapshot() == before


async def test_unknown_routes_and_methods_get_the_uniform_body(api: Api) -> None:
    check_error(await api.http.get("/nowhere"), 404, "not_found")
    check_error(
        await api.http.put("/schedules", headers=api.auth("ADMIN")), 405, "method_not_allowed"
    )
    check_error(
        await api.http.get("/schedules/999999", headers=api.auth("ADMIN")), 404, "not_found"
    )


# -- health, readiness, the document ----------------------------------------------------------


async def test_health_ready_and_the_openapi_document_need_no_token(api: Api) -> None:
    assert (await api.http.get("/health")).json() == {"status": "ok"}
    ready = (await api.http.get("/ready")).json()
    assert ready == {"ready": True, "store": "ok", "node": "none", "engine": "none"}
    document = (await api.http.get("/openapi.json")).json()
    assert {"/schedules", "/schedules/{schedule_id}/pause", "/blockouts", "/audit"} <= set(
        document["paths"]
    )
    assert (await api.http.get("/docs")).status_code == 200


async def test_open_access_refused_without_a_token_unless_allowed_on_localhost(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    sqlite3.connect(tmp_path / "s.db").close()
    config = load_config(None, store={"url": url}, metrics_port=0)
    with pytest.raises(ConfigError, match="no API token is stored"):
        async with api_access(config, clock=_Clock()):
            pass
    with pytest.raises(ConfigError, match="allow_open"):
        load_config(None, api={"allow_open": True, "host": "0.0.0.0"})
    opened = load_config(None, store={"url": url}, metrics_port=0, api={"allow_open": True})
    async with api_access(opened, clock=_Clock()) as access:
        assert access.open_access


class _Clock:
    def now_ms(self) -> int:
        return 1_790_000_000_000
