"""Opening the store: a server that never answers, a store that does not exist, `store init`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import pytest

from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import StoreUnavailable
from infinite_scheduler.jobs import JobContext
from repos.examples import SMS
from repos.registry import Driver

pytestmark = pytest.mark.timeout(60)
DRIVERS: tuple[Driver, ...] = ("asyncmy", "aiomysql")


class SilentServer(Protocol):
    """tests/conftest.py's `silent_server`: accepts connections on 127.0.0.1, never answers."""

    port: int
    accepted: int
    connected: asyncio.Event


def mysql_url(database: str, port: int = 3306) -> str:
    return f"mysql://root@127.0.0.1:{port}/{database}"


async def ignore(ctx: JobContext[Any]) -> None:
    pass


def engine_on(url: str, **store: Any) -> InfiniteScheduler:
    engine = InfiniteScheduler(load_config(None, store={"url": url, **store}, metrics_port=0))
    engine.register(SMS, ignore)
    return engine


# -- connect_timeout_s ----------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_server_that_never_answers_fails_the_start_after_connect_timeout_s(
    silent_server: SilentServer, driver: Driver
) -> None:
    engine = engine_on(mysql_url("jobs", silent_server.port), driver=driver, connect_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        async with asyncio.timeout(15):  # without the bound the handshake read hangs for minutes
            async with engine:
                pass
    elapsed = time.monotonic() - started
    assert str(caught.value) == (
        f"connect (127.0.0.1:{silent_server.port} unreachable) failed: timed out after 1 s"
    )
    assert caught.value.address == f"127.0.0.1:{silent_server.port}"
    assert silent_server.accepted == 1
    assert 1.0 <= elapsed < 2.5
