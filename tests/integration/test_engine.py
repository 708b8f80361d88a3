"""The engine against real stores: order, exactly-once, fire-once-now, retries, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infinite_scheduler.config import load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import (
    EngineNotRunning,
    HandlerMissing,
    PayloadTooLarge,
    PortUnavailable,
)
from infinite_scheduler.jobs import JobContext
from repos.base import FINISHED, ShardingRepository, Status
from repos.entity import EntitySpec
from repos.errors import StoreUnavailable
from repos.examples import SMS, SmsEntity
from repos.registry import make_repository

pytestmark = pytest.mark.timeout(30)


@dataclass(frozen=True, kw_only=True)
class SmsWithCountry:
    """SmsEntity plus a field stored rows do not have: their payload no longer decodes."""

    id: int
    scheduled_at: datetime
    phone: str
    message: str
    country: str


SMS_V2 = EntitySpec.of(SmsWithCountry, name="sms")


class Recorder:
    """A handler that records every fire: (id, attempt, due, fired) in fire order."""

    def __init__(self, fail_attempts: int = 0, fail_ids: frozenset[int] = frozenset()) -> None:
        self.fires: list[tuple[Any, int, datetime, float]] = []
        self.fail_attempts = fail_attempts
        self.fail_ids = fail_ids
        self.changed = asyncio.Event()

    async def __call__(self, ctx: JobContext[Any]) -> None:
        self.fires.append((ctx.job_id, ctx.attempt, ctx.due_at, time.time()))
        self.changed.set()
        if ctx.attempt <= self.fail_attempts or ctx.job_id in self.fail_ids:
            raise RuntimeError(f"boom {ctx.job_id}/{ctx.attempt}")

    def ids(self) -> list[Any]:
        return [f[0] for f in self.fires]

    async def wait_for(self, count: int, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.fires) < count:
                self.changed.clear()
                await self.changed.wait()


def sms(i: int, at: datetime) -> SmsEntity:
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


def now() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


EngineFactory = Callable[..., InfiniteScheduler]


@pytest.fixture
async def engine_factory(store_url: str) -> AsyncIterator[EngineFactory]:
    """Build engines on the test's store with fast cadences; settings may be overridden."""

    def build(
        *,
        handler: Any = None,
        spec: EntitySpec[Any, Any] = SMS,
        repository: ShardingRepository[Any, Any] | None = None,
        **settings: Any,
    ) -> InfiniteScheduler:
        defaults: dict[str, Any] = {
            "fetch_interval_s": 0.2,
            "lookahead_s": 0.6,
            "metrics_port": 0,
            "node_id": "node-a",
        }
        handlers = {
            "timeout_s": 2.0,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "drain_timeout_s": 1.0,
        }
        handlers.update(settings.pop("handlers", {}))
        store = {"url": store_url, **settings.pop("store", {})}
        config = load_config(None, store=store, handlers=handlers, **{**defaults, **settings})
        engine = InfiniteScheduler(config)
        engine.register(spec, handler, repository=repository)
        return engine

    yield build


@pytest.fixture
async def repo(store_url: str) -> AsyncIterator[ShardingRepository[Any, Any]]:
    """A second handle on the same store, to seed rows and inspect them from outside."""
    config = load_config(None, store={"url": store_url}, metrics_port=0)
    repository = make_repository(store_url, SMS, config.shard_policy)
    await repository.open()
    yield repository
    await repository.close()


async def statuses(repo: ShardingRepository[Any, Any], ids: list[int]) -> dict[int, Status | int]:
    result = {}
    for i in ids:
        rows = await repo.get(i)
        result[i] = rows[0].status
    return result


async def test_jobs_fire_once_in_due_order_and_never_early(
    engine_factory: EngineFactory, repo: Any
) -> None:
    base = now() + timedelta(milliseconds=400)
    order = [7, 3, 9, 1, 5, 2, 8, 4, 6, 0]
    await repo.insert(
        [sms(i, base + timedelta(milliseconds=40 * i)) for i in order], now_ms=now_ms()
    )
    recorder = Recorder()
    async with engine_factory(handler=recorder):
        await recorder.wait_for(10)
        await asyncio.sleep(0.3)
    assert recorder.ids() == sorted(order)
    for _, _, due, fired in recorder.fires:
        assert fired >= due.timestamp() - 0.002  # never early (1 ms tick, ms-rounded clocks)
    assert set((await statuses(repo, order)).values()) == {Status.DONE}


