"""Serving the API: inside the engine's process (``run``, when api.port is not 0) or alone
(``infinite-scheduler api``), on the running event loop, by uvicorn.

The start checks what must hold before anything listens: the port is free (PortUnavailable,
as for metrics_port), and a token is stored, unless the API is told to run open
(api.allow_open) on 127.0.0.1 (ConfigError otherwise: nobody could use it, or everybody could).
Signals stay the CLI's (on_stop_signals): uvicorn's own handlers are not installed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import uvicorn

from infinite_scheduler.api.app import create_app
from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.services import ApiServices
from infinite_scheduler.api.store_views import StoreViews
from infinite_scheduler.api.tokens import TokenBook
from infinite_scheduler.categories import Categories
from infinite_scheduler.clock import Clock, SystemClock
from infinite_scheduler.config import LOCALHOST, ApiConfig, SchedulerConfig
from infinite_scheduler.config_errors import ConfigProblem
from infinite_scheduler.engine_control import EngineControl
from infinite_scheduler.errors import ConfigError, PortUnavailable
from infinite_scheduler.history import ExecutionHistory
from infinite_scheduler.management import JobService
from infinite_scheduler.schedules.book import ScheduleBook
from infinite_scheduler.stores import store_access, store_history, store_membership
from repos.access import AccessStore
from repos.cluster import Membership

logger = logging.getLogger(__name__)
NO_TOKEN = (
    "no API token is stored: make one with `infinite-scheduler tokens create --name NAME"
    " --role ADMIN`, set api.port = 0 to run without the API, or api.allow_open = true"
    f" (host {LOCALHOST} only) to serve it without tokens"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiAccess:
    """The store's access tables, opened and checked: the API may start."""

    store: AccessStore
    auditor: Auditor
    tokens: TokenBook
    #: No token stored and api.allow_open: requests without a token act as ADMIN.
    open_access: bool
    #: The nodes table and the history (None: [history] is off), for the store views.
    membership: Membership | None = None
    history: ExecutionHistory | None = None
    node_timeout_ms: int = 0
    clock: Clock = field(default_factory=SystemClock)

    def views(self, schedules: ScheduleBook) -> StoreViews | None:
        """The dashboard's views of the store, over the entity types `schedules` serves."""
        if self.membership is None:
            return None
        return StoreViews(
            self.membership,
            schedules.repositories,
            self.history,
            clock=self.clock,
            node_timeout_ms=self.node_timeout_ms,
        )

    def services(
        self,
        schedules: ScheduleBook,
        *,
        jobs: JobService,
        categories: Categories,
        engine: EngineControl,
        node_active: Callable[[], bool] | None = None,
        node_paused: Callable[[], bool] | None = None,
    ) -> ApiServices:
        return ApiServices(
            schedules=schedules,
            jobs=jobs,
            categories=categories,
            engine=engine,
            node_paused=node_paused,
            access=self.store,
            tokens=self.tokens,
            auditor=self.auditor,
            open_access=self.open_access,
            node_active=node_active,
            views=self.views(schedules),
        )


@asynccontextmanager
async def api_access(config: SchedulerConfig, *, clock: Clock) -> AsyncIterator[ApiAccess]:
    """The configured store's access tables, open while inside; ConfigError when no token is
    stored and the API may not run open."""
    async with AsyncExitStack() as stack:
        store = store_access(config)
        await store.open()
        stack.push_async_callback(store.close)
        open_access = may_run_open(config.api, await store.live_tokens())
        auditor = Auditor(store, clock=clock)
        tokens = TokenBook(store, auditor, clock=clock)
        membership = store_membership(config)
        await membership.open()
        stack.push_async_callback(membership.close)
        history = None
        if config.history.enabled:
            history_store = store_history(config)
            await history_store.open()
            stack.push_async_callback(history_store.close)
            history = ExecutionHistory(
                history_store, clock=clock, late_threshold_ms=config.history.late_threshold_ms
            )
        yield ApiAccess(
            store=store,
            auditor=auditor,
            tokens=tokens,
            open_access=open_access,
            membership=membership,
            history=history,
            node_timeout_ms=config.cluster.node_timeout_ms,
            clock=clock,
        )


def may_run_open(api: ApiConfig, live_tokens: int) -> bool:
    """Whether the API serves requests without a token: only with none stored, allow_open and
    127.0.0.1; ConfigError when none is stored and it may not."""
    if live_tokens:
        return False
    if api.allow_open and api.host == LOCALHOST:
        logger.warning(
            "the API serves requests without a token (api.allow_open, no token stored) on %s",
            api.host,
            extra={"action": "api-open"},
        )
        return True
    problem = ConfigProblem(key="api.allow_open", value="false", source="store", reason=NO_TOKEN)
    raise ConfigError([problem])


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the CLI's on_stop_signals owns the signals."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.up.set()


class ApiServer:
    """The API on api.host:api.port: listen() first (before the engine claims anything, as
    for metrics_port), serve() once the services are there, from a task of the running loop."""

    def __init__(self, api: ApiConfig) -> None:
        self._api = api
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (api.port, or the one the system chose for port 0)."""
        assert self._socket is not None
        port: int = self._socket.getsockname()[1]
        return port

    def listen(self) -> None:
        """Bind and listen; PortUnavailable naming api.port if it cannot."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._api.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._api.host, self._api.port))
        except OSError as exc:
            sock.close()
            raise PortUnavailable("api.port", self._api.port, exc) from exc
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock

    async def serve(self, services: ApiServices) -> None:
        """Serve requests from a task; returns once it answers."""
        if self._socket is None:
            self.listen()
        assert self._socket is not None
        app = create_app(services, max_body_bytes=self._api.max_body_bytes)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        server = self._server = _Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[self._socket]), name="api")
        up = asyncio.create_task(server.up.wait())
        await asyncio.wait([up, self._task], return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        if self._task.done():
            self._task.result()  # why it could not start

    async def stop(self) -> None:
        """Stop taking requests, finish those running, close the socket. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        task, self._task = self._task, None
        if task is not None:
            await task
        if self._socket is not None:
            self._socket.close()
            self._socket = None
