"""The database grants docs/deploy.md gives the engine's user are enough, and each is needed.

The doc's GRANT statement runs as written (a fresh user and database name substituted): its user
runs ``store init`` (which makes the database), an engine on a fake clock (insert, claim, fire,
ack, history, leases), maintenance (shards made ahead, an expired shard and history day
dropped) and the management API (a token, audited changes, the dashboard's reads), on both
MySQL layouts, with no error and no warning. The same statement less any one privilege fails
with AccessDenied naming that privilege, wherever the run first needs it. Users and databases
are made per test and dropped after.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncmy
import httpx
import pytest

from infinite_scheduler.api.app import create_app
from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.server import api_access
from infinite_scheduler.api.tokens import TokenBook
from infinite_scheduler.api_commands import client_services
from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import AccessDenied
from infinite_scheduler.jobs import JobContext
from infinite_scheduler.maintenance import MaintenanceReport
from infinite_scheduler.stores import store_access
from repos.examples import SMS, SmsEntity
from repos.mysql.driver import ENGINE_PRIVILEGES
from tests.cli_in_process import cli

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(60)]

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs/deploy.md"
#: The doc's statement: ``GRANT <privileges> ON `<database>`.* TO '<user>'@'<host>';``.
GRANT = re.compile(
    r"^\s*GRANT (?P<privileges>[A-Z, ]+) ON `(?P<database>\w+)`\.\* TO '(?P<user>\w+)'@'(?P<host>[^']+)';$",
    re.MULTILINE,
)
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
DAY = 86_400_000
LAYOUTS = ("multi-table", "partitioned")
#: Loggers whose warnings count as the run going wrong (not the drivers' own notes), and the
#: one that only says the machine is loaded (a stalled event loop).
OWN_LOGGERS = ("infinite_scheduler", "repos")
LOAD_LOGGER = "infinite_scheduler.loop_lag"


def documented_grant() -> re.Match[str]:
    """The one GRANT statement of docs/deploy.md."""
    [statement] = GRANT.finditer(DEPLOY_DOC.read_text())
    return statement


DOCUMENTED = tuple(p.strip() for p in documented_grant()["privileges"].split(","))


def grant_statement(privileges: Sequence[str], database: str, user: str) -> str:
    """The doc's statement as written, for `user` on `database`, granting `privileges`."""
    doc = documented_grant()
    values = {"privileges": ", ".join(privileges), "database": database, "user": user}
    text, done = "", doc.start()
    for name, value in values.items():
        start, end = doc.span(name)
        text, done = text + doc.string[done:start] + value, end
    return (text + doc.string[done : doc.end()]).strip()


