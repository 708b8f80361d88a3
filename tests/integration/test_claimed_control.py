"""A cancel or pause from the job service reaches a job an engine holds already, payload read,
when it lands at least a second before the job is due: the engine drops it from its wheel
(infinite_scheduler/revocations.py). A real engine in manual mode on the fake clock, on every
store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infinite_scheduler import InfiniteScheduler, SchedulerConfig, load_config
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.management import JobService
from repos.examples import SMS, SmsEntity

T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def config(backend: Any, backend_url: str) -> SchedulerConfig:
    store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
    return load_config(None, store=store, metrics_port=0, node_id="node-a")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def running(
    config: SchedulerConfig, clock: FakeClock
) -> AsyncIterator[tuple[InfiniteScheduler, JobService, list[int]]]:
    """An engine holding job 1 (due at T0 + 5 s, its payload read: within payload_ahead_s) and
    a job service on the same store and clock; the ids the handler fired."""
    fired: list[int] = []
    engine = InfiniteScheduler(config, clock=clock, manual=True)
    engine.register(SMS, lambda ctx: fired.append(ctx.entity.id))
    async with engine, JobService(config, SMS, clock=clock) as jobs:
        at = datetime.fromtimestamp((T0 + 5000) / 1000, UTC)
        await engine.schedule([SmsEntity(id=1, scheduled_at=at, phone="+1555", message="m")])
        await engine.run_until_idle()
        held = engine.parts.lanes["sms"].wheel.get(1)
        assert held is not None and held[4] is not None, "held, payload read"
        assert (await jobs.get_job("sms", 1)).state == "CLAIMED"
        yield engine, jobs, fired


async def test_a_cancel_a_second_ahead_stops_the_job_its_node_holds(
    running: tuple[InfiniteScheduler, JobService, list[int]], clock: FakeClock
) -> None:
    engine, jobs, fired = running
    clock.advance(4000 - 1)  # due in 1001 ms
    assert (await jobs.cancel("sms", 1)).state == "CANCELLED"
    await engine.run_until_idle()
    assert engine.parts.lanes["sms"].wheel.get(1) is None
    clock.advance(2000)
    await engine.run_until_idle()
    assert fired == []
    assert engine.parts.revoker.dropped == 1
    assert (await jobs.get_job("sms", 1)).state == "CANCELLED"


async def test_a_pause_stops_it_and_a_resume_fires_it_once(
    running: tuple[InfiniteScheduler, JobService, list[int]], clock: FakeClock
) -> None:
    engine, jobs, fired = running
    clock.advance(3000)
    paused = await jobs.pause("sms", 1)
    assert (paused.state, paused.claimed_by, paused.attempts) == ("PAUSED", None, 0)
    clock.advance(3000)  # past its time
    await engine.run_until_idle()
    assert fired == []
    await jobs.resume("sms", 1)
    await engine.run_until_idle()
    assert fired == [1]
    job = await jobs.get_job("sms", 1)
    assert (job.state, job.attempts) == ("DONE", 1)
    clock.advance(timedelta(minutes=1) // timedelta(milliseconds=1))
    await engine.run_until_idle()
    assert fired == [1]
