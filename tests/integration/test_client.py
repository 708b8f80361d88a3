"""SchedulerClient: jobs stored, cancelled and looked up without an engine, on every store."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infinite_scheduler import (
    ClientNotOpen,
    DuplicateJob,
    EntitySpecError,
    InfiniteScheduler,
    JobContext,
    SchedulerClient,
    SchedulerConfig,
    Status,
    load_config,
)
from repos.examples import SMS, SmsEntity


@pytest.fixture
def config(backend: Any, backend_url: str) -> SchedulerConfig:
    store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
    return load_config(None, store=store, metrics_port=0)


def sms(i: int, in_s: float = 60) -> SmsEntity:
    at = datetime.now(UTC) + timedelta(seconds=in_s)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


async def test_jobs_are_stored_pending_found_by_id_and_cancelled(config: SchedulerConfig) -> None:
    async with SchedulerClient(config, SMS) as client:
        assert await client.schedule([sms(1), sms(2)]) == 2
        [row] = await client.get(SMS, 1)
        assert (row.status, row.claimed_by, row.attempts) == (Status.PENDING, None, 0)
        assert await client.cancel(SMS, [1]) == 1
        assert [r.status for r in await client.get(SMS, 1)] == [Status.CANCELLED]
        assert [r.status for r in await client.get(SMS, 2)] == [Status.PENDING]
        assert await client.get(SMS, 3) == []


async def test_a_duplicate_id_is_refused_and_the_stored_job_is_unchanged(
    config: SchedulerConfig,
) -> None:
    async with SchedulerClient(config, SMS) as client:
        await client.schedule([sms(1)])
        [before] = await client.get(SMS, 1)
        with pytest.raises(DuplicateJob):
            await client.schedule([sms(1, in_s=120)])
        assert await client.get(SMS, 1) == [before]
        assert await client.schedule([sms(1, in_s=120)], on_duplicate="ignore") == 0


class Unknown:
    pass


async def test_an_entity_of_a_type_not_given_is_refused_and_nothing_is_stored(
    config: SchedulerConfig,
) -> None:
    async with SchedulerClient(config, SMS) as client:
        with pytest.raises(EntitySpecError) as caught:
            await client.schedule([sms(1), Unknown()])
        assert str(caught.value) == (
            "entity type(s) 'Unknown' not given to this SchedulerClient; "
            "pass their EntitySpec when making it"
        )
        assert await client.get(SMS, 1) == []


async def test_a_client_not_open_refuses_every_operation(config: SchedulerConfig) -> None:
    client = SchedulerClient(config, SMS)
    with pytest.raises(ClientNotOpen) as caught:
        await client.schedule([sms(1)])
    assert str(caught.value) == (
        "schedule() needs an open client: call it inside `async with client:`"
    )
    async with client:
        pass
    with pytest.raises(ClientNotOpen):
        await client.cancel(SMS, [1])
    with pytest.raises(ClientNotOpen):
        await client.get(SMS, 1)


def test_a_client_without_entity_types_is_refused() -> None:
    with pytest.raises(EntitySpecError, match="at least one EntitySpec"):
        SchedulerClient(load_config(None, metrics_port=0))


async def test_a_job_stored_by_a_client_inside_a_nodes_window_fires_on_time(
    backend: Any, backend_url: str
) -> None:
    """The node's rounds are 5 s apart; the near poll (0.1 s) claims the client's job, due
    0.6 s after it was stored inside the window claimed already, and it fires on time."""
    store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
    config = load_config(
        None,
        store=store,
        metrics_port=0,
        fetch_interval_s=5,
        lookahead_s=6,
        near_poll_interval_s=0.1,
        cluster={"heartbeat_interval_s": 1, "node_timeout_s": 5},
    )
    fired: asyncio.Queue[tuple[int | str, float]] = asyncio.Queue()

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        fired.put_nowait((ctx.job_id, time.time()))

    engine = InfiniteScheduler(config)
    engine.register(SMS, handler)
    async with engine, SchedulerClient(config, SMS) as client:
        await asyncio.sleep(0.3)  # the start's round has claimed its window
        job = sms(1, in_s=0.6)
        await client.schedule([job])
        async with asyncio.timeout(3):
            job_id, at = await fired.get()
    assert job_id == 1
    assert at - job.scheduled_at.timestamp() < 0.5  # not the next round, 5 s on
