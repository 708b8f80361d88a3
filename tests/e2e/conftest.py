"""Fixtures of the end-to-end tier: the engine as a real process, against a real store.

- ``mariadb``, ``mysql_database`` / ``mysql_databases`` (from ``tests/conftest.py``): where the
  shared MariaDB listens, and fresh databases ``ist_<8 hex>`` on it, dropped at teardown; an
  unreachable MariaDB fails under ``CI=true``, else skips. ``galera`` / ``galera_database``
  (also from there): the local Galera cluster; its ``Galera`` protocol is declared here.
- ``store``: the parametrised store of a test (``mysql-multi-asyncmy``, ``sqlite``), with its
  config file and a repository handle to seed and inspect.
- ``cluster_store``: a MySQL store for several engine processes (a cluster's short timings),
  with its nodes table to inspect.
- ``engines``: starts ``engine_process.py`` subprocesses (each with a node id and a fires file
  of its own if asked), stops and resumes them; teardown kills whatever is left.
- ``store_proxy``: a TCP proxy in the test's own loop between the engine and MariaDB, whose
  ``cut()`` makes the database vanish for the engine while the shared server keeps running,
  and whose ``freeze_after()`` leaves a connection open and silent after a given statement.

The test modules reach these helpers through fixtures only (``tests`` is not a package, so
nothing here is importable at run time); they import the classes for their annotations under
``TYPE_CHECKING``, where mypy resolves this file as the module ``conftest``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import pytest

from infinite_scheduler.clock import SystemClock
from infinite_scheduler.config import ENV_PREFIX, SchedulerConfig, load_config
from repos.base import RowRef, ShardingRepository, Status, StoredRow
from repos.cluster import Membership, NodeInfo
from repos.examples import SMS, SmsEntity
from repos.registry import make_membership, make_repository

ENGINE_SCRIPT = Path(__file__).with_name("engine_process.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Node id written into every e2e config: a restarted engine is the same node.
NODE_ID = "e2e-node"


class WallClock(SystemClock):
    """The engine's own clock (SystemClock), plus waiting for a moment of the scenario."""

    async def sleep_until(self, at_ms: int) -> None:
        await asyncio.sleep(max(0.0, (at_ms - self.now_ms()) / 1000))


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


def now_ms() -> int:
    return WallClock().now_ms()


# -- MariaDB (the ``mariadb`` and ``mysql_databases`` fixtures of tests/conftest.py) --------


MysqlDatabases = Callable[[], Awaitable[str]]


class MariaDB(Protocol):
    """tests/conftest.py's ``mariadb``: where the shared server listens."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    def url(self, database: str, port: int | None = None) -> str: ...


class RecordedEvents(Protocol):
    """tests/conftest.py's ``recorded_events()``: a StoreEvents that keeps what it heard."""

    failovers: list[tuple[str, str, str]]
    writers: list[str]
    conflicts: list[str]

    def conflict(self, operation: str) -> None: ...

    def failover(self, from_address: str, to_address: str, reason: str) -> None: ...

    def writer(self, address: str) -> None: ...


class Galera(Protocol):
    """tests/conftest.py's ``galera``: the local three-node Galera cluster (scripts/galera.sh)."""

    @property
    def host(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def ports(self) -> tuple[int, ...]: ...

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]: ...

    def url(self, database: str) -> str: ...

    def node_url(self, n: int, database: str) -> str: ...

    def sql(self, n: int, *statements: str) -> list[tuple[Any, ...]]: ...

    def create_database(self) -> str: ...

    def drop_database(self, name: str) -> None: ...

    def kill(self, n: int) -> None: ...

    def start(self, n: int) -> None: ...

    def status(self) -> str: ...

    def error_log(self, n: int) -> str: ...


def write_config(
    path: Path,
    store_url: str,
    *,
    lookahead_s: float = 2,
    near_poll_interval_s: float = 0.5,
    heartbeat_interval_s: float = 0.25,
    node_timeout_s: float = 1,
    galera_multi_writer: bool = False,
    batch_size: int = 1_000,
) -> Path:
    """The e2e settings: fast cadences, no metrics server, a fixed node id (a process started
    with ``Engines.start(node_id=...)`` gets another from its environment, as an operator would
    run several nodes from one file)."""
    path.write_text(
        f'node_id = "{NODE_ID}"\n'
        "fetch_interval_s = 1\n"
        f"lookahead_s = {lookahead_s}\n"
        f"near_poll_interval_s = {near_poll_interval_s}\n"
        f"batch_size = {batch_size}\n"
        "metrics_port = 0\n"
        "[store]\n"
        f'url = "{store_url}"\n'
        f"galera_multi_writer = {str(galera_multi_writer).lower()}\n"
        "[handlers]\n"
        "backoff_base_s = 0.1\n"
        "drain_timeout_s = 2\n"
        "[cluster]\n"
        f"heartbeat_interval_s = {heartbeat_interval_s}\n"
        f"node_timeout_s = {node_timeout_s}\n"
    )
    return path


