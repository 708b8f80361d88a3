"""Recurring schedules end to end on the fake clock (manual engines): materialisation, fixed rate
and fixed delay, fire-once-now after downtime, pause/update/resume, blockouts, bad input; on
SQLite and MariaDB, and with two nodes and a takeover on MariaDB."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from infinite_scheduler import InfiniteScheduler, JobContext, SchedulerClient, load_config
from infinite_scheduler.clock import FakeClock
from infinite_scheduler.demo import DEMO_SCHEDULES, demo_schedules
from infinite_scheduler.schedules.ids import occurrence_key
from repos.base import Claimant, Status, priority_of
from repos.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound
from repos.examples import NOTIFICATIONS, ORDERS, SMS
from repos.schedules import ScheduleState

T0 = int(datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp() * 1000)
S = 1000
MIN = 60 * S
HI = {"phone": "+15550100", "message": "hi"}


class Fires:
    """What the handler saw: (job id, scheduled ms, fired ms, message) per fire."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.seen: list[tuple[Any, int, int, str]] = []

    async def __call__(self, ctx: JobContext[Any]) -> None:
        message = getattr(ctx.entity, "message", "")
        self.seen.append((ctx.job_id, ctx.scheduled_ms, self.clock.now_ms(), message))

    @property
    def times(self) -> list[int]:
        return [at for _, at, _, _ in self.seen]


Make = Callable[..., InfiniteScheduler]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 - 5 * S)


@pytest.fixture
async def engines(store_url: str, clock: FakeClock) -> AsyncIterator[Make]:
    """Manual engines on the test's store and clock; closed at the end if still open."""
    async with AsyncExitStack() as stack:

        def make(
            fires: Fires, *, node_id: str = "node-a", spec: Any = SMS, more: tuple[Any, ...] = ()
        ) -> InfiniteScheduler:
            config = load_config(
                None,
                store={"url": store_url},
                metrics_port=0,
                node_id=node_id,
                fetch_interval_s=0.2,
                lookahead_s=0.6,
                cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
            )
            engine = InfiniteScheduler(config, clock=clock, manual=True)
            for each in (spec, *more):
                engine.register(each, fires)
            stack.push_async_callback(_close, engine)
            return engine

        yield make


async def _close(engine: InfiniteScheduler) -> None:
    if engine._running:
        await engine.__aexit__(None, None, None)


