"""The engine writes one history row per attempt, with the ack: each outcome it has.

Every test runs on each store of tests/conftest.py's ``backend``; the engine runs in manual
mode on a fake clock (``run_until_idle``), so the times in the rows are exact. The rows are
read back through SchedulerClient, as an operator's tools read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.jobs import JobContext
from repos.base import ShardingRepository
from repos.examples import SMS, SmsEntity
from repos.history import HistoryFilter, Outcome

pytestmark = pytest.mark.timeout(30)

Repo = ShardingRepository[Any, Any]
T0 = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
DAY = 86_400_000


class Backend(Protocol):
    @property
    def layout(self) -> Any: ...

    @property
    def driver(self) -> Any: ...


def sms(i: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def config_of(backend: Backend, backend_url: str) -> Callable[..., SchedulerConfig]:
    def build(**settings: Any) -> SchedulerConfig:
        handlers = {"timeout_s": 2.0, "backoff_base_s": 0.05, "backoff_max_s": 0.2}
        handlers.update(settings.pop("handlers", {}))
        store = {"url": backend_url, "layout": backend.layout, "driver": backend.driver}
        return load_config(
            None,
            store=store,
            handlers=handlers,
            cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
            fetch_interval_s=0.2,
            lookahead_s=0.6,
            metrics_port=0,
            node_id="node-a",
            **settings,
        )

    return build


@pytest.fixture
async def client(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock
) -> AsyncIterator[SchedulerClient]:
    async with SchedulerClient(config_of(), SMS, clock=clock) as opened:
        yield opened


async def run(
    config: SchedulerConfig, clock: FakeClock, handler: Any, steps_ms: tuple[int, ...] = (0,)
) -> InfiniteScheduler:
    engine = InfiniteScheduler(config, clock=clock, manual=True)
    engine.register(SMS, handler)
    async with engine:
        for step_ms in steps_ms:
            clock.advance(step_ms)
            await engine.run_until_idle()
    return engine


def table(rows: Any) -> list[tuple[Any, ...]]:
    """(attempt, outcome, fired_ms, finished_ms, error) of each row, as listed."""
    return [(r.attempt, r.outcome, r.fired_ms, r.finished_ms, r.error) for r in rows]


async def test_a_job_that_succeeds_has_one_ok_row(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        clock.advance(7)  # the handler takes 7 ms of the fake clock

    await run(config_of(), clock, handler)
    [row] = await client.history(SMS, 1)
    assert (row.entity, row.job_id, row.node, row.due_ms) == ("sms", "1", "node-a", T0)
    assert table([row]) == [(1, Outcome.OK, T0, T0 + 7, None)]
    assert (row.duration_ms, row.lateness_ms) == (7, 0)


async def test_retried_attempts_then_success_each_have_a_row_newest_first(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")

    await run(config_of(), clock, handler, steps_ms=(0, 50, 100))
    assert table(await client.history(SMS, 1)) == [
        (3, Outcome.OK, T0 + 150, T0 + 150, None),
        (2, Outcome.RETRY, T0 + 50, T0 + 50, "RuntimeError: boom 2"),
        (1, Outcome.RETRY, T0, T0, "RuntimeError: boom 1"),
    ]


async def test_a_last_attempt_that_fails_has_a_failed_row(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0), sms(2, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        if ctx.job_id == 2:
            raise ValueError("no such phone")

    await run(config_of(handlers={"max_attempts": 1}), clock, handler)
    assert table(await client.history(SMS, 2)) == [
        (1, Outcome.FAILED, T0, T0, "ValueError: no such phone")
    ]
    assert table(await client.history(SMS, 1)) == [(1, Outcome.OK, T0, T0, None)]


async def test_a_last_attempt_that_times_out_has_a_timeout_row(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        await asyncio.sleep(60)

    config = config_of(handlers={"max_attempts": 1, "timeout_s": 0.3})
    await run(config, clock, handler)
    assert table(await client.history(SMS, 1)) == [
        (1, Outcome.TIMEOUT, T0, T0, "handler timed out after 0.3s")
    ]


async def test_a_job_missed_under_do_nothing_has_a_missed_row_never_fired(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0 - 600_000)])
    fired: list[Any] = []

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        fired.append(ctx.job_id)

    config = config_of(misfire_policy="do_nothing", misfire_threshold_s=60)
    await run(config, clock, handler)
    assert fired == []
    [row] = await client.history(SMS, 1)
    assert (row.outcome, row.fired_ms, row.duration_ms, row.finished_ms) == (
        Outcome.MISSED,
        None,
        None,
        T0,
    )


async def test_history_off_writes_no_row_and_makes_no_table(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        pass

    await run(config_of(history={"enabled": False}), clock, handler)
    [stored] = await client.get(SMS, 1)
    assert stored.fired_at_ms == T0  # it fired and was acked
    assert await client.history(SMS, 1) == []
    assert await client.execution_history.store.days() == []


async def test_maintenance_makes_days_ahead_and_drops_them_past_retention(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    await client.schedule([sms(1, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        pass

    engine = InfiniteScheduler(config_of(history={"retention_days": 2}), clock=clock, manual=True)
    engine.register(SMS, handler)
    async with engine:
        await engine.run_until_idle()
        maintenance = engine.parts.maintenance
        report = await maintenance.run_once(T0)
        assert report.history_dropped == ()
        days = [name for _, name in await client.execution_history.store.days()]
        assert days == ["history_20261122", "history_20261123"]
        report = await maintenance.run_once(T0 + 3 * DAY)
    assert report.history_dropped == ("history_20261122",)
    assert await client.history(SMS, 1) == []


async def test_the_sla_of_a_window_counts_what_the_engine_wrote(
    config_of: Callable[..., SchedulerConfig], clock: FakeClock, client: SchedulerClient
) -> None:
    """Jobs 0-3 fire on time, 4 is found 5 s late (the engine started late), 5 fails."""
    await client.schedule([sms(i, T0) for i in range(4)] + [sms(4, T0 - 5000), sms(5, T0)])

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        if ctx.job_id == 5:
            raise RuntimeError("down")

    await run(config_of(handlers={"max_attempts": 1}), clock, handler)
    report = await client.sla(entity=SMS, window_ms=60_000)
    total = report.total
    assert (total.fired, total.ok, total.failed, total.late) == (6, 5, 1, 1)
    assert (total.lateness_p50_ms, total.lateness_p99_ms) == (0, 5000)
    page = await client.history_page(HistoryFilter(outcome=Outcome.FAILED))
    assert [r.job_id for r in page.rows] == ["5"] and page.cursor is None


async def test_bad_reading_arguments_are_refused_clearly(client: SchedulerClient) -> None:
    with pytest.raises(ValueError, match="is not a cursor a history page returned"):
        await client.history_page(cursor="junk")
    with pytest.raises(ValueError, match="window_ms 0 must be a positive int"):
        await client.sla(window_ms=0)
    with pytest.raises(ValueError, match=r"job id 1\.5 must be an int or a str"):
        await client.history(SMS, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit 0 must be an int from 1 to 10000"):
        await client.history_page(limit=0)
    with pytest.raises(ValueError, match="entity '' must be an entity type's name"):
        await client.history("", 1)
    page = await client.history_page(HistoryFilter(entity="sms'; DROP TABLE history_x; --"))
    assert page.rows == () and page.cursor is None