async def test_job_scheduled_inside_the_window_fires_before_the_next_fetch(
    engine_factory: EngineFactory,
) -> None:
    recorder = Recorder()
    engine = engine_factory(
        handler=recorder, fetch_interval_s=20, lookahead_s=30, misfire_horizon_s=3600
    )
    async with engine:
        started = time.monotonic()
        await engine.schedule([sms(1, now() + timedelta(milliseconds=300))])
        await recorder.wait_for(1, timeout_s=5)
        assert time.monotonic() - started < 3  # the next fetch is 20 s away
    assert recorder.ids() == [1]


async def test_jobs_due_while_stopped_fire_once_at_start_oldest_first(
    engine_factory: EngineFactory, repo: Any
) -> None:
    past = now() - timedelta(hours=2)
    ids = list(range(50))
    await repo.insert(
        [sms(i, past + timedelta(seconds=60 * (50 - i))) for i in ids], now_ms=now_ms()
    )
    recorder = Recorder()
    async with engine_factory(handler=recorder):
        await recorder.wait_for(50)
        await asyncio.sleep(0.5)
    assert recorder.ids() == sorted(ids, reverse=True)  # oldest due first
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}


async def test_do_nothing_policy_marks_misfired_jobs_missed_and_fires_the_rest(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert(
        [sms(1, now() - timedelta(minutes=10)), sms(2, now() - timedelta(seconds=1))],
        now_ms=now_ms(),
    )
    recorder = Recorder()
    async with engine_factory(
        handler=recorder, misfire_policy="do_nothing", misfire_threshold_s=60
    ):
        await recorder.wait_for(1)
        await asyncio.sleep(0.3)
    assert recorder.ids() == [2]
    [row] = await repo.get(1)
    assert row.status is Status.MISSED and "misfired" in (row.last_error or "")


async def test_claims_left_by_a_crashed_run_fire_once_at_start(
    engine_factory: EngineFactory, repo: Any
) -> None:
    due = now() - timedelta(seconds=5)
    await repo.insert([sms(i, due) for i in range(5)], now_ms=now_ms(), claimed_by="crashed-node")
    recorder = Recorder()
    async with engine_factory(handler=recorder):
        await recorder.wait_for(5)
        await asyncio.sleep(0.3)
    assert sorted(recorder.ids()) == list(range(5))


async def test_failed_attempts_retry_with_backoff_then_succeed(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(1, now())], now_ms=now_ms())
    recorder = Recorder(fail_attempts=2)
    async with engine_factory(handler=recorder, handlers={"max_attempts": 5}):
        await recorder.wait_for(3)
        await asyncio.sleep(0.3)
    attempts = [f[1] for f in recorder.fires]
    assert attempts == [1, 2, 3]
    gaps = [b[3] - a[3] for a, b in zip(recorder.fires, recorder.fires[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # backoff 0.05 s, then doubled (ms clocks)
    [row] = await repo.get(1)
    assert row.status is Status.DONE and row.attempts == 3


async def test_job_without_attempts_left_is_failed_with_its_error_and_others_fire(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(i, now()) for i in range(4)], now_ms=now_ms())
    recorder = Recorder(fail_ids=frozenset({2}))
    async with engine_factory(handler=recorder, handlers={"max_attempts": 2}):
        await recorder.wait_for(5)
        await asyncio.sleep(0.3)
    assert sorted(recorder.ids()) == [0, 1, 2, 2, 3]
    [row] = await repo.get(2)
    assert row.status is Status.FAILED and row.attempts == 2
    assert row.last_error is not None and "boom 2/2" in row.last_error
    assert (await statuses(repo, [0, 1, 3])) == {0: Status.DONE, 1: Status.DONE, 3: Status.DONE}


async def test_hanging_handler_times_out_and_only_its_job_fails(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(i, now()) for i in range(3)], now_ms=now_ms())
    done: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> object:
        if ctx.job_id == 1:
            await asyncio.sleep(60)
        done.append(ctx.job_id)
        return object()  # garbage return values are ignored

    async with engine_factory(handler=handler, handlers={"timeout_s": 0.3, "max_attempts": 1}):
        await asyncio.sleep(1.2)
    assert sorted(done) == [0, 2]
    [row] = await repo.get(1)
    assert row.status is Status.FAILED and "timed out" in (row.last_error or "")


async def test_sync_handler_runs_in_a_thread(engine_factory: EngineFactory, repo: Any) -> None:
    await repo.insert([sms(i, now()) for i in range(3)], now_ms=now_ms())
    seen: list[int | str] = []

    def handler(ctx: JobContext[SmsEntity]) -> None:
        time.sleep(0.01)  # blocking is fine: it runs off the loop
        seen.append(ctx.job_id)

    async with engine_factory(handler=handler):
        await asyncio.sleep(0.8)
    assert sorted(seen) == [0, 1, 2]


async def test_payload_that_no_longer_decodes_fails_that_job_only(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(i, now()) for i in range(3)], now_ms=now_ms())
    recorder = Recorder()
    async with engine_factory(handler=recorder, spec=SMS_V2):
        await asyncio.sleep(0.8)
    assert recorder.fires == []  # every stored row lacks `country`
    rows = [(await repo.get(i))[0] for i in range(3)]
    assert {r.status for r in rows} == {Status.FAILED}
    assert all("payload does not decode" in (r.last_error or "") for r in rows)


