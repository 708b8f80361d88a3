"""The web dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
engine: ``infinite-scheduler run --demo`` with its API on a local port, on SQLite and MariaDB.

The test signs in with a token made by the CLI, reads every page and checks it against the
store (nodes, schedules, shards, history, audit rows), pauses and resumes a schedule with the
page's buttons, finds a job and cancels it, sees a job stored meanwhile show up without a
reload, signs in again with a READ token (the change buttons disabled, no audit page), and
saves a screenshot of each page (under
``DASHBOARD_SCREENSHOTS``, default the test's tmp dir). ``DASHBOARD_README_SHOT=1`` also
writes the overview to docs/dashboard.png, the README's picture.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.history import ExecutionHistory
from infinite_scheduler.stores import store_access, store_history, store_membership
from repos.base import Status
from repos.examples import SMS, SmsEntity
from tests.cli_in_process import cli

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "infinite_scheduler"]
#: The one-shot job the test finds and cancels: an hour ahead, after every demo job.
JOB_ID = 424242
WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def token(path: Path, name: str, role: str) -> str:
    """A new token's secret, made as an operator makes it: the CLI (in process)."""
    made = cli("tokens", "create", "--name", name, "--role", role, "--json", "--config", str(path))
    assert made.returncode == 0, made.stderr
    secret: str = json.loads(made.stdout)["secret"]
    return secret


