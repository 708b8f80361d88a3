"""The dashboard's pages and the views they draw (/me, /overview, /shards, /history, /sla),
in-process on a real store, SQLite and MariaDB: served, guarded by the token, equal to what
the store holds, bad parameters refused with the uniform body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infinite_scheduler.api.app import create_app
from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.server import api_access
from infinite_scheduler.api.tokens import TokenBook
from infinite_scheduler.api_commands import client_services
from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.config import load_config
from infinite_scheduler.stores import store_access
from repos.examples import SMS, SmsEntity

VIEWS = ("/me", "/overview", "/shards", "/history", "/sla")


@pytest.fixture
async def views(store_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, SchedulerClient]]:
    """(http client, a READ token, a client on the store) with three PENDING sms jobs."""
    config = load_config(None, store={"url": store_url}, metrics_port=0)
    async with SchedulerClient(config, SMS) as client:
        access = store_access(config)
        await access.open()
        book = TokenBook(access, Auditor(access, clock=client.clock), clock=client.clock)
        _, secret = await book.create("viewer", "READ", owner="alice", actor="test")
        await access.close()
        at = datetime.now(UTC) + timedelta(hours=1)
        await client.schedule([SmsEntity(id=i, scheduled_at=at, phone="+1", message="m") for i in (1, 2, 3)])  # fmt: skip
        async with api_access(config, clock=client.clock) as found:
            app = create_app(client_services(found, client))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                yield http, secret, client


async def test_the_pages_are_served_without_a_token(views: tuple[httpx.AsyncClient, str, SchedulerClient]) -> None:  # fmt: skip
    http, _, _ = views
    page = await http.get("/dashboard/")
    assert page.status_code == 200 and 'src="app.js"' in page.text
    script = await http.get("/dashboard/app.js")
    assert "javascript" in script.headers["content-type"] and "Bearer" in script.text
    assert (await http.get("/dashboard/style.css")).status_code == 200
    assert (await http.get("/dashboard")).status_code in (307, 308)


async def test_the_views_need_a_token_and_say_who_calls(views: tuple[httpx.AsyncClient, str, SchedulerClient]) -> None:  # fmt: skip
    http, secret, _ = views
    for path in VIEWS:
        refused = await http.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["code"] == "unauthorized"
    me = await http.get("/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json() == {"name": "viewer", "role": "READ", "owner": "alice"}


async def test_shards_and_backlog_are_what_the_store_holds(views: tuple[httpx.AsyncClient, str, SchedulerClient]) -> None:  # fmt: skip
    http, secret, client = views
    auth = {"Authorization": f"Bearer {secret}"}
    stored = await client.repository("sms").list_shards(counts=True)
    shards = (await http.get("/shards", headers=auth)).json()
    assert [e["entity"] for e in shards] == ["sms"]
    sms = shards[0]
    assert [s["name"] for s in sms["shards"]] == [s.name for s in stored]
    assert sum(s["rows"].get("PENDING", 0) for s in sms["shards"]) == 3
    assert sms["rows"] == {"PENDING": 3}
    assert sms["drops_next"]["name"] == stored[0].name
    assert sms["retention_s"] == client.repository("sms").policy.retention_ms // 1000
    overview = (await http.get("/overview", headers=auth)).json()
    assert overview["backlog"] == [
        {"entity": "sms", "pending": 3, "held": 0, "waiting": 0, "paused": 0}
    ]
    assert overview["nodes"] == []  # no engine ran on this store
    assert overview["recent"]["fired"] == 0 and len(overview["series"]) == 30


async def test_bad_parameters_are_refused_with_the_uniform_body(views: tuple[httpx.AsyncClient, str, SchedulerClient]) -> None:  # fmt: skip
    http, secret, _ = views
    auth = {"Authorization": f"Bearer {secret}"}
    window = await http.get("/sla?window=soon", headers=auth)
    assert window.status_code == 422 and window.json()["field"] == "window"
    cursor = await http.get("/history?cursor=not-one", headers=auth)
    assert cursor.status_code == 422 and cursor.json()["field"] == "cursor"
    outcome = await http.get("/history?outcome=maybe", headers=auth)
    assert outcome.status_code == 422
    assert (await http.get("/history/sms/1", headers=auth)).json() == []