# -- the store of a test: config file + a repository handle from outside the engine -----------


@dataclass
class Store:
    """One test's store as the engine will see it, plus a handle to seed and inspect it."""

    kind: str
    url: str
    config_path: Path
    config: SchedulerConfig
    repo: ShardingRepository[Any, Any]
    #: The store's nodes table (cluster_store only).
    membership: Membership | None = None

    async def seed(self, due_ms: Iterable[int]) -> dict[int, int]:
        """Insert one SMS per due time (ids 1..n); return id -> due time (epoch ms)."""
        seeded = {i: at for i, at in enumerate(due_ms, start=1)}
        entities = [
            SmsEntity(
                id=i,
                scheduled_at=datetime.fromtimestamp(at / 1000, UTC),
                phone="+15550100",
                message=f"e2e message {i}: " + "x" * 60,
            )
            for i, at in seeded.items()
        ]
        stored = await self.repo.insert(entities, now_ms=now_ms())
        assert stored == len(entities)
        return seeded

    async def rows(
        self, start_ms: int, end_ms: int, status: Status | None = None
    ) -> list[StoredRow]:
        """Every row with sharding time in [start_ms, end_ms), paging through all of them."""
        rows: list[StoredRow] = []
        while True:
            page = await self.repo.page(
                start_ms=start_ms,
                end_ms=end_ms,
                status=status,
                after=RowRef(rows[-1].key, rows[-1].at_ms) if rows else None,
                limit=1000,
            )
            rows.extend(page)
            if len(page) < 1000:
                return rows

    async def nodes(self) -> dict[int, NodeInfo]:
        """Every row of the nodes table (finished ones too), by epoch."""
        assert self.membership is not None, "the nodes table is cluster_store's"
        roster = await self.membership.list_nodes(finished=1_000)
        return {node.epoch: node for node in roster.nodes}


@pytest.fixture(
    params=[pytest.param("mysql-multi-asyncmy", marks=pytest.mark.mysql), pytest.param("sqlite")]
)
async def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    mariadb: MariaDB,
    mysql_databases: MysqlDatabases,
) -> AsyncIterator[Store]:
    """The test's store: MySQL multi-table on asyncmy, or SQLite."""
    kind: str = request.param
    if kind == "sqlite":
        (tmp_path / "store.db").touch()  # the store exists, as a MySQL one would: empty
        url = f"sqlite:///{(tmp_path / 'store.db').resolve()}"
    else:
        url = mariadb.url(await mysql_databases())
    async with _open_store(kind, url, write_config(tmp_path / "config.toml", url)) as opened:
        yield opened


#: A cluster's cadences (tests/e2e/test_three_nodes.py): a node is declared dead 1 s after its last
#: heartbeat, renewed every 0.2 s; a job stored inside a node's window is claimed within 0.1 s.
CLUSTER_TIMINGS: dict[str, Any] = {
    "lookahead_s": 2,
    "near_poll_interval_s": 0.1,
    "heartbeat_interval_s": 0.2,
    "node_timeout_s": 1,
}


@pytest.fixture
async def cluster_store(
    tmp_path: Path, mariadb: MariaDB, mysql_databases: MysqlDatabases
) -> AsyncIterator[Store]:
    """A MySQL store for several engine processes (CLUSTER_TIMINGS), with its nodes table at
    hand (``Store.nodes``). The module using it marks its tests ``mysql``."""
    url = mariadb.url(await mysql_databases())
    config_path = write_config(tmp_path / "config.toml", url, **CLUSTER_TIMINGS)
    async with _open_store("mysql-multi-asyncmy", url, config_path) as opened:
        membership = make_membership(url)
        await membership.open()
        opened.membership = membership
        try:
            yield opened
        finally:
            await membership.close()