async def test_graceful_stop_hands_unfired_claims_back(
    engine_factory: EngineFactory, repo: Any
) -> None:
    due = now() + timedelta(seconds=20)
    await repo.insert([sms(i, due) for i in range(10)], now_ms=now_ms())
    recorder = Recorder()
    engine = engine_factory(handler=recorder, fetch_interval_s=5, lookahead_s=30)
    async with engine:
        assert engine.held() == 10
        [row] = await repo.get(3)
        assert row.status is Status.CLAIMED and row.claimed_by == "node-a"
    rows = [(await repo.get(i))[0] for i in range(10)]
    assert {(r.status, r.claimed_by, r.attempts) for r in rows} == {(Status.PENDING, None, 0)}
    assert recorder.fires == []


async def test_a_backlog_beyond_max_held_waits_in_the_store_and_all_of_it_fires_once(
    engine_factory: EngineFactory, repo: Any
) -> None:
    """Invariant 4: memory holds at most max_held jobs, however many are due."""
    await repo.insert([sms(i, now() - timedelta(seconds=5)) for i in range(300)], now_ms=now_ms())
    release = asyncio.Event()
    fired: list[int | str] = []

    async def slow(ctx: JobContext[SmsEntity]) -> None:
        await release.wait()
        fired.append(ctx.job_id)

    engine = engine_factory(
        handler=slow, max_held=40, max_jobs_per_fetch=40, batch_size=15, handlers={"timeout_s": 30}
    )
    async with engine:
        peak = 0
        for _ in range(40):  # 0.4 s: several fetch rounds, all of them finding no room
            peak = max(peak, engine.held())
            await asyncio.sleep(0.01)
        assert peak == 40
        claimed = [s for s in (await statuses(repo, list(range(300)))).values()]
        assert claimed.count(Status.CLAIMED) == 40 and claimed.count(Status.PENDING) == 260
        release.set()
        async with asyncio.timeout(20):
            while len(fired) < 300:
                peak = max(peak, engine.held())
                await asyncio.sleep(0.005)
    assert peak <= 40
    assert sorted(fired) == list(range(300))  # each exactly once


async def test_cancel_removes_a_held_job(engine_factory: EngineFactory, repo: Any) -> None:
    recorder = Recorder()
    engine = engine_factory(handler=recorder)
    async with engine:
        await engine.schedule(
            [
                sms(1, now() + timedelta(milliseconds=400)),
                sms(2, now() + timedelta(milliseconds=400)),
            ]
        )
        assert await engine.cancel(SMS, [1]) == 1
        await recorder.wait_for(1)
        await asyncio.sleep(0.6)
    assert recorder.ids() == [2]
    [row] = await repo.get(1)
    assert row.status is Status.CANCELLED