async def run_for(engine: InfiniteScheduler, clock: FakeClock, total_ms: int, step_ms: int) -> None:
    for _ in range(total_ms // step_ms):
        await engine.run_until_idle()
        clock.advance(step_ms)
    await engine.run_until_idle()


async def test_a_fixed_rate_schedule_fires_1000_times_on_time_without_drift(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        anchor = T0 + 123
        s = await engine.schedules.create(
            "every-second", SMS, {"kind": "rate", "every_s": 1, "anchor_ms": anchor}, HI,
            max_runs=1000,
        )  # fmt: skip
        await run_for(engine, clock, 1010 * S + 5 * S, 10 * S)
        assert fires.times == [anchor + k * S for k in range(1000)]
        assert len({job_id for job_id, *_ in fires.seen}) == 1000
        assert all(job_id < 0 for job_id, *_ in fires.seen)  # int ids: the reserved range
        done = await engine.schedules.get(s.id)
        assert (done.row.state, done.row.runs, done.row.next_at_ms) == (
            ScheduleState.ENDED,
            1000,
            None,
        )


async def test_missed_occurrences_collapse_into_one_fire_now_after_downtime(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        await engine.schedules.create(
            "minutely", SMS, {"kind": "rate", "every_s": 60, "anchor_ms": T0}, HI
        )
        await run_for(engine, clock, 3 * MIN, 20 * S)
    assert fires.times == [T0, T0 + MIN, T0 + 2 * MIN]  # and T0 + 3 min made ahead
    # Down for 500 periods (and the occurrence made ahead before it went down is missed too).
    clock.advance(500 * MIN + 7 * S)
    restart_ms = clock.now_ms()
    fires.seen.clear()
    async with engines(fires) as engine:
        await engine.run_until_idle()
        assert [(at, fired) for _, at, fired, _ in fires.seen] == [
            (T0 + 503 * MIN, restart_ms)  # one fire, now: the latest missed occurrence
        ]
        s = await engine.schedules.get("minutely")
        assert s.row.next_at_ms is not None and s.row.next_at_ms > restart_ms  # from now on
        await run_for(engine, clock, 2 * MIN, 20 * S)
    assert fires.times == [T0 + 503 * MIN, T0 + 504 * MIN, T0 + 505 * MIN]


async def test_a_fixed_delay_schedule_waits_for_the_previous_run_to_finish(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        await engine.schedules.create(
            "after-each", SMS, {"kind": "delay", "delay_s": 30}, HI, start=T0
        )
        await run_for(engine, clock, 2 * MIN, 7 * S)
    # Each fires 30 s after the previous one finished (here: when it was fired, on a step of
    # the fake clock), never on a grid of its own.
    fired = [f for _, _, f, _ in fires.seen]
    assert [at for _, at, _, _ in fires.seen][0] == T0
    assert len(fired) >= 3
    for (_, at, _, _), previous in zip(fires.seen[1:], fired, strict=False):
        assert at == previous + 30 * S


async def test_a_cron_schedule_in_a_zone(engines: Make, clock: FakeClock) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        await engine.schedules.create(
            "berlin-13h", SMS, {"kind": "cron", "cron": "0 13 * * *", "zone": "Europe/Berlin"}, HI
        )
        # 12:00 UTC is 13:00 in Berlin on 22 November (CET).
        await run_for(engine, clock, 10 * S, 5 * S)
    assert fires.times == [T0]


async def test_pause_cancels_what_was_made_ahead_and_resume_starts_from_now(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        s = await engine.schedules.create(
            "ten", SMS, {"kind": "rate", "every_s": 10, "anchor_ms": T0}, HI
        )
        await run_for(engine, clock, 5 * S, 5 * S)  # T0 fired, T0 + 10 s made ahead
        paused = await engine.schedules.pause("ten")
        assert paused.row.paused and paused.row.generation == 1
        [row] = await engine.repositories["sms"].get(occurrence_key(int, s.id, 0, T0 + 10 * S))
        assert row.status is Status.CANCELLED
        await run_for(engine, clock, MIN, 10 * S)
        assert fires.times == [T0]
        fires.seen.clear()
        resumed_at = clock.now_ms()
        await engine.schedules.resume("ten")
        await run_for(engine, clock, 30 * S, 10 * S)
    assert fires.times and all(at > resumed_at for at in fires.times)
    assert fires.times == sorted(set(fires.times))


async def test_an_update_reaches_the_occurrences_not_yet_claimed(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        await engine.schedules.create(
            "ten", SMS, {"kind": "rate", "every_s": 10, "anchor_ms": T0}, HI
        )
        await run_for(engine, clock, 5 * S, 5 * S)  # T0 fired; T0 + 10 s made ahead
        await engine.schedules.update("ten", payload_template={**HI, "message": "changed"})
        await run_for(engine, clock, 20 * S, 5 * S)
    assert [(at, m) for _, at, _, m in fires.seen] == [
        (T0, "hi"),
        (T0 + 10 * S, "changed"),
        (T0 + 20 * S, "changed"),
    ]


async def test_a_blockout_delays_to_its_end_or_skips_with_the_reason(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires) as engine:
        await engine.schedules.add_blockout(
            "deploy", {"start_ms": T0 + 15 * S, "end_ms": T0 + 45 * S}, policy="delay"
        )
        s = await engine.schedules.create(
            "ten", SMS, {"kind": "rate", "every_s": 10, "anchor_ms": T0}, HI
        )
        await engine.schedules.create(
            "other", SMS, {"kind": "rate", "every_s": 10, "anchor_ms": T0 + 5 * S}, HI
        )
        await engine.schedules.add_blockout(
            "quiet", {"start_ms": T0, "end_ms": T0 + 60 * S}, scope="schedule", target="other",
            policy="skip",
        )  # fmt: skip
        await run_for(engine, clock, 70 * S, 5 * S)
        # 20, 30 and 40 s fall in the window: moved to its end (45 s), one fire there.
        ten = [at for job_id, at, _, _ in fires.seen if -job_id >> 40 == s.id]
        assert ten == [T0, T0 + 10 * S, T0 + 45 * S, T0 + 50 * S, T0 + 60 * S]
        other = await engine.schedules.get("other")
        key = occurrence_key(int, other.id, 0, T0 + 5 * S)
        [row] = await engine.repositories["sms"].get(key)
        assert (row.status, row.last_error) == (Status.MISSED, "blockout 'quiet': skipped")
        assert [b.name for b in await engine.schedules.blockouts()] == ["deploy", "quiet"]
        assert await engine.schedules.remove_blockout("deploy")


async def test_a_str_id_type_and_the_client_api(
    engines: Make, clock: FakeClock, store_url: str
) -> None:
    config = load_config(None, store={"url": store_url}, metrics_port=0)
    async with SchedulerClient(config, ORDERS, clock=clock) as client:
        s = await client.schedules.create(
            "expire", ORDERS, {"kind": "rate", "every_s": 30, "anchor_ms": T0},
            {"customer_id": 7, "amount_cents": 990}, owner="billing",
        )  # fmt: skip
        assert [x.name for x in await client.schedules.list()] == ["expire"]
    fires = Fires(clock)
    async with engines(fires, spec=ORDERS) as engine:
        await run_for(engine, clock, 40 * S, 10 * S)
        assert await engine.schedules.delete("expire")
        with pytest.raises(ScheduleNotFound):
            await engine.schedules.get("expire")
    assert [job_id for job_id, *_ in fires.seen] == [
        f"~s{s.id}.0@{T0}",
        f"~s{s.id}.0@{T0 + 30 * S}",
    ]


async def test_the_demo_makes_its_schedules_once_and_they_fire(
    engines: Make, clock: FakeClock
) -> None:
    fires = Fires(clock)
    async with engines(fires, more=(ORDERS, NOTIFICATIONS)) as engine:
        await demo_schedules(engine)
        await demo_schedules(engine)  # a second run of the demo on its kept store
        assert [s.name for s in await engine.schedules.list()] == [n for n, *_ in DEMO_SCHEDULES]
        await run_for(engine, clock, 2 * MIN, 5 * S)
    kinds = Counter(type(job_id).__name__ for job_id, *_ in fires.seen)
    assert kinds["str"] >= 2 and kinds["int"] >= 12 + 4  # orders; sms every 10 s, push every 15+ s


BAD = [
    ({"trigger": {"kind": "cron", "cron": "0 25 * * *"}}, "trigger.cron"),
    ({"trigger": {"kind": "cron", "cron": "0 9 * * *", "zone": "Europe/Atlantis"}}, "trigger.zone"),
    ({"trigger": {"kind": "rate", "every_s": 0}}, "trigger.every_s"),
    ({"start": T0, "end": T0 - 1}, "end"),
    ({"max_runs": 0}, "max_runs"),
    ({"priority": 0}, "priority"),
    ({"priority": 1001}, "priority"),
    ({"misfire": "later"}, "misfire"),
    ({"template": {"phone": "+1", "message": "x", "colour": "red"}}, "payload_template.colour"),
    ({"template": {"phone": "+1"}}, "payload_template.message"),
    ({"template": {"id": 5, **HI}}, "payload_template.id"),
    ({"entity": "parcels"}, "entity"),
    ({"name": ""}, "name"),
]


@pytest.mark.parametrize(("bad", "field"), BAD, ids=[f for _, f in BAD])
async def test_bad_input_names_the_field_and_stores_nothing(
    engines: Make, clock: FakeClock, bad: dict[str, Any], field: str
) -> None:
    async with engines(Fires(clock)) as engine:
        await engine.schedules.create("kept", SMS, {"kind": "rate", "every_s": 60}, HI)
        before = await engine.schedules.list()
        args: dict[str, Any] = {
            "name": "new",
            "entity": SMS,
            "trigger": {"kind": "rate", "every_s": 60},
            "template": HI,
        }
        args.update(bad)
        with pytest.raises(InvalidSchedule) as caught:
            await engine.schedules.create(
                args.pop("name"), args.pop("entity"), args.pop("trigger"), args.pop("template"),
                **args,
            )  # fmt: skip
        assert caught.value.field == field
        assert await engine.schedules.list() == before
        with pytest.raises(ScheduleExists):
            await engine.schedules.create("kept", SMS, {"kind": "rate", "every_s": 5}, HI)
        with pytest.raises(InvalidSchedule) as caught:
            await engine.schedules.update("kept", trigger={"kind": "delay", "delay_s": -1})
        assert caught.value.field == "trigger.delay_s"
        assert await engine.schedules.list() == before


@pytest.mark.mysql
@pytest.mark.parametrize("store_url", ["mysql"], indirect=True)
async def test_materialisation_is_idempotent_under_two_nodes_and_a_takeover(
    engines: Make, clock: FakeClock
) -> None:
    """Node a materialises, then its step is lost (a crash between the rows and the schedule's
    update); node b takes the lease over and makes the same occurrences again: duplicates,
    ignored. Both nodes fire: every occurrence once."""
    clock.advance(5 * S)
    fires = Fires(clock)
    a, b = engines(fires, node_id="node-a"), engines(fires, node_id="node-b")
    await a.__aenter__()
    await b.__aenter__()
    for i in range(20):
        await a.schedules.create(f"s{i}", SMS, {"kind": "rate", "every_s": 5, "anchor_ms": T0}, HI)
    store = a.parts.materialiser.store
    rows = [await store.get(f"s{i}") for i in range(20)]
    made = await a.parts.materialiser.materialise(clock.now_ms())
    assert made is not None and made.occurrences == 20 * 3  # T0, +5, +10 (ahead 10.6 s)
    assert await b.parts.materialiser.materialise(clock.now_ms()) is None  # a holds the lease
    for row in rows:  # a's steps lost: the schedules stand where they stood
        current = await store.get(row.id)
        assert await store.replace(replace(row, version=current.version), now_ms=T0) is not None
    await a.__aexit__(None, None, None)  # releases the lease
    again = await b.parts.materialiser.materialise(clock.now_ms())
    assert again is not None and again.occurrences == 0 and again.schedules == 20
    await run_for(b, clock, 30 * S, 5 * S)
    await b.__aexit__(None, None, None)
    counts = Counter(job_id for job_id, *_ in fires.seen)
    assert len(counts) == 20 * 7 and set(counts.values()) == {1}  # T0 .. T0 + 30 s, once each


async def test_occurrences_carry_their_schedules_priority(engines: Make, clock: FakeClock) -> None:
    """A schedule's priority reaches the rows it makes (its occurrences rank in a backlog)."""
    fires = Fires(clock)
    async with engines(fires) as engine:
        await engine.schedules.create(
            "urgent", SMS, {"kind": "rate", "every_s": 1, "anchor_ms": T0}, HI, priority=900,
            max_runs=3,
        )  # fmt: skip
        await engine.parts.materialiser.materialise(clock.now_ms())
        repo = engine.parts.lanes["sms"].repo
        claimed = await repo.claim_due(
            Claimant("test", 10**9), now_ms=clock.now_ms(), before_ms=T0 + 10 * S,
            since_ms=T0 - MIN, limit=10,
        )  # fmt: skip
        assert [priority_of(job.options) for job in claimed] == [900, 900, 900]


async def test_trigger_fires_one_extra_run_now_beside_the_schedules_own(
    engines: Make, clock: FakeClock
) -> None:
    """A per-second schedule, triggered at the very time of one of its occurrences: both
    fire (ids apart), the repeat within the second is one run, and the schedule's next
    occurrence and run count are not touched."""
    fires = Fires(clock)
    async with engines(fires) as engine:
        s = await engine.schedules.create(
            "each-second", SMS, {"kind": "rate", "every_s": 1, "anchor_ms": T0}, HI
        )
        clock.advance(3 * S)  # T0 - 2 s
        await engine.run_until_idle()  # occurrences made ahead, up to T0 and past it
        clock.advance(2 * S)  # T0
        row = (await engine.schedules.get(s.id)).row
        run = await engine.schedules.trigger("each-second")
        again = await engine.schedules.trigger(s.id)
        assert (run.stored, again.stored, again.key) == (True, False, run.key)
        assert (await engine.schedules.get(s.id)).row == row
        await engine.run_until_idle()
        at_t0 = sorted(job_id for job_id, at, _, _ in fires.seen if at == T0)
        assert len(at_t0) == 2 and run.key in at_t0