@pytest.fixture
def engine(store_url: str, tmp_path: Path) -> Iterator[tuple[str, str, SchedulerConfig]]:
    """A demo engine with its API on a free port: (base URL, an ADMIN token, its config); a
    READ token's secret in ``tmp_path / "read.token"``."""
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(f'metrics_port = 0\n[api]\nport = {port}\n[store]\nurl = "{store_url}"\n')
    secret = token(path, "ops", "ADMIN")
    (tmp_path / "read.token").write_text(token(path, "viewer", "READ"))
    log = (tmp_path / "engine.log").open("w")
    proc = subprocess.Popen(
        [*CLI, "run", "--demo", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-3000:]
            try:
                return httpx.get(f"{base}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, "the engine's API to be ready")
        yield base, secret, load_config(path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


# -- what the store holds, read beside the page ----------------------------------------------


def run(coro: Any) -> Any:
    """Run a store read to its end: in a thread of its own, as Playwright's sync API keeps an
    event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def store_nodes(config: SchedulerConfig) -> list[str]:
    membership = store_membership(config)
    await membership.open()
    try:
        roster = await membership.list_nodes(finished=0)
        return [n.node_id for n in roster.nodes if n.running]
    finally:
        await membership.close()


async def store_schedules(config: SchedulerConfig) -> dict[str, tuple[int, bool]]:
    async with SchedulerClient(config, SMS) as client:
        return {s.name: (s.id, s.row.paused) for s in await client.schedules.list()}


async def store_shards(config: SchedulerConfig) -> dict[str, list[str]]:
    async with SchedulerClient(config, SMS) as client:
        return {"sms": [s.name for s in await client.repository("sms").list_shards()]}


async def store_audit(config: SchedulerConfig, n: int) -> list[tuple[str, str]]:
    access = store_access(config)
    await access.open()
    try:
        return [(r.action, r.target) for r in await access.audit(before_id=None, limit=n)]
    finally:
        await access.close()


async def store_attempts(config: SchedulerConfig, entity: str, job_id: str) -> int:
    store = store_history(config)
    await store.open()
    try:
        history = ExecutionHistory(store, clock=_Wall(), late_threshold_ms=1000)
        return len(await history.of_job(entity, job_id))
    finally:
        await store.close()


async def store_job(config: SchedulerConfig) -> Status | int:
    async with SchedulerClient(config, SMS) as client:
        return (await client.get(SMS, JOB_ID))[0].status


async def add_job(config: SchedulerConfig, job_id: int = JOB_ID, hours: int = 1) -> None:
    at = datetime.now(UTC) + timedelta(hours=hours)
    async with SchedulerClient(config, SMS) as client:
        await client.schedule([SmsEntity(id=job_id, scheduled_at=at, phone="+1555", message="x")])


class _Wall:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


# -- the test --------------------------------------------------------------------------------


def test_the_dashboard_shows_the_store_and_changes_it(
    engine: tuple[str, str, SchedulerConfig], chromium: str, screenshots: Path, tmp_path: Path
) -> None:
    base, secret, config = engine
    run(add_job(config))
    auth = {"Authorization": f"Bearer {secret}"}
    eventually(
        lambda: httpx.get(f"{base}/history?limit=1", headers=auth).json()["rows"],
        "the demo's first attempts in the history",
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{base}/dashboard/")
            sign_in(page, secret)
            overview(page, config, screenshots)
            schedules(page, config, screenshots)
            shards(page, config, screenshots)
            history(page, config, screenshots)
            audit(page, config, screenshots)
            jobs(page, config, screenshots)
            live_update(page, config)
            read_only(page, (tmp_path / "read.token").read_text())
        finally:
            browser.close()


def sign_in(page: Page, secret: str, who: str = "ops (ADMIN)") -> None:
    page.fill("#token", "not-a-token")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("refused")
    page.fill("#token", secret)
    page.click("#login-form button")
    expect(page.locator("#who")).to_have_text(who)
    assert page.evaluate("sessionStorage.length") == 1  # kept in this tab only


def overview(page: Page, config: SchedulerConfig, screenshots: Path) -> None:
    nodes = run(store_nodes(config))
    expect(page.locator("#card-nodes .value")).to_have_text(str(len(nodes)))
    for node_id in nodes:
        expect(page.locator("main table").first).to_contain_text(node_id)
    # The demo fires all the time: the last minute's rate shows, and the chart is drawn.
    expect(page.locator("#card-rate .value")).not_to_have_text("0.0", timeout=WAIT_S * 1000)
    expect(page.locator("svg.chart rect.fired").first).to_be_attached()
    for entity in ("sms", "orders", "notifications"):
        expect(page.locator("main")).to_contain_text(entity)
    page.screenshot(path=screenshots / "overview.png", full_page=True)
    if os.environ.get("DASHBOARD_README_SHOT") == "1":
        shutil.copy(screenshots / "overview.png", ROOT / "docs" / "dashboard.png")


def schedules(page: Page, config: SchedulerConfig, screenshots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#schedules")
    stored = eventually(lambda: run(store_schedules(config)), "the demo's schedules")
    for name in stored:
        expect(page.locator("main table")).to_contain_text(name)
    name, (schedule_id, paused) = sorted(stored.items())[0]
    assert not paused
    page.click(f"#pause-{schedule_id}")
    expect(page.locator(f"#resume-{schedule_id}")).to_be_visible()
    assert run(store_schedules(config))[name][1] is True
    row = page.locator("tr", has=page.locator(f"#resume-{schedule_id}"))
    expect(row).to_contain_text("PAUSED")
    page.screenshot(path=screenshots / "schedules.png", full_page=True)
    page.click(f"#resume-{schedule_id}")
    expect(page.locator(f"#pause-{schedule_id}")).to_be_visible()
    assert run(store_schedules(config))[name][1] is False


def shards(page: Page, config: SchedulerConfig, screenshots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#shards")
    panel = page.locator("#shards-sms")
    for shard in run(store_shards(config))["sms"]:
        expect(panel).to_contain_text(shard)
    expect(panel).to_contain_text("next, at")
    page.screenshot(path=screenshots / "shards.png", full_page=True)


def history(page: Page, config: SchedulerConfig, screenshots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#history")
    rows = page.locator("main table").nth(1).locator("tbody tr")
    expect(rows.first).to_contain_text("sms", timeout=WAIT_S * 1000, ignore_case=True)
    first = rows.first.locator("td")
    entity, job_id = first.nth(1).inner_text(), first.nth(2).inner_text()
    assert run(store_attempts(config, entity, job_id)) >= 1, (entity, job_id)
    expect(page.locator("main table").first).to_contain_text("*")  # the SLA total
    page.screenshot(path=screenshots / "history.png", full_page=True)


def audit(page: Page, config: SchedulerConfig, screenshots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#audit")
    rows = page.locator("main table tbody tr")
    for i, (action, target) in enumerate(run(store_audit(config, 3))):
        expect(rows.nth(i)).to_contain_text(action)
        expect(rows.nth(i)).to_contain_text(target)
    expect(rows.first).to_contain_text("schedule.resume")
    page.screenshot(path=screenshots / "audit.png", full_page=True)


def jobs(page: Page, config: SchedulerConfig, screenshots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#jobs")
    page.select_option("#job-entity", "sms")
    page.select_option("#job-order", "newest")
    row = page.locator("main table tbody tr", has_text=str(JOB_ID))
    row.first.click()
    expect(page.locator("#job-detail")).to_contain_text("PENDING")
    page.click("#job-cancel")
    expect(page.locator("#job-detail dl")).to_contain_text("CANCELLED")
    assert run(store_job(config)) is Status.CANCELLED
    page.screenshot(path=screenshots / "jobs.png", full_page=True)


def live_update(page: Page, config: SchedulerConfig) -> None:
    """A job stored while the jobs page is open shows up in it without a reload."""
    later = JOB_ID + 1
    rows = page.locator("main table tbody tr", has_text=str(later))
    expect(rows).to_have_count(0)
    run(add_job(config, later, hours=2))  # due last: the first row of the newest-first page
    expect(rows).to_have_count(1, timeout=WAIT_S * 1000)


def read_only(page: Page, secret: str) -> None:
    """READ sees the jobs but may change none of them, and has no audit page."""
    page.click("#sign-out")
    sign_in(page, secret, "viewer (READ)")
    expect(page.locator("#nav-audit")).to_be_hidden()
    page.goto(page.url.split("#")[0] + "#jobs")
    page.select_option("#job-entity", "sms")
    page.select_option("#job-order", "newest")
    page.locator("main table tbody tr", has_text=str(JOB_ID)).first.click()
    expect(page.locator("#job-detail")).to_contain_text("CANCELLED")
    for action in ("cancel", "pause", "resume", "run-now"):
        expect(page.locator(f"#job-{action}")).to_be_disabled()