async def test_missing_handler_is_refused_at_start_and_nothing_changes(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(1, now())], now_ms=now_ms())
    engine = engine_factory(handler=None)
    with pytest.raises(HandlerMissing, match="sms"):
        async with engine:
            pass
    [row] = await repo.get(1)
    assert row.status is Status.PENDING and row.attempts == 0


SCHEDULE_NOT_RUNNING = (
    "schedule() needs a running engine: call it inside `async with engine:` "
    "(to store jobs without an engine, use the repository's insert())"
)
CANCEL_NOT_RUNNING = (
    "cancel() needs a running engine: call it inside `async with engine:` "
    "(to cancel jobs without an engine, use the repository's cancel())"
)


async def test_schedule_and_cancel_outside_async_with_are_refused_and_change_nothing(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(1, now() + timedelta(hours=1))], now_ms=now_ms())
    [before] = await repo.get(1)
    engine = engine_factory(handler=Recorder())
    for phase in ("before", "after"):
        with pytest.raises(EngineNotRunning) as scheduling:
            await engine.schedule([sms(2, now() + timedelta(seconds=1))])
        assert str(scheduling.value) == SCHEDULE_NOT_RUNNING, phase
        with pytest.raises(EngineNotRunning) as cancelling:
            await engine.cancel(SMS, [1])
        assert str(cancelling.value) == CANCEL_NOT_RUNNING, phase
        assert await repo.get(2) == [] and await repo.get(1) == [before], phase
        if phase == "before":
            async with engine:
                pass


class OpenSpy:
    """The real repository, counting open() calls."""

    def __init__(self, repo: ShardingRepository[Any, Any]) -> None:
        self.repo = repo
        self.opened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def open(self) -> None:
        self.opened += 1
        await self.repo.open()


async def test_metrics_port_in_use_stops_the_start_before_any_store_opens(
    engine_factory: EngineFactory, repo: Any, store_url: str
) -> None:
    ids = list(range(1, 6))
    await repo.insert([sms(i, now() - timedelta(seconds=1)) for i in ids], now_ms=now_ms())
    spy = OpenSpy(make_repository(store_url, SMS, repo.policy))
    recorder = Recorder()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = engine_factory(handler=recorder, repository=spy, metrics_port=port)
        with pytest.raises(PortUnavailable) as caught:
            async with engine:
                pass
    assert str(caught.value) == (
        f"metrics_port = {port}: port already in use ([Errno 98] Address already in use); "
        "free it or choose another port (0 turns the endpoint off)"
    )
    assert spy.opened == 0 and recorder.fires == []
    rows = [(await repo.get(i))[0] for i in ids]
    assert {(r.status, r.claimed_by, r.attempts) for r in rows} == {(Status.PENDING, None, 0)}


async def test_schedule_with_a_payload_over_the_limit_stores_none_of_the_call(
    engine_factory: EngineFactory, repo: Any
) -> None:
    recorder = Recorder()
    engine = engine_factory(handler=recorder, store={"max_payload_bytes": 200})
    later = sms(1, now() + timedelta(hours=1))  # stored first, by an insert of its own
    soon = SmsEntity(id=2, scheduled_at=now(), phone="+15550100", message="x" * 200)
    async with engine:
        with pytest.raises(PayloadTooLarge) as caught:
            await engine.schedule([later, soon])
        await asyncio.sleep(0.3)
    assert str(caught.value) == (
        "entity 'sms', job 2, field 'payload': encoded size 234 bytes is over the limit of"
        " 200 bytes"
    )
    assert await repo.get(1) == [] and await repo.get(2) == []
    assert recorder.fires == []


# -- payloads read shortly before the job is due ---------------------------------------------

#: Claim 3 s ahead, read payloads 0.4 s ahead: jobs due in 1-2 s are held without theirs first.
PAYLOAD_WINDOW = {"fetch_interval_s": 2.5, "lookahead_s": 3, "payload_ahead_s": 0.4}


