"""The engine process of ``infinite-scheduler run``: serve the engine (and, with api.port, its
HTTP API) until a stop signal, on uvloop, rejoining as a new epoch if it was declared dead; and
the screen it prints first. cli.py parses the command line and maps errors to exit codes;
benchmarks/engine_app.py and the e2e tests' engine processes run the same loop and signals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infinite_scheduler import __version__
from infinite_scheduler.config import SchedulerConfig, StoreConfig
from infinite_scheduler.demo import LatenessWindow, produce, register_examples, show_status
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import NodeDeclaredDead
from repos.urls import SqliteUrl

if TYPE_CHECKING:
    from infinite_scheduler.api.server import ApiAccess, ApiServer
    from infinite_scheduler.api.services import ApiServices

logger = logging.getLogger(__name__)

#: The exit code of a process stopped by SIGINT before the engine was running, or by a second
#: stop signal.
EXIT_INTERRUPTED = 130
#: The user's ``--app`` function: registers entity types and handlers on the engine.
AppSetup = Callable[[InfiniteScheduler], None]


async def serve(config: SchedulerConfig, *, demo: bool, setup: AppSetup | None) -> None:
    """Run the engine until a stop signal; if another node declares it dead (it stalled past
    node_timeout_s), run a new one, which joins as a new epoch."""
    while True:
        try:
            await _serve_once(config, demo=demo, setup=setup)
            return
        except NodeDeclaredDead as exc:
            logger.warning(
                "%s; rejoining as a new epoch",
                exc,
                extra={"action": "rejoin", "node": exc.node_id, "epoch": exc.epoch},
            )


async def _serve_once(config: SchedulerConfig, *, demo: bool, setup: AppSetup | None) -> None:
    engine = InfiniteScheduler(config)
    lateness = LatenessWindow()
    if demo:
        register_examples(engine, lateness)
    if setup is not None:
        setup(engine)
    async with AsyncExitStack() as stack:
        api = await _api_before_start(config, engine, stack)
        await stack.enter_async_context(engine)
        if api is not None:
            server, access = api
            await server.serve(_engine_services(access, engine))
            stack.push_async_callback(server.stop)  # before the engine stops: no request fails
        with on_stop_signals(engine.stop):
            side = []
            if demo:
                side = [
                    asyncio.create_task(produce(engine, engine.stopping), name="demo-producer"),
                    asyncio.create_task(
                        show_status(engine, lateness, engine.stopping), name="status"
                    ),
                ]
            try:
                await engine.run()
            finally:
                await asyncio.gather(*side, return_exceptions=True)


async def _api_before_start(
    config: SchedulerConfig, engine: InfiniteScheduler, stack: AsyncExitStack
) -> tuple[ApiServer, ApiAccess] | None:
    """With api.port set: listen and check the tokens before the engine claims anything (a
    taken port or no token stops the start, as metrics_port does)."""
    if not config.api.port:
        return None
    from infinite_scheduler.api.server import ApiServer, api_access  # FastAPI: only when on

    server = ApiServer(config.api)
    server.listen()
    stack.push_async_callback(server.stop)
    access = await stack.enter_async_context(api_access(config, clock=engine.clock))
    return server, access


def _engine_services(access: ApiAccess, engine: InfiniteScheduler) -> ApiServices:
    """What the API works on inside the engine: its own repositories, book and pauses."""
    from infinite_scheduler.management import JobService

    jobs = JobService.over(engine.config, engine.repositories, clock=engine.clock)
    return access.services(
        engine.schedules,
        jobs=jobs,
        categories=engine.categories,
        engine=engine.engine_control,
        node_active=_active(engine),
        node_paused=lambda: engine.paused,
    )


def _active(engine: InfiniteScheduler) -> Callable[[], bool]:
    """The API's readiness inside the engine: its node joined, renewing and not stopping."""
    return lambda: not engine.stopping.is_set() and engine.parts.node.may_fire


@contextmanager
def on_stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM call stop(); a second one exits at once (the next start recovers)."""
    loop = asyncio.get_running_loop()
    received = 0

    def handle() -> None:
        nonlocal received
        received += 1
        if received > 1:
            os._exit(EXIT_INTERRUPTED)
        stop()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, handle)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed, else the default asyncio loop; SIGINT exits with code 130.

    What is alive by now (modules, config, the user's app) lives as long as the process:
    gc.freeze() takes it out of every later full collection, each of which otherwise stalls
    the loop, hence every fire due meanwhile, ~30 ms here (W3's max lateness).
    """
    try:
        gc.freeze()
        try:
            import uvloop
        except ImportError:
            asyncio.run(main)
        else:
            uvloop.run(main)
    except KeyboardInterrupt:
        # SIGINT while on_stop_signals is not installed (start-up, or after a stop began): the
        # runner cancelled `main`, which closed what it had opened; the next start recovers
        # any claim left behind.
        sys.stderr.write("infinite-scheduler: interrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None


def summary(config: SchedulerConfig, *, config_path: str, demo: bool) -> str:
    """One screen saying what this node would do; no password ever appears in it."""
    rows = [
        ("config", config_source(config_path) + (" (demo)" if demo else "")),
        ("node", config.resolved_node_id),
        ("store", describe_store(config.store)),
        ("fetch", f"every {config.fetch_interval_s:g} s, lookahead {config.lookahead_s:g} s"),
        ("misfire", f"{config.misfire_policy}, looking back {config.misfire_horizon_s} s"),
        ("shards", f"per {config.shards.granularity}, kept {config.shards.retention_s} s"),
        (
            "cluster",
            f"heartbeat every {config.cluster.heartbeat_interval_s:g} s,"
            f" dead after {config.cluster.node_timeout_s:g} s",
        ),
        ("metrics", f"port {config.metrics_port}" if config.metrics_port else "off"),
        ("api", f"http://{config.api.host}:{config.api.port}/docs" if config.api.port else "off"),
    ]
    body = "".join(f"  {name:<8} {value}\n" for name, value in rows)
    return f"infinite-scheduler {__version__}\n{body}"


def config_source(config_path: str) -> str:
    """The file the settings came from, or that none did (the default path is optional)."""
    # load_config has accepted the path: it only may not exist when it is the unset default.
    if Path(config_path).is_file():
        return config_path
    return f"built-in defaults (no {config_path})"


def describe_store(store: StoreConfig) -> str:
    """Store kind and address, e.g. ``mysql app@db:3306/jobs (multi-table, asyncmy)``."""
    target = store.target
    if isinstance(target, SqliteUrl):
        return f"sqlite {target.path}"
    return (
        f"mysql {target.user}@{target.address}/{target.database} ({store.layout}, {store.driver})"
    )