class Grantee:
    """``await grantee(privileges)``: the store URL of a new user granted `privileges` by the
    doc's statement on a new database name (not made: ``store init`` makes it);
    ``grantee.as_root(statement)`` runs a DBA's statement. Users and databases are dropped
    after the test."""

    def __init__(self, root: Any, mariadb: Any) -> None:
        self._root = root
        self._server = f"{mariadb.host}:{mariadb.port}"
        self._made: list[tuple[str, str]] = []

    async def __call__(self, privileges: Sequence[str]) -> str:
        user, database = f"ist_u_{secrets.token_hex(4)}", f"ist_{secrets.token_hex(4)}"
        password = secrets.token_hex(8)
        host = documented_grant()["host"]
        self._made.append((f"'{user}'@'{host}'", database))
        await self.as_root(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        await self.as_root(grant_statement(privileges, database, user))
        return f"mysql://{user}:{password}@{self._server}/{database}"

    async def as_root(self, statement: str) -> None:
        async with self._root.cursor() as cur:
            await cur.execute(statement)

    async def drop_all(self) -> None:
        for user, database in self._made:
            await self.as_root(f"DROP USER IF EXISTS {user}")
            await self.as_root(f"DROP DATABASE IF EXISTS `{database}`")


@pytest.fixture
async def grantee(mariadb: Any) -> AsyncIterator[Grantee]:
    # `mariadb` has already failed under CI (skipped elsewhere) when the server is missing: a
    # connect error here is an error of the test, never a skip.
    root = await asyncmy.connect(
        host=mariadb.host, port=mariadb.port, user="root", connect_timeout=3, autocommit=True
    )
    made = Grantee(root, mariadb)
    try:
        yield made
    finally:
        try:
            await made.drop_all()
        finally:
            root.close()


def sms(i: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


def engine_config(url: str, layout: str) -> SchedulerConfig:
    return load_config(
        None,
        store={"url": url, "layout": layout},
        handlers={"max_attempts": 1},
        cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
        fetch_interval_s=0.2,
        lookahead_s=0.6,
        misfire_horizon_s=3600,
        metrics_port=0,
        node_id="node-a",
        categories={"reports": {}},
        history={"retention_days": 2},
        shards={"retention_s": 86_400, "create_ahead": 2},
    )


@dataclass
class Run:
    """What one run did, step by step, as far as it got."""

    init: str = ""
    fired: list[Any] = field(default_factory=list)
    history: list[Any] = field(default_factory=list)
    ahead: MaintenanceReport | None = None
    expired: MaintenanceReport | None = None
    api: dict[str, int] = field(default_factory=dict)
    audited: list[str] = field(default_factory=list)


def store_init(url: str, tmp_path: Path) -> str:
    """``infinite-scheduler store init`` (cli_in_process)."""
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    done = cli("store", "init", "--config", str(config))
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return done.stdout.strip()


async def run_everything(url: str, layout: str, tmp_path: Path) -> Run:
    """store init, a day of the engine and its maintenance, then the API; `run` says how far."""
    run = Run()
    run.init = store_init(url, tmp_path)
    clock = FakeClock(T0)
    config = engine_config(url, layout)
    async with SchedulerClient(config, SMS, clock=clock) as client:
        await client.schedule([sms(i, T0) for i in range(3)] + [sms(9, T0 + 3_600_000)])

        async def handler(ctx: JobContext[SmsEntity]) -> None:
            run.fired.append(ctx.job_id)

        engine = InfiniteScheduler(config, clock=clock, manual=True)
        engine.register(SMS, handler)
        async with engine:
            await engine.run_until_idle()
            run.history = await client.history(SMS, 1)
            run.ahead = await engine.parts.maintenance.run_once(T0)
            await call_api(config, client, clock, run)
            run.expired = await engine.parts.maintenance.run_once(T0 + 3 * DAY)
    return run


async def call_api(
    config: SchedulerConfig, client: SchedulerClient, clock: FakeClock, run: Run
) -> None:
    """A token made, then what the dashboard reads and an operator changes, all audited."""
    bootstrap = store_access(config)
    await bootstrap.open()
    try:
        book = TokenBook(bootstrap, Auditor(bootstrap, clock=clock), clock=clock)
        _, secret = await book.create("ops", "ADMIN", actor="test")
    finally:
        await bootstrap.close()
    async with api_access(config, clock=clock) as access:
        app = create_app(client_services(access, client), max_body_bytes=4096)
        transport = httpx.ASGITransport(app=app)
        auth = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            for method, path in (
                ("GET", "/overview"),
                ("GET", "/shards"),
                ("GET", "/history"),
                ("GET", "/jobs?entity=sms"),
                ("POST", "/jobs/sms/9/cancel"),
                ("POST", "/categories/reports/pause"),
                ("POST", "/categories/reports/resume"),
                ("GET", "/audit"),
            ):
                response = await http.request(method, path, headers=auth)
                run.api[f"{method} {path}"] = response.status_code
                if path == "/audit" and response.status_code == 200:
                    run.audited = [row["action"] for row in response.json()["items"]]


def own_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(OWN_LOGGERS) and r.name != LOAD_LOGGER
    ]


def test_the_error_lists_what_the_doc_grants() -> None:
    """AccessDenied's message repeats the privileges the engine needs: the doc's own list."""
    assert DOCUMENTED == ENGINE_PRIVILEGES


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_the_documented_grants_are_enough_for_everything_the_engine_does(
    grantee: Grantee,
    layout: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    url = await grantee(DOCUMENTED)
    run = await run_everything(url, layout, tmp_path)
    assert run.init.startswith("created database")
    assert sorted(run.fired) == [0, 1, 2]
    assert [(row.job_id, row.outcome.name) for row in run.history] == [("1", "OK")]
    assert run.ahead is not None and run.ahead.failures == {}
    assert len(run.ahead.entities["sms"].ensured) == 3  # today and 2 ahead
    assert run.expired is not None and run.expired.failures == {}
    assert [s.bounds.suffix for s in run.expired.entities["sms"].dropped] == [
        "20261122",
        "20261123",
    ]
    assert run.expired.history_dropped == ("history_20261122",)
    assert set(run.api.values()) == {200}, run.api
    assert run.audited[:3] == ["category.resume", "category.pause", "job.cancel"]
    assert own_warnings(caplog) == []  # leases released, nodes table left, nothing retried


@pytest.mark.parametrize("missing", DOCUMENTED)
async def test_without_any_one_documented_grant_the_error_names_it(
    grantee: Grantee,
    missing: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On the partitioned layout, which needs all of them (ALTER adds partitions)."""
    caplog.set_level(logging.WARNING)
    url = await grantee([p for p in DOCUMENTED if p != missing])
    problems: list[str] = []
    try:
        await run_everything(url, "partitioned", tmp_path)
    except (AccessDenied, RuntimeError) as exc:  # RuntimeError: the CLI's one stderr line
        problems.append(str(exc))
    problems = own_warnings(caplog) + problems
    assert problems, f"everything worked without {missing}: the doc grants more than needed"
    named = f"the database user lacks the {missing} privilege"
    assert all(named in problem for problem in problems), problems
    assert all(", ".join(DOCUMENTED) in problem for problem in problems)


async def test_a_refused_login_says_so_and_what_to_check(grantee: Grantee) -> None:
    url = await grantee(DOCUMENTED)
    user, rest = url.removeprefix("mysql://").split(":", 1)
    wrong = f"mysql://{user}:not-the-password@{rest.split('@', 1)[1]}"
    config = engine_config(wrong, "multi-table")
    with pytest.raises(AccessDenied) as refused:
        async with SchedulerClient(config, SMS):
            pass
    assert refused.value.login_refused and refused.value.privilege is None
    assert "the server refused the login ([1045] Access denied for user" in str(refused.value)
    assert "check the user and password of store.url" in str(refused.value)


async def test_an_upgrade_adding_a_column_needs_alter_on_the_multi_table_layout_too(
    grantee: Grantee, tmp_path: Path
) -> None:
    """A fresh multi-table store never alters a table; one made by an older version does: here
    a nodes table from before the writer column (Galera single-writer)."""
    url = await grantee(DOCUMENTED)
    store_init(url, tmp_path)
    config = engine_config(url, "multi-table")

    async def start_engine() -> None:
        engine = InfiniteScheduler(config, manual=True)
        engine.register(SMS, lambda ctx: asyncio.sleep(0))
        async with engine:
            await engine.run_until_idle()

    await start_engine()
    user, database = url.split("://")[1].split(":")[0], url.rsplit("/", 1)[1]
    at = f"`{database}`.* TO '{user}'@'{documented_grant()['host']}'"
    await grantee.as_root(f"ALTER TABLE `{database}`.nodes DROP COLUMN writer")
    await grantee.as_root(f"REVOKE ALTER ON {at.replace(' TO ', ' FROM ')}")
    with pytest.raises(AccessDenied, match="upgrade nodes table failed: .* lacks the ALTER"):
        await start_engine()
    await grantee.as_root(f"GRANT ALTER ON {at}")
    await start_engine()  # upgraded: the column is back
