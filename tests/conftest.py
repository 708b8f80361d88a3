"""Fixtures shared by every tier (unit, integration, e2e).

- an autouse fixture that strips ``INFINITE_SCHEDULER_*`` variables: the developer's own
  settings never leak into a test (nor, through it, into engine subprocesses).
- ``mariadb``: where the shared MariaDB listens (the one place that says so), and its URLs.
- ``mysql_databases`` / ``mysql_database``: fresh MariaDB databases ``ist_<8 hex>``, dropped at
  teardown. MariaDB unreachable: the test fails under ``CI=true`` and is skipped otherwise.
- ``store_url``: a URL for a fresh, empty store (the file or database exists), parametrised
  ``sqlite`` / ``mysql``.
- ``silent_server``: a TCP server on 127.0.0.1 that accepts connections and never answers.
- ``backend``, ``backend_url``, ``make_repo`` and ``repo``: a fresh store and opened
  repositories over every adapter (``sqlite``, ``mysql-{multi,partitioned}-{asyncmy,aiomysql}``);
  teardown fails a test that leaves a connection checked out.
- ``open_membership``: opened memberships (nodes and leases) on the same fresh store of
  ``backend``, each on a connection of its own, as separate nodes would have.
- ``raw_sql``: runs a statement on a repository's (or a membership's) store behind its back, as
  a DBA (or a bug, or a newer version) would.
- ``old_shard``: makes a shard as the version before epoch claims did, with rows in it.
- ``galera`` (session): the local three-node Galera cluster of ``scripts/galera.sh``, brought up
  once (and down at the end if this session started it); fresh databases on it, single- and
  multi-host URLs, ``kill(n)`` / ``start(n)``. ``galera_database``: one fresh database on it,
  dropped after the test. A cluster that cannot start fails under ``CI=true``, skips otherwise.
  Tests marked ``galera`` get a longer timeout (the first one waits for the cluster).

- ``promtool``, ``prometheus_binary`` (session): Debian's Prometheus tools, failing under
  ``CI=true`` when missing; ``dashboard_queries``: every PromQL target of the Grafana dashboard.

Test modules reach all of this through fixtures only: ``tests`` is not a package, so nothing
here is importable at run time.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol, cast

import pytest

from infinite_scheduler.config import ENV_PREFIX
from repos.base import ShardingRepository, ShardPolicy
from repos.cluster import Membership
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, EntitySpec
from repos.examples import SMS, SmsEntity
from repos.registry import make_membership, make_repository
from repos.shards import ShardBounds
from repos.urls import Driver, LayoutName

START_MARIADB = (
    "start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/mysqld.pid"
    " --exec /usr/sbin/mariadbd"
)
#: A day shard per UTC day, kept a week: tests pass a now_ms close to their fixed dates.
DEFAULT_POLICY = ShardPolicy()

Repo = ShardingRepository[Any, Any]
MysqlDatabases = Callable[[], Awaitable[str]]
RawSql = Callable[[Any, str], Awaitable[None]]


# -- hermetic environment ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_scheduler_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config comes from what the test passes only, in this process and in engine processes."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# -- MariaDB ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MariaDB:
    """The shared MariaDB server of the MySQL tests; each test makes databases of its own."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"

    def url(self, database: str, port: int | None = None) -> str:
        """The store URL of `database`; `port` reaches the server another way (a proxy)."""
        return f"mysql://{self.user}@{self.host}:{port or self.port}/{database}"


MARIADB = MariaDB()


@pytest.fixture
def mariadb() -> MariaDB:
    return MARIADB


def _under_ci() -> bool:
    # CI services set CI=true (some CI=1); only an unset, empty or false CI may skip.
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _mariadb_unreachable(exc: BaseException) -> NoReturn:
    reason = f"MariaDB not reachable at {MARIADB.host}:{MARIADB.port}: {exc!r}"
    _missing_service(reason, "MySQL", f" Start it: {START_MARIADB}")


def _missing_service(reason: str, tier: str, hint: str = "") -> NoReturn:
    """Fail under CI (the `tier` tests must run there), skip on a developer machine. The skip
    lives in the else branch alone: under CI this always fails, never skips."""
    if _under_ci():
        pytest.fail(f"{reason}\nCI=true: {tier} tests must run, never skip.{hint}")
    else:
        pytest.skip(reason)