class EntityRecorder(Recorder):
    """Records what each fire decoded, too."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: dict[Any, str] = {}

    async def __call__(self, ctx: JobContext[Any]) -> None:
        self.messages[ctx.job_id] = ctx.entity.message
        await super().__call__(ctx)


class FlakyReads:
    """The real repository, but its first `failures` payload reads fail as an outage would."""

    def __init__(self, repo: ShardingRepository[Any, Any], failures: int) -> None:
        self.repo = repo
        self.failures = failures
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def read_payloads(self, node_id: str, refs: Any) -> Any:
        self.reads += 1
        if self.reads <= self.failures:
            refused = ConnectionRefusedError("connection refused")
            raise StoreUnavailable("read payloads", refused, address="127.0.0.1:3306")
        return await self.repo.read_payloads(node_id, refs)


async def test_jobs_held_without_payload_are_read_in_time_and_fire_on_time(
    engine_factory: EngineFactory, repo: Any
) -> None:
    base = now() + timedelta(milliseconds=1500)
    ids = list(range(20))
    await repo.insert([sms(i, base + timedelta(milliseconds=25 * i)) for i in ids], now_ms=now_ms())
    recorder = EntityRecorder()
    engine = engine_factory(handler=recorder, **PAYLOAD_WINDOW)
    async with engine:
        await asyncio.sleep(0.5)
        assert engine.held() == 20 and engine.parts.payloads.reads == 0  # held, payloads not read
        await recorder.wait_for(20)
    assert engine.parts.payloads.reads >= 1
    assert recorder.messages == {i: f"m{i}" for i in ids}
    for _, _, due, fired in recorder.fires:
        assert due.timestamp() - 0.002 <= fired < due.timestamp() + 0.25  # read ahead, on time


async def test_a_payload_read_that_fails_holds_the_job_back_until_it_is_read(
    engine_factory: EngineFactory, repo: Any, store_url: str
) -> None:
    base = now() + timedelta(milliseconds=1200)
    await repo.insert(
        [sms(i, base + timedelta(milliseconds=10 * i)) for i in range(5)], now_ms=now_ms()
    )
    policy = load_config(None, store={"url": store_url}, metrics_port=0).shard_policy
    flaky = FlakyReads(make_repository(store_url, SMS, policy), failures=4)  # the engine's own
    recorder = EntityRecorder()
    engine = engine_factory(handler=recorder, repository=flaky, **PAYLOAD_WINDOW)
    async with engine:
        await recorder.wait_for(5, timeout_s=15)
        await asyncio.sleep(0.3)
    assert flaky.reads > 4
    assert recorder.messages == {i: f"m{i}" for i in range(5)}  # each fired once, late not lost
    assert set((await statuses(repo, list(range(5)))).values()) == {Status.DONE}


async def test_a_job_whose_row_is_gone_before_its_payload_is_read_is_not_fired(
    engine_factory: EngineFactory, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.insert([sms(1, now() + timedelta(milliseconds=1500))], now_ms=now_ms())
    recorder = EntityRecorder()
    engine = engine_factory(handler=recorder, **PAYLOAD_WINDOW)
    async with engine:
        await asyncio.sleep(0.5)
        assert engine.held() == 1
        await repo.drop_shards_before(now_ms() + 10 * 86_400_000)  # its shard, dropped whole
        await asyncio.sleep(1.8)
        assert engine.held() == 0
    assert recorder.fires == []
    assert "1 not fired: no longer claimed by this node" in caplog.text


async def test_jobs_held_back_for_their_payload_are_handed_back_at_shutdown(
    engine_factory: EngineFactory, repo: Any, store_url: str
) -> None:
    await repo.insert(
        [sms(i, now() + timedelta(milliseconds=1200)) for i in range(3)], now_ms=now_ms()
    )
    policy = load_config(None, store={"url": store_url}, metrics_port=0).shard_policy
    never = FlakyReads(make_repository(store_url, SMS, policy), failures=10**9)
    recorder = EntityRecorder()
    engine = engine_factory(handler=recorder, repository=never, **PAYLOAD_WINDOW)
    async with engine:
        await asyncio.sleep(1.6)  # due, but their payloads cannot be read
        assert engine.parts.payloads.held_back == 3 and engine.held() == 3
    assert recorder.fires == []
    rows = [(await repo.get(i))[0] for i in range(3)]
    assert {(r.status, r.claimed_by, r.attempts) for r in rows} == {(Status.PENDING, None, 0)}


async def test_a_job_cancelled_elsewhere_while_held_without_payload_does_not_fire(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert(
        [sms(i, now() + timedelta(milliseconds=1500)) for i in range(3)], now_ms=now_ms()
    )
    recorder = EntityRecorder()
    engine = engine_factory(handler=recorder, **PAYLOAD_WINDOW)
    async with engine:
        await asyncio.sleep(0.5)
        assert engine.held() == 3
        assert await repo.cancel([1]) == 1  # through another handle: this wheel still holds it
        await recorder.wait_for(2)
        await asyncio.sleep(0.3)
    assert sorted(recorder.ids()) == [0, 2]
    assert [(await repo.get(i))[0].status for i in range(3)] == [
        Status.DONE,
        Status.CANCELLED,
        Status.DONE,
    ]


async def test_a_held_job_handed_back_and_claimed_again_fires_once(
    engine_factory: EngineFactory, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process hands back every claim (release(None)) while this engine holds job 1 in
    its wheel and job 2 in a running handler; the next fetches claim both again."""
    await repo.insert([sms(1, now() + timedelta(milliseconds=500)), sms(2, now())], now_ms=now_ms())
    fires: list[int | str] = []

    async def handler(ctx: JobContext[SmsEntity]) -> None:
        fires.append(ctx.job_id)
        if ctx.job_id == 2:
            await asyncio.sleep(0.8)  # in hand across the hand-back and the next fetches

    async with engine_factory(handler=handler):
        await asyncio.sleep(0.1)
        assert await repo.release(None) == 2
        await asyncio.sleep(1.2)
    assert sorted(fires) == [1, 2]
    assert (await statuses(repo, [1, 2])) == {1: Status.DONE, 2: Status.DONE}
    held_twice = [r.getMessage() for r in caplog.records if "claimed again" in r.getMessage()]
    assert held_twice and all("held once" in m for m in held_twice)


