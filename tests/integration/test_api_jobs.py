"""The API's control routes in-process on a real store, SQLite and MariaDB: jobs (one and in
bulk), categories, the engine pause and a schedule's extra run; roles x operations x owners,
the service's refusals as the uniform body, the audit rows, and nothing changed when refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from infinite_scheduler.api.app import create_app
from infinite_scheduler.job import Job
from repos.examples import SmsEntity
from tests.integration.api_harness import ROLES, Api, api, check_error, schedule_id

__all__ = ["api"]  # the fixture, used by name
LATER = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0).isoformat()
ONE_SHOT = 7


async def jobs_of(api: Api) -> dict[str, int | str]:
    """An extra run of alice's a1 and of bob's b1 (their occurrences), and a one-shot job."""
    found: dict[str, int | str] = {}
    for owner, name in (("alice", "a1"), ("bob", "b1")):
        found[owner] = (await api.services.schedules.trigger(await schedule_id(api, name))).key
    at = datetime.now(UTC) + timedelta(hours=1)
    await api.client.schedule([SmsEntity(id=ONE_SHOT, scheduled_at=at, phone="+1", message="m")])
    found["nobody"] = ONE_SHOT
    return found


#: (operation, role it needs).
OPERATIONS = [("get", "READ"), ("cancel", "SCHEDULE"), ("pause", "SCHEDULE"),
              ("resume", "SCHEDULE"), ("run-now", "EXECUTE"), ("reschedule", "SCHEDULE")]  # fmt: skip


async def call(api: Api, operation: str, job: int | str, role: str) -> httpx.Response:
    path, headers = f"/jobs/sms/{job}", api.auth(role)
    if operation == "get":
        return await api.http.get(path, headers=headers)
    body = {"at": LATER} if operation == "reschedule" else None
    return await api.http.post(f"{path}/{operation}", json=body, headers=headers)


def expected(needs: str, role: str, owner: str, operation: str) -> int:
    if ROLES.index(role) < ROLES.index(needs):
        return 403
    if role == "ADMIN" or owner == "alice":
        return 200
    if owner == "bob":
        return 404  # another owner's occurrence: hidden as absent
    return 200 if operation == "get" else 403  # a one-shot job: read by all, changed by ADMIN


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation,needs", OPERATIONS)
@pytest.mark.parametrize("owner", ["alice", "bob", "nobody"])
async def test_role_operation_owner_matrix_for_jobs(
    api: Api, role: str, operation: str, needs: str, owner: str
) -> None:
    job = (await jobs_of(api))[owner]
    if operation == "resume":
        await api.services.jobs.pause("sms", job)
    before = await api.snapshot()
    audit_before = await api.services.access.audit(limit=1000)
    response = await call(api, operation, job, role)
    status = expected(needs, role, owner, operation)
    assert response.status_code == status, response.text
    if status >= 400:
        check_error(response, status, {403: "forbidden", 404: "not_found"}[status])
        assert await api.snapshot() == before
        assert await api.services.access.audit(limit=1000) == audit_before
        return
    assert response.json()["id"] == job
    if operation != "get":
        row = (await api.services.access.audit(limit=1))[0]
        assert (row.action, row.target) == (f"job.{operation}", f"job sms {job}")
        assert row.actor == f"alice-{role.lower()}"


async def test_a_change_shows_the_job_after_it_and_audits_before_and_after(api: Api) -> None:
    job = (await jobs_of(api))["alice"]
    paused = await api.http.post(f"/jobs/sms/{job}/pause", headers=api.auth("SCHEDULE"))
    assert paused.status_code == 200 and paused.json()["state"] == "PAUSED"
    moved = await call(api, "reschedule", job, "SCHEDULE")
    assert moved.json()["scheduled_at"] == moved.json()["due_at"]
    assert datetime.fromisoformat(moved.json()["due_at"]) == datetime.fromisoformat(LATER)
    audit = await api.http.get("/audit?limit=1", headers=api.auth("ADMIN"))
    item = audit.json()["items"][0]
    assert (item["before"]["state"], item["after"]["state"]) == ("PAUSED", "PAUSED")
    assert item["before"]["due_at"] != item["after"]["due_at"]


async def test_the_services_refusals_are_409_422_404_and_change_nothing(api: Api) -> None:
    job = (await jobs_of(api))["alice"]
    before = await api.snapshot()
    refused = await api.http.post(f"/jobs/sms/{job}/resume", headers=api.auth("ADMIN"))
    assert "it is not paused" in check_error(refused, 409, "state_refused")["message"]
    bad_id = await api.http.get("/jobs/sms/abc", headers=api.auth("READ"))
    assert check_error(bad_id, 422, "invalid")["field"] == "id"
    past = {"at": "2001-01-01T00:00:00Z"}
    late = await api.http.post(f"/jobs/sms/{job}/reschedule", json=past, headers=api.auth("ADMIN"))
    assert check_error(late, 422, "invalid")["field"] == "at"
    unknown = await api.http.get("/jobs/nope/1", headers=api.auth("READ"))
    assert check_error(unknown, 422, "invalid")["field"] == "entity"
    check_error(await api.http.get("/jobs/sms/424242", headers=api.auth("READ")), 404, "not_found")
    naive = await api.http.post(
        f"/jobs/sms/{job}/reschedule", json={"at": "2040-01-01T00:00:00"}, headers=api.auth("ADMIN")
    )
    check_error(naive, 422, "invalid")
    cursor = await api.http.get("/jobs?entity=sms&cursor=x'%3B--", headers=api.auth("READ"))
    assert check_error(cursor, 422, "invalid")["field"] == "cursor"
    assert await api.snapshot() == before


async def test_a_non_admin_lists_its_occurrences_and_one_shot_jobs_not_others(api: Api) -> None:
    jobs = await jobs_of(api)
    listed = await api.http.get("/jobs?entity=sms", headers=api.auth("READ"))
    assert listed.status_code == 200, listed.text
    assert {j["id"] for j in listed.json()["items"]} == {jobs["alice"], jobs["nobody"]}
    admin = await api.http.get("/jobs?entity=sms&order=newest", headers=api.auth("ADMIN"))
    assert {j["id"] for j in admin.json()["items"]} == set(jobs.values())
    b1 = await schedule_id(api, "b1")
    theirs = await api.http.get(f"/jobs?entity=sms&schedule={b1}", headers=api.auth("READ"))
    check_error(theirs, 404, "not_found")
    a1 = await schedule_id(api, "a1")
    mine = await api.http.get(
        f"/jobs?entity=sms&schedule={a1}&state=PENDING&size=1", headers=api.auth("READ")
    )
    assert [j["id"] for j in mine.json()["items"]] == [jobs["alice"]]
    assert [j["schedule"] for j in mine.json()["items"]] == [a1]


async def test_bulk_takes_the_operations_role_and_admin_without_a_schedule(api: Api) -> None:
    jobs = await jobs_of(api)
    a1, b1 = await schedule_id(api, "a1"), await schedule_id(api, "b1")
    before = await api.snapshot()
    audit_before = await api.services.access.audit(limit=1000)

    async def bulk(op: str, body: dict[str, Any], role: str) -> httpx.Response:
        return await api.http.post(f"/jobs/bulk/{op}", json=body, headers=api.auth(role))

    check_error(await bulk("cancel", {"entity": "sms"}, "EXECUTE"), 403, "forbidden")
    check_error(await bulk("cancel", {"entity": "sms", "schedule": a1}, "READ"), 403, "forbidden")
    check_error(
        await bulk("run-now", {"entity": "sms", "schedule": a1}, "SCHEDULE"), 403, "forbidden"
    )
    check_error(
        await bulk("cancel", {"entity": "sms", "schedule": b1}, "EXECUTE"), 404, "not_found"
    )
    counted = await bulk("cancel", {"entity": "sms", "dry_run": True}, "ADMIN")
    assert counted.json() == {"operation": "cancel", "matched": 3, "changed": 0, "dry_run": True}
    bad = await bulk("cancel", {"entity": "sms", "states": ["NOPE"]}, "ADMIN")
    check_error(bad, 422, "invalid")
    assert await api.snapshot() == before
    assert await api.services.access.audit(limit=1000) == audit_before
    mine = await bulk("pause", {"entity": "sms", "schedule": a1}, "SCHEDULE")
    assert mine.json() == {"operation": "pause", "matched": 1, "changed": 1, "dry_run": False}
    assert (await api.services.jobs.get_job("sms", jobs["alice"])).state == "PAUSED"
    assert (await api.services.jobs.get_job("sms", jobs["bob"])).state == "PENDING"
    row = (await api.services.access.audit(limit=1))[0]
    assert (row.action, row.target, row.actor) == ("jobs.bulk.pause", "jobs sms", "alice-schedule")
    everything = await bulk("cancel", {"entity": "sms"}, "ADMIN")
    assert everything.json()["changed"] == 3


async def test_trigger_runs_one_extra_occurrence_now_and_leaves_the_next_one(api: Api) -> None:
    a1, b1 = await schedule_id(api, "a1"), await schedule_id(api, "b1")
    next_before = (await api.services.schedules.get(a1)).row.next_at_ms
    before = await api.snapshot()
    for role in ("READ", "SCHEDULE"):
        low = await api.http.post(f"/schedules/{a1}/trigger", headers=api.auth(role))
        check_error(low, 403, "forbidden")
    theirs = await api.http.post(f"/schedules/{b1}/trigger", headers=api.auth("EXECUTE"))
    check_error(theirs, 404, "not_found")
    assert await api.snapshot() == before
    made = await api.http.post(f"/schedules/{a1}/trigger", headers=api.auth("EXECUTE"))
    assert made.status_code == 200, made.text
    run = made.json()
    assert (run["schedule"], run["entity"], run["stored"]) == (a1, "sms", True)
    job = await api.http.get(f"/jobs/sms/{run['job_id']}", headers=api.auth("READ"))
    assert (job.json()["state"], job.json()["schedule"]) == ("PENDING", a1)
    assert (await api.services.schedules.get(a1)).row.next_at_ms == next_before
    row = (await api.services.access.audit(limit=1))[0]
    assert (row.action, row.target) == ("schedule.trigger", f"schedule {a1}")


async def test_categories_are_listed_by_any_role_and_paused_by_admin_only(api: Api) -> None:
    listed = await api.http.get("/categories", headers=api.auth("READ"))
    assert listed.json() == [{"name": "reports", "paused": False, "paused_at": None}]
    before = await api.snapshot()
    for role in ("READ", "SCHEDULE", "EXECUTE"):
        low = await api.http.post("/categories/reports/pause", headers=api.auth(role))
        check_error(low, 403, "forbidden")
    unknown = await api.http.post("/categories/nope/pause", headers=api.auth("ADMIN"))
    check_error(unknown, 404, "not_found")
    assert await api.snapshot() == before
    paused = await api.http.post("/categories/reports/pause", headers=api.auth("ADMIN"))
    assert paused.json()["paused"] is True and paused.json()["paused_at"]
    assert await api.client.categories.paused() == {"reports": pytest.approx(0, abs=10**13)}
    row = (await api.services.access.audit(limit=1))[0]
    assert (row.action, row.target, row.before_json) == (
        "category.pause",
        "category reports",
        '{"name":"reports","paused":false,"paused_at":null}',
    )
    resumed = await api.http.post("/categories/reports/resume", headers=api.auth("ADMIN"))
    assert resumed.json()["paused"] is False
    assert await api.client.categories.paused() == {}


async def test_the_engine_pause_is_read_by_any_role_and_changed_by_admin_only(api: Api) -> None:
    status = await api.http.get("/engine", headers=api.auth("READ"))
    assert status.json() == {"paused": False, "paused_at": None}
    before = await api.snapshot()
    for role in ("READ", "SCHEDULE", "EXECUTE"):
        check_error(await api.http.post("/engine/pause", headers=api.auth(role)), 403, "forbidden")
    assert await api.snapshot() == before
    paused = await api.http.post("/engine/pause", headers=api.auth("ADMIN"))
    assert paused.json()["paused"] is True
    assert await api.client.engine_control.paused_since() is not None
    assert (await api.http.get("/engine", headers=api.auth("READ"))).json()["paused"] is True
    assert [
        c["paused"] for c in (await api.http.get("/categories", headers=api.auth("READ"))).json()
    ] == [False]
    resumed = await api.http.post("/engine/resume", headers=api.auth("ADMIN"))
    assert resumed.json() == {"paused": False, "paused_at": None}
    actions = [r.action for r in await api.services.access.audit(limit=2)]
    assert actions == ["engine.resume", "engine.pause"]


async def test_a_job_with_options_lists_its_category(api: Api) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    entity = SmsEntity(id=11, scheduled_at=at, phone="+1", message="m")
    await api.client.schedule([Job(entity, category="reports", priority=900)])
    listed = await api.http.get("/jobs?entity=sms&category=reports", headers=api.auth("READ"))
    assert [(j["id"], j["priority"]) for j in listed.json()["items"]] == [(11, 900)]


async def test_ready_inside_a_paused_engine_stays_200_and_says_paused(api: Api) -> None:
    paused = {"now": True}
    services = replace(api.services, node_active=lambda: True, node_paused=lambda: paused["now"])
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        ready = await http.get("/ready")
        assert (ready.status_code, ready.json()["engine"]) == (200, "paused")
        paused["now"] = False
        assert (await http.get("/ready")).json()["engine"] == "running"