async def _mysql_connect() -> Any:
    import asyncmy

    try:
        return await asyncmy.connect(
            host=MARIADB.host,
            port=MARIADB.port,
            user=MARIADB.user,
            connect_timeout=3,
            autocommit=True,
        )
    except Exception as exc:
        _mariadb_unreachable(exc)


@pytest.fixture
async def mysql_databases() -> AsyncIterator[MysqlDatabases]:
    """Make fresh, empty databases ``ist_<8 hex>`` on the shared MariaDB; all dropped after.

    Connects on first use only, so a sqlite-param test that never asks does not need MariaDB.
    """
    conn: Any = None
    created: list[str] = []

    async def create() -> str:
        nonlocal conn
        if conn is None:
            conn = await _mysql_connect()
        name = f"ist_{secrets.token_hex(4)}"
        created.append(name)
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name

    try:
        yield create
    finally:
        if conn is not None:
            try:
                async with conn.cursor() as cur:
                    for name in created:
                        await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            finally:
                conn.close()


@pytest.fixture
async def mysql_database(mysql_databases: MysqlDatabases) -> str:
    """One fresh database name on the shared MariaDB, dropped after the test."""
    return await mysql_databases()


#: ``await inserts_run()``: MariaDB's counts of the INSERT statements it has run, by kind.
InsertsRun = Callable[[], Awaitable[dict[str, int]]]
_INSERT_COUNTERS = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_insert', 'Com_insert_select')"


@pytest.fixture
def inserts_run() -> InsertsRun:
    """The shared MariaDB's ``Com_insert`` (INSERT ... VALUES) and ``Com_insert_select``
    (INSERT ... SELECT, the MySQL adapter's insert from a document) since it started: a test
    reads them before and after a call to see which statements the call ran."""

    async def read() -> dict[str, int]:
        conn = await _mysql_connect()
        try:
            async with conn.cursor() as cur:
                await cur.execute(_INSERT_COUNTERS)
                return {str(name): int(value) for name, value in await cur.fetchall()}
        finally:
            conn.close()

    return read


# -- a server that never answers ------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: a MySQL server that never
    greets (wedged, or a proxy whose backend hangs). `accepted` counts the connections."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, MARIADB.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)  # held open, silent, until close()
        self.connected.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


# -- stores and repositories ------------------------------------------------------------------


async def _fresh_store(kind: str, tmp_path: Path, mysql_databases: MysqlDatabases) -> str:
    """An existing, empty store: adapters never create one unless asked (create_missing)."""
    if kind == "sqlite":
        (tmp_path / "store.db").touch()  # an empty file is an empty SQLite database
        return f"sqlite:///{tmp_path}/store.db"
    return MARIADB.url(await mysql_databases())


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    ]
)
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_databases: MysqlDatabases
) -> str:
    """URL of a fresh, empty store: a SQLite file in tmp_path, or a fresh MariaDB database."""
    return await _fresh_store(request.param, tmp_path, mysql_databases)


@dataclass(frozen=True, slots=True)
class Backend:
    """One adapter configuration the contract suite runs against."""

    kind: Literal["sqlite", "mysql"]
    layout: LayoutName = "multi-table"
    driver: Driver = "asyncmy"


_LAYOUTS: tuple[tuple[str, LayoutName], ...] = (
    ("multi", "multi-table"),
    ("partitioned", "partitioned"),
)
_DRIVERS: tuple[Driver, ...] = ("asyncmy", "aiomysql")
BACKENDS = [
    pytest.param(Backend("sqlite"), id="sqlite"),
    *(
        pytest.param(
            Backend("mysql", layout, driver),
            id=f"mysql-{short}-{driver}",
            marks=pytest.mark.mysql,
        )
        for short, layout in _LAYOUTS
        for driver in _DRIVERS
    ),
]


