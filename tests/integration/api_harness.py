"""The HTTP API in-process (httpx over the ASGI app) on a real store: the fixture and helpers
test_api.py and test_api_jobs.py share (a module of its own: test modules are not imported
by one another)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from infinite_scheduler.api.app import create_app
from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.server import api_access
from infinite_scheduler.api.services import ApiServices
from infinite_scheduler.api.tokens import TokenBook
from infinite_scheduler.api_commands import client_services
from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.config import load_config
from infinite_scheduler.management import JobFilter, PageRequest
from infinite_scheduler.stores import store_access
from repos.examples import SMS

TEMPLATE = {"phone": "+15550100", "message": "hi"}
ROLES = ("READ", "SCHEDULE", "EXECUTE", "ADMIN")


@dataclass
class Api:
    http: httpx.AsyncClient
    services: ApiServices
    secrets: dict[str, str]  #: token name -> secret
    snapshot: Callable[[], Awaitable[Any]]
    client: SchedulerClient

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}


_APPS: list[FastAPI] = []


def app_on(services: ApiServices) -> FastAPI:
    """The one app of this process's tests, serving `services` from now on. FastAPI builds a
    route's models on an app's first request that reaches it (~0.1 s per app for all routes);
    the routes find their services through ``app.state`` only, so one app serves each test
    in turn, its store and tokens the test's own."""
    if not _APPS:
        _APPS.append(create_app(services, max_body_bytes=4096))
    app = _APPS[0]
    app.state.services = services
    return app


@pytest.fixture
async def api(store_url: str) -> AsyncIterator[Api]:
    """The app on a fresh store with one token per role for owner "alice", one SCHEDULE token
    for "bob", and two schedules: alice's "a1" and bob's "b1"."""
    config = load_config(None, store={"url": store_url}, metrics_port=0, categories={"reports": {}})
    async with SchedulerClient(config, SMS) as client:
        bootstrap = store_access(config)
        await bootstrap.open()
        book = TokenBook(bootstrap, Auditor(bootstrap, clock=client.clock), clock=client.clock)
        secrets = {}
        for role in ROLES:
            _, secrets[role] = await book.create(
                f"alice-{role.lower()}", role, owner="alice", actor="test"
            )
        _, secrets["bob"] = await book.create("bob", "SCHEDULE", owner="bob", actor="test")
        _, secrets["revoked"] = await book.create("gone", "ADMIN", actor="test")
        await book.revoke("gone", actor="test")
        await bootstrap.close()
        for name, owner in (("a1", "alice"), ("b1", "bob")):
            await client.schedules.create(
                name, SMS, {"kind": "rate", "every_s": 60}, TEMPLATE, owner=owner
            )
        async with api_access(config, clock=client.clock) as access:
            services = client_services(access, client)
            transport = httpx.ASGITransport(app=app_on(services))
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:

                async def snapshot() -> Any:
                    """Everything a refused request must leave as it was."""
                    schedules = [s.row for s in await client.schedules.list()]
                    blockouts = await client.schedules.blockouts()
                    jobs = await services.jobs.list_jobs(
                        JobFilter(entity="sms"), PageRequest(size=1000)
                    )
                    paused = await client.schedules.store.paused_categories()
                    return schedules, blockouts, jobs, paused

                yield Api(http, services, secrets, snapshot, client)


def check_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "field", "request_id"}
    assert body["code"] == code and body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def schedule_id(api: Api, name: str) -> int:
    for s in await api.services.schedules.list():
        if s.name == name:
            return s.id
    raise AssertionError(name)