class ThreadedRecorder:
    """A sync handler recording each call's (id, attempt, start, end); it sleeps `sleep_s`
    and raises on the attempts listed in `fail_attempts`."""

    def __init__(self, sleep_s: float, fail_attempts: frozenset[int] = frozenset()) -> None:
        self.sleep_s = sleep_s
        self.fail_attempts = fail_attempts
        self.calls: list[tuple[Any, int, float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext[Any]) -> None:
        started = time.monotonic()
        time.sleep(self.sleep_s if ctx.attempt == 1 else 0)
        with self._lock:
            self.calls.append((ctx.job_id, ctx.attempt, started, time.monotonic()))
        if ctx.attempt in self.fail_attempts:
            raise RuntimeError(f"boom {ctx.attempt}")


def sample(engine: InfiniteScheduler, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


async def wait_until_finished(repo: Any, ids: list[int], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if all(s in FINISHED for s in (await statuses(repo, ids)).values()):
                return
            await asyncio.sleep(0.05)


async def test_a_sync_handler_past_its_timeout_is_not_run_again_while_it_runs(
    engine_factory: EngineFactory, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.insert([sms(1, now())], now_ms=now_ms())
    handler = ThreadedRecorder(sleep_s=1.2)
    settings = {"timeout_s": 0.3, "max_attempts": 3}
    async with engine_factory(handler=handler, handlers=settings) as engine:
        await wait_until_finished(repo, [1])
        await asyncio.sleep(0.3)  # a retry, if one were scheduled, would have started
        overruns = sample(engine, "infinite_scheduler_handler_overruns_total", entity="sms")
    assert [(c[0], c[1]) for c in handler.calls] == [(1, 1)]
    [row] = await repo.get(1)
    assert (row.status, row.attempts, row.last_error) == (Status.DONE, 1, None)
    assert overruns == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "sms 1 attempt 1: sync handler still running after its timeout of 0.3s; a thread cannot "
        "be stopped, so the job stays in flight and no retry starts until it returns"
    ) in warnings
    assert any(m.startswith("sms 1 attempt 1: sync handler returned after 1.") for m in warnings)


async def test_a_sync_handler_that_overran_and_failed_is_retried_only_after_it_returned(
    engine_factory: EngineFactory, repo: Any
) -> None:
    await repo.insert([sms(1, now())], now_ms=now_ms())
    handler = ThreadedRecorder(sleep_s=0.8, fail_attempts=frozenset({1}))
    async with engine_factory(handler=handler, handlers={"timeout_s": 0.2, "max_attempts": 3}):
        await wait_until_finished(repo, [1])
    (_, first, _, first_end), (_, second, second_start, _) = handler.calls
    assert (first, second) == (1, 2) and second_start >= first_end
    [row] = await repo.get(1)
    assert (row.status, row.attempts) == (Status.DONE, 2)


async def test_sync_handlers_get_a_thread_each_up_to_the_concurrency(
    engine_factory: EngineFactory, repo: Any
) -> None:
    """More blocking handlers than the default executor's min(32, cpus + 4) threads."""
    ids = list(range(40))
    await repo.insert([sms(i, now()) for i in ids], now_ms=now_ms())
    handler = ThreadedRecorder(sleep_s=0.5)
    async with engine_factory(handler=handler, handlers={"timeout_s": 1.5, "max_attempts": 1}):
        await wait_until_finished(repo, ids)
    assert sorted(c[0] for c in handler.calls) == ids
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}


async def test_time_waiting_for_a_thread_is_not_handler_time(
    engine_factory: EngineFactory, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two threads, six 0.4 s handlers: the last ones start 0.8 s after they were due, past
    their 0.6 s timeout, and still have their whole timeout once a thread takes them."""
    ids = list(range(6))
    await repo.insert([sms(i, now()) for i in ids], now_ms=now_ms())
    handler = ThreadedRecorder(sleep_s=0.4)
    settings = {"timeout_s": 0.6, "max_attempts": 1, "threads": 2}
    async with engine_factory(handler=handler, handlers=settings):
        await wait_until_finished(repo, ids)
    assert set((await statuses(repo, ids)).values()) == {Status.DONE}
    assert max(c[2] for c in handler.calls) - min(c[2] for c in handler.calls) >= 0.7
    assert not [r for r in caplog.records if "timeout" in r.getMessage()]


async def test_an_async_handler_that_blocks_the_loop_is_named_while_it_blocks(
    engine_factory: EngineFactory, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await repo.insert([sms(1, now()), sms(2, now() + timedelta(milliseconds=300))], now_ms=now_ms())
    fired: list[int | str] = []

    async def blocking_handler(ctx: JobContext[SmsEntity]) -> None:
        fired.append(ctx.job_id)
        if ctx.job_id == 1:
            time.sleep(1.0)  # noqa: ASYNC251 - the mistake under test: it blocks the event loop

    settings = {"loop_lag_warn_s": 0.3}
    async with engine_factory(handler=blocking_handler, handlers=settings) as engine:
        await wait_until_finished(repo, [1, 2])
        stalls = sample(engine, "infinite_scheduler_loop_stalls_total")
        lag_count = sample(engine, "infinite_scheduler_loop_lag_seconds_count")
    assert fired == [1, 2] and stalls == 1 and lag_count > 0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    where = f"at {__file__}:"
    during = [m for m in messages if m.startswith("event loop blocked for over 0.3s by sms job 1")]
    assert len(during) == 1 and where in during[0] and " in blocking_handler;" in during[0]
    assert "use a sync handler, which runs on a thread" in during[0]
    after = [m for m in messages if m.startswith("event loop was blocked for ")]
    assert len(after) == 1 and "by sms job 1, at" in after[0]
    record = next(r for r in caplog.records if r.getMessage() == during[0])
    assert (getattr(record, "job_id", None), getattr(record, "entity", None)) == (1, "sms")


async def test_schedule_encodes_each_entity_once(
    engine_factory: EngineFactory, repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once to split the call by due time and store it, not again inside the insert."""
    encoded: list[Any] = []
    encode = EntitySpec.encode

    def counting(spec: EntitySpec[Any, Any], entity: Any) -> Any:
        encoded.append(entity.id)
        return encode(spec, entity)

    monkeypatch.setattr(EntitySpec, "encode", counting)
    engine = engine_factory(handler=Recorder(), fetch_interval_s=20, lookahead_s=30)
    async with engine:
        soon, later = sms(1, now() + timedelta(seconds=10)), sms(2, now() + timedelta(hours=1))
        assert await engine.schedule([soon, later]) == 2
        assert engine.held() == 1  # `soon` stored claimed, into the wheel
    assert sorted(encoded) == [1, 2]