class MakeRepo(Protocol):
    """Open another repository on the test's store (same URL: a second node, say)."""

    def __call__(
        self,
        spec: EntitySpec[Any, Any] = SMS,
        *,
        policy: ShardPolicy = DEFAULT_POLICY,
        batch_size: int = 1000,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> Awaitable[Repo]: ...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return cast(Backend, request.param)


@pytest.fixture
async def backend_url(backend: Backend, tmp_path: Path, mysql_databases: MysqlDatabases) -> str:
    """URL of the test's fresh, empty store of `backend` (its layout and driver are the
    backend's, not the URL's)."""
    return await _fresh_store(backend.kind, tmp_path, mysql_databases)


@pytest.fixture
async def make_repo(backend: Backend, backend_url: str) -> AsyncIterator[MakeRepo]:
    """Factory of opened repositories on one fresh store of `backend`; all closed at teardown,
    after checking that none still has a connection checked out (a leak in the adapter)."""
    url = backend_url
    opened: list[Repo] = []
    async with AsyncExitStack() as stack:

        async def make(
            spec: EntitySpec[Any, Any] = SMS,
            *,
            policy: ShardPolicy = DEFAULT_POLICY,
            batch_size: int = 1000,
            max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        ) -> Repo:
            repo = make_repository(
                url,
                spec,
                policy,
                layout=backend.layout,
                driver=backend.driver,
                batch_size=batch_size,
                max_payload_bytes=max_payload_bytes,
            )
            await repo.open()
            stack.push_async_callback(repo.close)
            opened.append(repo)
            return repo

        yield make
        leaked = [cast(Any, repo).checked_out() for repo in opened]
    assert not any(leaked), f"connections still checked out after the test: {leaked}"


@pytest.fixture
async def repo(make_repo: MakeRepo) -> Repo:
    """An opened repository of the SMS example spec, day shards kept a week."""
    return await make_repo()


OpenMembership = Callable[[], Awaitable[Membership]]


@pytest.fixture
async def open_membership(backend: Backend, backend_url: str) -> AsyncIterator[OpenMembership]:
    """Factory of opened memberships on the test's fresh store of `backend` (its driver), each
    with connections of its own; all closed at teardown, after checking none leaked one."""
    opened: list[Membership] = []
    async with AsyncExitStack() as stack:

        async def open_one() -> Membership:
            membership = make_membership(backend_url, driver=backend.driver)
            await membership.open()
            stack.push_async_callback(membership.close)
            opened.append(membership)
            return membership

        yield open_one
        leaked = [cast(Any, m).checked_out() for m in opened]
    assert not any(leaked), f"connections still checked out after the test: {leaked}"


@pytest.fixture
def raw_sql() -> RawSql:
    """``await raw_sql(repo, statement)``: one statement on the repository's (or membership's)
    store, outside it (SQLite: its own connection to the file; MySQL: its pool, no adapter
    code)."""

    async def run(repo: Any, statement: str) -> None:
        path = getattr(repo, "path", None)
        if path is not None:
            with closing(sqlite3.connect(path)) as db:
                db.execute(statement)
                db.commit()
        else:
            await cast(Any, repo)._ex.execute_ddl("test setup", statement)

    return run


# -- shards of the version before epoch claims ----------------------------------------------

#: A row of such a shard: (id, sharding time, status, attempts, claimed_by, claimed_at,
#: fired_at); its due_at is its sharding time, its payload the SMS example's.
OldRow = tuple[int, int, int, int, str, int, int]
OldShard = Callable[..., Awaitable[None]]

# The DDL of the SMS example's shards as the version before epoch claims made them: no
# claim_epoch, and the claim index on (status, due_at).
_OLD_COLUMNS = """
    `id` BIGINT NOT NULL, `scheduled_at` BIGINT NOT NULL, payload MEDIUMBLOB NOT NULL,
    status TINYINT NOT NULL, due_at BIGINT NOT NULL, attempts INT NOT NULL,
    claimed_by CHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL DEFAULT 0, fired_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NULL"""
_OLD_MYSQL_TABLE = (
    "CREATE TABLE `sms_{suffix}` (" + _OLD_COLUMNS + ", PRIMARY KEY (`id`),"
    " KEY ix_status_due (status, due_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)
_OLD_MYSQL_PARTITIONED = (
    "CREATE TABLE `sms` (" + _OLD_COLUMNS + ", shard_at BIGINT NOT NULL,"
    " PRIMARY KEY (`id`, shard_at), KEY ix_status_due (status, due_at))"
    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    " PARTITION BY RANGE (shard_at) (PARTITION `p{suffix}` VALUES LESS THAN ({end_ms}))"
)
_OLD_SQLITE = (
    'CREATE TABLE "sms_{suffix}" ("id" INTEGER PRIMARY KEY NOT NULL,'
    ' "scheduled_at" INTEGER NOT NULL, payload BLOB NOT NULL, status INTEGER NOT NULL,'
    " due_at INTEGER NOT NULL, attempts INTEGER NOT NULL, claimed_by TEXT, claimed_at INTEGER,"
    " fired_at INTEGER, last_error TEXT)",
    'CREATE INDEX "ix_sms_{suffix}_due" ON "sms_{suffix}" (status, due_at)',
)


@pytest.fixture
def old_shard(backend: Backend, backend_url: str) -> OldShard:
    """``await old_shard(bounds, rows)``: make one SMS shard on the test's store as the version
    before epoch claims made it, holding `rows` (before any repository is opened on it). With
    ``cut_short=True`` (MySQL), as an upgrade cut short after its first step left it."""

    async def make(bounds: ShardBounds, rows: Sequence[OldRow], *, cut_short: bool = False) -> None:
        payload = SMS.encode(
            SmsEntity(id=0, scheduled_at=_utc(bounds.start_ms), phone="+1555", message="old")
        ).payload
        values = [
            (k, at, payload, st, at, n, by, c, f, bounds.start_ms)
            for k, at, st, n, by, c, f in rows
        ]
        if backend.kind == "sqlite":
            assert not cut_short, "SQLite upgrades a table in one transaction"
            with closing(sqlite3.connect(backend_url.removeprefix("sqlite:///"))) as db:
                for ddl in _OLD_SQLITE:
                    db.execute(ddl.format(suffix=bounds.suffix))
                db.executemany(
                    f'INSERT INTO "sms_{bounds.suffix}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)',
                    [(*v[:6], v[6] or None, v[7] or None, v[8] or None) for v in values],
                )
                db.commit()
            return
        partitioned = backend.layout == "partitioned"
        ddl = _OLD_MYSQL_PARTITIONED if partitioned else _OLD_MYSQL_TABLE
        table = "sms" if partitioned else f"sms_{bounds.suffix}"
        columns = "id, scheduled_at, payload, status, due_at, attempts, claimed_by, claimed_at"
        columns += ", fired_at, shard_at" if partitioned else ", fired_at"
        marks = ", ".join(["%s"] * (10 if partitioned else 9))
        conn = await _mysql_connect()
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"USE `{backend_url.rsplit('/', 1)[1]}`")
                await cur.execute(ddl.format(suffix=bounds.suffix, end_ms=bounds.end_ms))
                for v in values:
                    insert = f"INSERT INTO `{table}` ({columns}) VALUES ({marks})"
                    await cur.execute(insert, v if partitioned else v[:9])
                if cut_short:
                    await cur.execute(
                        f"ALTER TABLE `{table}` ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT -1"
                    )
        finally:
            conn.close()

    return make


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# -- the local Galera cluster (scripts/galera.sh) --------------------------------------------

GALERA_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "galera.sh"
#: Bringing the cluster up from nothing takes ~15 s here, a recovery after kill -9 longer.
GALERA_TEST_TIMEOUT_S = 240


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A galera test may be the one that waits for the cluster: it gets a longer timeout."""
    for item in items:
        if item.get_closest_marker("galera") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(GALERA_TEST_TIMEOUT_S))


def _galera_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GALERA_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=GALERA_TEST_TIMEOUT_S - 30,
        check=False,
    )


@dataclass(frozen=True, slots=True)
class Galera:
    """The three nodes of the local Galera cluster (127.0.0.1:3311..3313, root, no password)."""

    host: str = "127.0.0.1"
    #: 3311..3313, moved by the script's GALERA_PORT_OFFSET (a second cluster beside the first).
    ports: tuple[int, ...] = tuple(
        3310 + int(os.environ.get("GALERA_PORT_OFFSET", "0")) + n for n in (1, 2, 3)
    )
    user: str = "root"
    #: The script's GALERA_DIR: node n's datadir and error log are under n<n>/.
    directory: Path = Path(os.environ.get("GALERA_DIR", "/tmp/infsched-galera"))

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        return tuple((self.host, port) for port in self.ports)

    def url(self, database: str) -> str:
        """The multi-host store URL of `database`: every node, n1 first."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"mysql://{self.user}@{hosts}/{database}"

    def node_url(self, n: int, database: str) -> str:
        """The store URL of `database` through node `n` (1..3) alone."""
        return f"mysql://{self.user}@{self.host}:{self.ports[n - 1]}/{database}"

    def sql(self, n: int, *statements: str) -> list[tuple[Any, ...]]:
        """Statements on node `n`, one session, autocommit; the rows of the last."""
        import pymysql

        conn = pymysql.connect(
            host=self.host, port=self.ports[n - 1], user=self.user, autocommit=True
        )
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self) -> str:
        """A fresh, empty database ``ist_<8 hex>`` on the cluster (replicated to every node)."""
        name = f"ist_{secrets.token_hex(4)}"
        self.sql(1, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(1, f"DROP DATABASE IF EXISTS `{name}`")

    def kill(self, n: int) -> None:
        """kill -9 node `n`: a crash of that database server."""
        self._run("kill", str(n))

    def start(self, n: int) -> None:
        """Restart node `n`; returns once it has rejoined (IST or SST) and is Synced."""
        self._run("start", str(n))

    def status(self) -> str:
        """The script's status: one line per node (pid, state, ready, cluster size)."""
        return self._run("status")

    def error_log(self, n: int) -> str:
        return (self.directory / f"n{n}" / "error.log").read_text(errors="replace")

    def _run(self, *args: str) -> str:
        done = _galera_script(*args)
        assert done.returncode == 0, f"scripts/galera.sh {' '.join(args)}:\n{done.stderr}"
        return done.stdout


def _galera_synced(status: str) -> bool:
    lines = status.splitlines()
    return len(lines) == 3 and all("state=Synced ready=ON cluster_size=3" in line for line in lines)


@pytest.fixture(scope="session")
def galera() -> Iterator[Galera]:
    """The local three-node Galera cluster, up and Synced; left up between tests, brought down
    at the end of the session unless it was already up before (a developer's `make galera-up`).
    """
    if os.geteuid() != 0:
        _missing_service(
            "scripts/galera.sh runs as root (mariadbd drops to --user=mysql)", "Galera"
        )
    was_up = _galera_synced(_galera_script("status").stdout)
    done = _galera_script("up")
    if done.returncode != 0:
        _galera_script("down")
        _missing_service(f"the local Galera cluster did not start:\n{done.stderr}", "Galera")
    try:
        yield Galera()
    finally:
        if not was_up:
            _galera_script("down")


@pytest.fixture
def galera_database(galera: Galera) -> Iterator[str]:
    """One fresh database on the Galera cluster, dropped after the test."""
    name = galera.create_database()
    try:
        yield name
    finally:
        galera.drop_database(name)


# -- store events ------------------------------------------------------------------------------


class RecordedEvents:
    """A StoreEvents (repos/events.py) that writes down what it hears."""

    def __init__(self) -> None:
        self.failovers: list[tuple[str, str, str]] = []
        self.writers: list[str] = []
        self.conflicts: list[str] = []

    def conflict(self, operation: str) -> None:
        self.conflicts.append(operation)

    def failover(self, from_address: str, to_address: str, reason: str) -> None:
        self.failovers.append((from_address, to_address, reason))

    def writer(self, address: str) -> None:
        self.writers.append(address)


@pytest.fixture
def recorded_events() -> Callable[[], RecordedEvents]:
    """``recorded_events()``: a new StoreEvents that keeps what the store told it."""
    return RecordedEvents


# -- Prometheus (tests/ops) --------------------------------------------------------------------

#: Debian's prometheus package: `make test` installs it (`make prometheus-tools`).
PROMETHEUS_HINT = " Install them: make prometheus-tools (as root: apt-get install prometheus)."
DASHBOARD = Path(__file__).resolve().parents[1] / "docker" / "grafana" / "dashboard.json"


def _prometheus_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing_service(f"{name} not found on PATH", "Prometheus", PROMETHEUS_HINT)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's promtool: fails under CI=true when missing, skips elsewhere."""
    return _prometheus_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Debian's prometheus server binary: fails under CI=true when missing, skips elsewhere."""
    return _prometheus_tool("prometheus")


@pytest.fixture(scope="session")
def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of docker/grafana/dashboard.json, in order."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


#: Debian's chromium, driven by Playwright with executable_path (never a downloaded browser).
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium: fails under CI=true when missing, skips elsewhere."""
    if not Path(CHROMIUM).exists():
        _missing_service(f"{CHROMIUM} not found", "browser", " Install it: make chromium")
    return CHROMIUM
