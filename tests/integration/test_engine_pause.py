"""The engine pause (infinite_scheduler/engine_control.py): a stored fact every node applies,
claiming nothing while it holds and draining what it holds already; resumed, it claims and
fires again. A real engine in manual mode on the fake clock, on every store; then two real
engines on MariaDB, one paused through a client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from infinite_scheduler import InfiniteScheduler, SchedulerClient, SchedulerConfig, load_config
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.management import JobService
from repos.examples import SMS, SmsEntity

T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)


def sms(key: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=key, scheduled_at=at, phone="+1555", message="m")


@pytest.fixture
def config(backend: Any, backend_url: str) -> SchedulerConfig:
    store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
    return load_config(None, store=store, metrics_port=0, node_id="node-a")


@pytest.fixture
async def engine(
    config: SchedulerConfig,
) -> AsyncIterator[tuple[InfiniteScheduler, FakeClock, list[int]]]:
    clock = FakeClock(T0)
    fired: list[int] = []
    engine = InfiniteScheduler(config, clock=clock, manual=True)
    engine.register(SMS, lambda ctx: fired.append(ctx.entity.id))
    async with engine:
        yield engine, clock, fired


async def test_paused_it_claims_nothing_drains_what_it_holds_and_resumed_fires_the_rest(
    engine: tuple[InfiniteScheduler, FakeClock, list[int]], config: SchedulerConfig
) -> None:
    node, clock, fired = engine
    async with (
        SchedulerClient(config, SMS, clock=clock) as client,
        JobService(config, SMS, clock=clock) as jobs,
    ):
        await node.schedule([sms(1, T0 + 2000)])  # inside the window: held by the node
        await node.run_until_idle()
        assert (await jobs.get_job("sms", 1)).state == "CLAIMED"
        await client.engine_control.pause()
        assert await client.engine_control.paused_since() == T0
        await node.run_until_idle()  # its heartbeat's read of the pause
        assert node.paused
        await client.schedule([sms(2, T0 + 3000)])  # stored by another process
        await node.schedule([sms(3, T0 + 3000)])  # by the paused node itself: not held
        clock.advance(5000)
        await node.run_until_idle()
        assert fired == [1], "the held job drained; nothing new claimed"
        assert {(await jobs.get_job("sms", k)).state for k in (2, 3)} == {"PENDING"}
        await client.engine_control.resume()
        await node.run_until_idle()
        assert not node.paused
        assert sorted(fired) == [1, 2, 3]
        assert await client.engine_control.paused_since() is None


async def test_a_pause_through_the_engine_applies_at_once_and_an_engine_starts_paused(
    config: SchedulerConfig,
) -> None:
    clock = FakeClock(T0)
    fired: list[int] = []
    first = InfiniteScheduler(config, clock=clock, manual=True)
    first.register(SMS, lambda ctx: fired.append(ctx.entity.id))
    async with first:
        await first.engine_control.pause()
        assert first.paused, "its own node, before any heartbeat"
    async with SchedulerClient(config, SMS, clock=clock) as client:
        await client.schedule([sms(1, T0 + 1000)])
    again = InfiniteScheduler(config, clock=clock, manual=True)
    again.register(SMS, lambda ctx: fired.append(ctx.entity.id))
    async with again:
        assert again.paused, "read at the start, before the first fetch"
        clock.advance(2000)
        await again.run_until_idle()
        assert fired == []
        await again.engine_control.resume()
        await again.run_until_idle()
        assert fired == [1]


async def test_categories_do_not_list_the_engine_pause(config: SchedulerConfig) -> None:
    async with SchedulerClient(config, SMS, clock=FakeClock(T0)) as client:
        await client.engine_control.pause()
        assert await client.categories.paused() == {}


@pytest.mark.mysql
@pytest.mark.parametrize("store_url", ["mysql"], indirect=True)
async def test_a_pause_through_a_client_stops_the_other_nodes_claiming(store_url: str) -> None:
    """Two engines on one MariaDB store, real clocks, one-second heartbeats: after a pause
    (and a heartbeat), jobs due now stay PENDING on both; resumed, they fire."""
    fired: list[int] = []
    all_fired = asyncio.Event()

    def fire(key: int) -> None:
        fired.append(key)
        if len(fired) == 5:
            all_fired.set()

    def node(name: str) -> InfiniteScheduler:
        config = load_config(
            None,
            store={"url": store_url},
            metrics_port=0,
            node_id=name,
            cluster={"heartbeat_interval_s": 1},
        )
        engine = InfiniteScheduler(config)
        engine.register(SMS, lambda ctx: fire(ctx.entity.id))
        return engine

    a, b = node("node-a"), node("node-b")
    async with a, b, SchedulerClient(a.config, SMS) as client:
        await client.engine_control.pause()
        await asyncio.sleep(1.5)  # each node's next heartbeat reads it
        assert a.paused and b.paused
        now_ms = client.clock.now_ms()
        await client.schedule([sms(k, now_ms + 200) for k in range(1, 6)])
        await asyncio.sleep(1.5)
        assert fired == []
        async with JobService(a.config, SMS) as jobs:
            states = {(await jobs.get_job("sms", k)).state for k in range(1, 6)}
        assert states == {"PENDING"}
        await client.engine_control.resume()
        async with asyncio.timeout(5):
            await all_fired.wait()
        assert sorted(fired) == [1, 2, 3, 4, 5]
