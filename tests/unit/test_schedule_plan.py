"""The materialiser's pure decisions (infinite_scheduler/schedules/model.py, blockouts.py, ids.py):
what to make of a schedule at now, fire-once-now, bounds, blockouts, occurrence ids."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from infinite_scheduler.schedules.blockouts import Moved, Skipped, blocked, make_blockout
from infinite_scheduler.schedules.ids import (
    INT_SCHEDULE_LIMIT,
    check_schedule_id,
    extra_run_key,
    occurrence_key,
    occurrence_range,
    schedule_of,
)
from infinite_scheduler.schedules.model import Schedule, after_finish, plan
from infinite_scheduler.schedules.triggers import CronTrigger, DelayTrigger, RateTrigger, Trigger
from repos.errors import InvalidSchedule
from repos.schedules import ScheduleRow, ScheduleState

T0 = int(datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
AHEAD = 40_000


def schedule(trigger: Trigger, **row: object) -> Schedule:
    fields: dict[str, object] = {
        "id": 7,
        "name": "s",
        "entity": "sms",
        "trigger_json": orjson.dumps(trigger.to_json()).decode(),
        "template_json": "{}",
        "start_ms": T0,
        "next_at_ms": T0,
    }
    return Schedule.of(ScheduleRow(**{**fields, **row}))  # type: ignore[arg-type]


def planned(s: Schedule, now_ms: int, **kw: int):
    args = {"until_ms": now_ms + AHEAD, "limit": 1000, "horizon_ms": 86_400_000,
            "threshold_ms": MIN, "ahead_ms": AHEAD, **kw}  # fmt: skip
    return plan(s, now_ms=now_ms, **args)


def test_occurrences_ahead_are_made_and_the_next_recorded() -> None:
    p = planned(schedule(RateTrigger(every_s=10, anchor_ms=T0)), T0 - 5000)
    assert p.occurrences == [T0, T0 + 10_000, T0 + 20_000, T0 + 30_000]
    assert (p.step.next_at_ms, p.step.last_at_ms, p.step.runs) == (T0 + 40_000, T0 + 30_000, 4)
    assert p.step.state is ScheduleState.ACTIVE and p.missed == 0


def test_fire_once_now_folds_a_long_downtime_into_one() -> None:
    """500 periods missed: one occurrence (the latest missed, fired at once by the fetcher as
    overdue), the next computed from now; those made ahead before the downtime are stale."""
    s = schedule(RateTrigger(every_s=60, anchor_ms=T0), next_at_ms=T0 + MIN, last_at_ms=T0)
    now = T0 + 500 * MIN + 1234
    p = planned(s, now, until_ms=now + 1)
    assert p.occurrences == [T0 + 500 * MIN]
    assert p.step.next_at_ms == T0 + 501 * MIN
    assert p.missed == 499 + 1  # folded, and the one made ahead before the downtime
    assert p.stale == [T0]


def test_a_pass_running_behind_makes_each_late_occurrence_not_a_fold() -> None:
    """Due less than the misfire threshold ago, occurrences are late, not missed: each is made
    and fires once, at once; nothing made ahead is cancelled."""
    s = schedule(RateTrigger(every_s=10, anchor_ms=T0), last_at_ms=T0 - 10_000)
    p = planned(s, T0 + 25_000, until_ms=T0 + 25_001)
    assert (p.occurrences, p.missed, p.stale) == ([T0, T0 + 10_000, T0 + 20_000], 0, [])


def test_fire_once_now_for_a_cron_schedule() -> None:
    s = schedule(CronTrigger(cron="*/5 * * * *"), next_at_ms=T0)
    now = T0 + 3 * 86_400_000 + 7 * MIN
    p = planned(s, now, until_ms=now + 1)
    assert p.occurrences == [T0 + 3 * 86_400_000 + 5 * MIN]
    assert p.step.next_at_ms == T0 + 3 * 86_400_000 + 10 * MIN


def test_a_missed_occurrence_older_than_half_the_horizon_is_made_at_now() -> None:
    s = schedule(CronTrigger(cron="0 0 1 * *"), next_at_ms=T0)
    now = T0 + 20 * 86_400_000 + 1500
    p = planned(s, now, until_ms=now + 1)
    assert p.occurrences == [now - 500]


def test_do_nothing_drops_what_was_missed_but_keeps_a_late_one() -> None:
    s = schedule(RateTrigger(every_s=600, anchor_ms=T0), misfire="do_nothing")
    p = planned(s, T0 + 25 * MIN, until_ms=T0 + 25 * MIN + 1)  # the latest, 5 min late
    assert (p.occurrences, p.missed, p.step.next_at_ms) == ([], 3, T0 + 30 * MIN)
    assert planned(s, T0 + 5000, until_ms=T0 + 5001).occurrences == [T0]  # 5 s late: kept


def test_end_and_max_runs_end_the_schedule() -> None:
    s = schedule(RateTrigger(every_s=10, anchor_ms=T0), end_ms=T0 + 15_000)
    p = planned(s, T0)
    assert p.occurrences == [T0, T0 + 10_000]
    assert (p.step.state, p.step.next_at_ms) == (ScheduleState.ENDED, None)
    s = schedule(RateTrigger(every_s=10, anchor_ms=T0), max_runs=5, runs=3)
    p = planned(s, T0)
    assert p.occurrences == [T0, T0 + 10_000]
    assert (p.step.state, p.step.runs) == (ScheduleState.ENDED, 5)


def test_fixed_delay_makes_one_then_waits_for_it_to_finish() -> None:
    s = schedule(DelayTrigger(delay_s=30))
    p = planned(s, T0 - 1000)
    assert p.occurrences == [T0]
    assert (p.step.state, p.step.next_at_ms, p.step.last_at_ms) == (
        ScheduleState.WAITING,
        None,
        T0,
    )
    waiting = replace(s, row=replace(s.row, state=ScheduleState.WAITING, last_at_ms=T0, runs=1))
    step = after_finish(waiting, finished_ms=T0 + 4321)
    assert (step.state, step.next_at_ms) == (ScheduleState.ACTIVE, T0 + 34_321)


def test_occurrence_ids_are_deterministic_and_apart() -> None:
    assert occurrence_key(int, 7, 0, T0) == occurrence_key(int, 7, 0, T0 + 999)  # same second
    keys = {occurrence_key(int, sid, gen, T0 + k * 1000) for sid in (1, 2, 2**23 - 1)
            for gen in (0, 1, 255) for k in range(100)}  # fmt: skip
    assert len(keys) == 3 * 3 * 100 and all(isinstance(k, int) and k < 0 for k in keys)
    assert occurrence_key(str, 7, 2, T0) == f"~s7.2@{T0}"
    check_schedule_id(str, INT_SCHEDULE_LIMIT)
    with pytest.raises(InvalidSchedule, match="2\\*\\*23|8388607"):
        check_schedule_id(int, INT_SCHEDULE_LIMIT)


@pytest.mark.parametrize("key_type", [int, str])
def test_an_extra_runs_id_is_the_schedules_but_never_a_materialised_ones(key_type: type) -> None:
    extra = extra_run_key(key_type, 7, 3, T0)
    assert extra == extra_run_key(key_type, 7, 3, T0)  # a repeat is one run
    assert schedule_of(extra) == 7
    first, after = occurrence_range(key_type, 7)
    assert first <= extra < after  # type: ignore[operator]
    made = {
        occurrence_key(key_type, 7, gen, T0 + k * 1000) for gen in (2, 3, 4) for k in range(-5, 5)
    }
    assert extra not in made


def test_blockouts_delay_to_the_window_end_and_skip() -> None:
    absolute = make_blockout("deploy", {"start_ms": T0, "end_ms": T0 + 10 * MIN})
    assert blocked([absolute], T0 - 1) is None
    assert blocked([absolute], T0 + MIN) == Moved(T0 + 10 * MIN, "deploy")
    assert blocked([absolute], T0 + 10 * MIN) is None  # the end is outside
    nightly = make_blockout(
        "nightly",
        {"trigger": {"kind": "cron", "cron": "0 1 * * *", "zone": "Europe/Berlin"}, "duration_s": 3600},
        policy="skip",
    )  # fmt: skip
    one_am = int(datetime(2026, 11, 23, 0, 30, tzinfo=UTC).timestamp() * 1000)  # 01:30 Berlin
    assert blocked([nightly], one_am) == Skipped("nightly")
    assert blocked([nightly], one_am + 3600_000) is None
    # A delay whose end falls inside another window moves on to that one's end.
    second = make_blockout("after", {"start_ms": T0 + 10 * MIN, "end_ms": T0 + 20 * MIN})
    assert blocked([absolute, second], T0 + MIN) == Moved(T0 + 20 * MIN, "after")


def test_blockout_scopes() -> None:
    b = make_blockout("b", {"start_ms": 0, "end_ms": 1}, scope="category", target="billing")
    assert b.applies(entity="sms", category="billing", schedule="x")
    assert not b.applies(entity="sms", category="", schedule="x")
    assert make_blockout("g", {"start_ms": 0, "end_ms": 1}).applies(
        entity="sms", category="", schedule="x"
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": {"start_ms": 5, "end_ms": 5}}, "window.end_ms"),
        ({"window": {"start_ms": 5}}, "window"),
        ({"window": {"trigger": {"kind": "rate", "every_s": 5}, "duration_s": 5}}, "window.trigger"),
        ({"window": {"trigger": {"kind": "cron", "cron": "0 1 * * *"}, "duration_s": 0}}, "window.duration_s"),
        ({"window": {"start_ms": 1, "end_ms": 2}, "scope": "planet"}, "scope"),
        ({"window": {"start_ms": 1, "end_ms": 2}, "scope": "entity"}, "target"),
        ({"window": {"start_ms": 1, "end_ms": 2}, "policy": "later"}, "policy"),
    ],
)  # fmt: skip
def test_bad_blockouts_name_the_field(kwargs, field) -> None:
    window = kwargs.pop("window")
    with pytest.raises(InvalidSchedule) as caught:
        make_blockout("b", window, **kwargs)
    assert caught.value.field == field