@asynccontextmanager
async def _open_store(kind: str, url: str, config_path: Path) -> AsyncIterator[Store]:
    config = load_config(config_path)
    repo = make_repository(url, SMS, config.shard_policy)
    await repo.open()
    try:
        yield Store(kind=kind, url=url, config_path=config_path, config=config, repo=repo)
    finally:
        await repo.close()


# -- engine processes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fire:
    """One line of the fires file: a handler call that completed its write."""

    job_id: int
    attempt: int
    due_ms: int
    fired_ms: int

    @staticmethod
    def by_id(fires: Iterable[Fire]) -> dict[int, list[Fire]]:
        """Fires grouped by job id, each group in the order they were written."""
        grouped: dict[int, list[Fire]] = {}
        for fire in fires:
            grouped.setdefault(fire.job_id, []).append(fire)
        return grouped


def read_fires(path: Path) -> list[Fire]:
    """Complete lines only (a line is one write() of the engine, but be safe about the tail)."""
    if not path.exists():
        return []
    text = path.read_text()
    fires = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        job_id, attempt, due_ms, fired_ms = (int(v) for v in line.split())
        fires.append(Fire(job_id, attempt, due_ms, fired_ms))
    return fires


@dataclass(eq=False)
class EngineProcess:
    """One ``engine_process.py`` run; its stdout and stderr go to files next to the config.

    Once READY, its epoch and node id are known (``wait_ready``)."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    fires_path: Path
    ready_ms: int | None = None
    epoch: int = 0
    node_id: str = ""

    def __repr__(self) -> str:
        return f"<EngineProcess {self.name} pid={self.pid} node={self.node_id} epoch={self.epoch}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def fires(self) -> list[Fire]:
        return read_fires(self.fires_path)

    def fires_by_id(self) -> dict[int, list[Fire]]:
        return Fire.by_id(self.fires())

    async def wait_ready(self, timeout_s: float = 20) -> int:
        """Wait for the READY line; return the engine's own timestamp of it (epoch ms)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.stdout_path.read_text().splitlines():
                if line.startswith("READY"):
                    _, ready_ms, epoch, self.node_id = line.split()
                    self.ready_ms, self.epoch = int(ready_ms), int(epoch)
                    return self.ready_ms
            if not self.alive():
                pytest.fail(
                    f"engine exited with {self.proc.returncode} before READY:\n{self.stderr()}"
                )
            await asyncio.sleep(0.02)
        pytest.fail(f"engine not READY after {timeout_s} s:\n{self.stderr()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def sigstop(self) -> None:
        """Freeze the process (a stall: a long GC pause, a VM migration, a debugger)."""
        self.proc.send_signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    async def wait_exit(self, timeout_s: float = 20) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"engine {self.pid} still running after {timeout_s} s")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, as an operator would; return the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout_s)

    async def wait_fire_count(self, count: int, timeout_s: float) -> int:
        """Wait until the fires file holds `count` fires or timeout_s passed; return how many."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = len(self.fires())
            if seen >= count or time.monotonic() > deadline or not self.alive():
                return seen
            await asyncio.sleep(0.1)

    async def wait_fired(self, ids: Iterable[int], timeout_s: float) -> set[int]:
        """Wait until every id is in the fires file or timeout_s passed; return those missing."""
        missing = set(ids)
        deadline = time.monotonic() + timeout_s
        while True:
            missing -= {f.job_id for f in self.fires()}
            if not missing or time.monotonic() > deadline or not self.alive():
                return missing
            await asyncio.sleep(0.1)


@dataclass
class Engines:
    """Starts engine processes for one test and kills every one still running at teardown."""

    workdir: Path
    started: list[EngineProcess] = field(default_factory=list)

    def start(
        self,
        config_path: Path,
        fires_path: Path | None = None,
        *,
        node_id: str | None = None,
        handler_sleep_ms: int = 0,
        hold_ms: int = 0,
        loop: str = "uvloop",
    ) -> EngineProcess:
        """One more engine process; its fires go to `fires_path` (default: a file of its own,
        so that a test knows which process fired what). `node_id` overrides the config's, as
        an operator running several nodes from one file would (INFINITE_SCHEDULER_NODE_ID)."""
        n = len(self.started) + 1
        name = f"engine-{n}" if node_id is None else f"engine-{n}-{node_id}"
        stdout_path = self.workdir / f"{name}.out"
        stderr_path = self.workdir / f"{name}.err"
        fires_path = fires_path or self.workdir / f"{name}.fires"
        argv = [
            sys.executable,
            str(ENGINE_SCRIPT),
            "--config",
            str(config_path),
            "--fires",
            str(fires_path),
            "--handler-sleep-ms",
            str(handler_sleep_ms),
            "--hold-ms",
            str(hold_ms),
            "--loop",
            loop,
        ]
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
        if node_id is not None:
            env[f"{ENV_PREFIX}NODE_ID"] = node_id
        with _open(stdout_path) as out, _open(stderr_path) as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=PROJECT_ROOT, env=env)
        engine = EngineProcess(name, proc, stdout_path, stderr_path, fires_path)
        self.started.append(engine)
        return engine

    def fires_by_id(self) -> dict[int, list[tuple[EngineProcess, Fire]]]:
        """Every started process's fires (each with its own fires file), by job id: which
        process fired what, in the order the processes were started."""
        grouped: dict[int, list[tuple[EngineProcess, Fire]]] = {}
        for engine in self.started:
            for fire in engine.fires():
                grouped.setdefault(fire.job_id, []).append((engine, fire))
        return grouped

    async def wait_fired(self, ids: Iterable[int], timeout_s: float) -> set[int]:
        """Wait until every id is in some process's fires file or timeout_s passed; return
        those missing."""
        missing = set(ids)
        deadline = time.monotonic() + timeout_s
        while True:
            missing -= set(self.fires_by_id())
            if not missing or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.1)

    def kill_all(self) -> None:
        for engine in self.started:
            if engine.proc.poll() is None:
                engine.proc.kill()
            engine.proc.wait(timeout=10)


def _open(path: Path) -> IO[bytes]:
    return path.open("wb")


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    started = Engines(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


# -- a TCP proxy that can make the database vanish -------------------------------------------


@dataclass(eq=False)
class _Link:
    """One proxied connection: the engine's side and MariaDB's side."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    #: Client -> server bytes not yet parsed into MySQL packets (for trap_next_claim_commit).
    parse_buffer: bytearray = field(default_factory=bytearray)
    claim_in_tx: bool = False
    drop_replies: bool = False
    #: Nothing more goes through, either way (StoreProxy.freeze_after).
    frozen: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


class StoreProxy:
    """engine -> 127.0.0.1:<port> -> MariaDB, in the test's event loop.

    ``cut()`` aborts every open connection and, until ``restore()``, turns new ones away: for
    the engine the database is gone, for every other test it is not. How new connections are
    turned away depends on `mode`:

    - ``"reset"``: accepted, then closed at once, before the server greeting. What a TCP proxy
      or load balancer with its backend down does (docker-proxy for a published port, HAProxy).
    - ``"refuse"``: nothing listens on the port (ECONNREFUSED), as with a stopped server.
    """

    def __init__(self, upstream: MariaDB, mode: str = "reset") -> None:
        if mode not in ("reset", "refuse"):
            raise ValueError(f"mode must be 'reset' or 'refuse', not {mode!r}")
        self.mode = mode
        self.upstream = upstream
        self.port = 0
        self.down = False
        self.accepted = 0
        self.refused = 0  #: connections turned away (counted in "reset" mode only)
        self.trap_fired = False
        self._trap_armed = False
        self._freeze_after: bytes | None = None
        #: Set once a connection froze (freeze_after).
        self.froze = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.upstream.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.upstream.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.down = True
        if self.mode == "refuse" and self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()
        for link in list(self._links):
            link.abort()

    async def restore(self) -> None:
        self.down = False
        if self._server is None:
            await self.start()  # the same port again

    def trap_next_claim_commit(self) -> None:
        """Let the next claim's COMMIT reach MariaDB, then lose its reply and the connection.

        The claim is committed, but the engine sees its connection die mid-statement: the
        "did my commit happen?" case every network outage can produce.
        """
        self._trap_armed = True

    def freeze_after(self, statement: bytes) -> None:
        """Once a statement starting with `statement` has reached MariaDB, nothing more goes
        through on its connection, either way, and the connection stays open: its client
        frozen (SIGSTOP) or cut off by a silent partition right after sending it. MariaDB runs
        the statement; whatever was to follow (a COMMIT) never comes, until close()."""
        self._freeze_after = statement.upper()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.down = True
        for link in list(self._links):
            link.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream.host, self.upstream.port
            )
        except OSError:
            writer.transport.abort()
            return
        link = _Link(client=writer, server=up_writer)
        if self.down:  # cut while we were connecting upstream
            self.refused += 1
            link.abort()
            return
        self.accepted += 1
        self._links.add(link)
        pipes = [
            asyncio.create_task(self._pipe(reader, link, upstream=True)),
            asyncio.create_task(self._pipe(up_reader, link, upstream=False)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.abort()
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._links.discard(link)

    async def _pipe(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        writer = link.server if upstream else link.client
        try:
            while data := await reader.read(65536):
                if link.frozen:
                    continue
                if upstream:
                    self._inspect(link, data)
                elif link.drop_replies:
                    self.trap_fired = True
                    return  # the COMMIT's reply never reaches the engine; the link closes
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    def _inspect(self, link: _Link, data: bytes) -> None:
        """Follow the engine's MySQL packets while a trap is armed (plain text protocol)."""
        if not (self._trap_armed or self._freeze_after):
            link.parse_buffer.clear()
            return
        buf = link.parse_buffer
        buf.extend(data)
        while len(buf) >= 4:
            length = buf[0] | buf[1] << 8 | buf[2] << 16
            if len(buf) < 4 + length:
                break
            payload = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            if not payload or payload[0] != 0x03:  # COM_QUERY
                continue
            query = payload[1:].strip().upper()
            if self._freeze_after and query.startswith(self._freeze_after):
                self._freeze_after = None
                link.frozen = True  # after this data: it holds the statement
                self.froze.set()
            if query.startswith(b"UPDATE") and b"SET STATUS = 1, CLAIM_EPOCH" in query:
                link.claim_in_tx = True
            elif query in (b"BEGIN", b"ROLLBACK"):
                link.claim_in_tx = False
            elif query == b"COMMIT" and link.claim_in_tx and self._trap_armed:
                self._trap_armed = False
                link.drop_replies = True


@pytest.fixture
async def store_proxy(
    request: pytest.FixtureRequest, mariadb: MariaDB
) -> AsyncIterator[StoreProxy]:
    """A running StoreProxy; its mode comes from indirect parametrisation (default "reset")."""
    proxy = StoreProxy(mariadb, getattr(request, "param", "reset"))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def store_proxies(mariadb: MariaDB) -> AsyncIterator[Callable[[str], Awaitable[StoreProxy]]]:
    """Starts StoreProxy's in front of MariaDB (mode "reset" or "refuse"), as many as a test
    wants: several hosts of one multi-host URL; all closed at teardown."""
    started: list[StoreProxy] = []

    async def start(mode: str = "refuse") -> StoreProxy:
        proxy = StoreProxy(mariadb, mode)
        await proxy.start()
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            await proxy.close()


#: Opens a Store whose engines use `url` (a multi-host URL) while its own repository, for
#: seeding and checks, goes to `direct_url`; config extras as write_config's keywords.
StoreFor = Callable[..., Awaitable[Store]]


@pytest.fixture
async def store_for(tmp_path: Path) -> AsyncIterator[StoreFor]:
    """Stores for engines on a URL of the test's making (several hosts: proxies, Galera
    nodes), with CLUSTER_TIMINGS unless told; each closed at teardown."""
    opened: list[Store] = []

    async def open_store(url: str, direct_url: str, **settings: Any) -> Store:
        name = f"config-{len(opened) + 1}.toml"
        config_path = write_config(tmp_path / name, url, **{**CLUSTER_TIMINGS, **settings})
        config = load_config(config_path)
        repo = make_repository(direct_url, SMS, config.shard_policy)
        await repo.open()
        store = Store(kind="multi-host", url=url, config_path=config_path, config=config, repo=repo)
        opened.append(store)
        return store

    try:
        yield open_store
    finally:
        for store in opened:
            await store.repo.close()


@pytest.fixture
async def proxied_store(
    store_proxy: StoreProxy, mariadb: MariaDB, mysql_database: str, tmp_path: Path
) -> AsyncIterator[tuple[Store, StoreProxy]]:
    """A MySQL store the engine reaches through `store_proxy` (its config file says so), while
    the returned `repo` goes straight to MariaDB: seeding and checks never see the outage."""
    config_path = write_config(
        tmp_path / "config.toml", mariadb.url(mysql_database, store_proxy.port)
    )
    config = load_config(config_path)
    repo = make_repository(mariadb.url(mysql_database), SMS, config.shard_policy)
    await repo.open()
    try:
        store = Store(
            kind="mysql-multi-asyncmy-proxied",
            url=mariadb.url(mysql_database, store_proxy.port),
            config_path=config_path,
            config=config,
            repo=repo,
        )
        yield store, store_proxy
    finally:
        await repo.close()
