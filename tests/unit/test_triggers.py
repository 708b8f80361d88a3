"""Triggers (infinite_scheduler/schedules/triggers.py): DST properties in three zones, fixed rate
without drift, validation with the field named, JSON round trips."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infinite_scheduler.schedules.triggers import (
    CalendarTrigger,
    CronTrigger,
    DelayTrigger,
    RateTrigger,
    trigger_from_json,
    wall_time_ms,
)
from repos.errors import InvalidSchedule

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
T0 = int(datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp() * 1000)

starts = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: int(d.replace(tzinfo=UTC).timestamp() * 1000)
)


def local(ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(zone))


def run(trigger: CronTrigger | CalendarTrigger, start_ms: int, n: int) -> list[int]:
    found, at = [], start_ms
    for _ in range(n):
        nxt = trigger.next_after(at)
        assert nxt is not None and nxt > at
        found.append(nxt)
        at = nxt
    return found


def once_a_day(times: list[int], zone: str, hour: int, minute: int) -> None:
    """Debian cron for a job at a fixed time: one run per local day, none skipped or doubled;
    at the wall time, or (that time skipped by a spring-forward) just after the change."""
    days = [local(ms, zone).date() for ms in times]
    assert days == [days[0] + timedelta(days=i) for i in range(len(days))]
    for ms in times:
        at = local(ms, zone)
        if (at.hour, at.minute) != (hour, minute):
            wall = datetime.combine(at.date(), datetime.min.time()).replace(
                hour=hour, minute=minute
            )
            assert wall_time_ms(wall, ZoneInfo(zone)) == ms  # skipped: the instant of the change
            assert at.replace(tzinfo=None) > wall


@settings(max_examples=25, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    start_ms=starts,
)
def test_a_daily_cron_runs_once_every_local_day_across_dst(zone, hour, minute, start_ms) -> None:
    trigger = CronTrigger(cron=f"{minute} {hour} * * *", zone=zone)
    once_a_day(run(trigger, start_ms, 400), zone, hour, minute)


@settings(max_examples=25, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    start_ms=starts,
)
def test_a_daily_calendar_runs_once_every_local_day_across_dst(zone, hour, minute, start_ms):
    trigger = CalendarTrigger(times=(f"{hour:02}:{minute:02}",), zone=zone)
    once_a_day(run(trigger, start_ms, 400), zone, hour, minute)


def transitions(zone: str, year: int) -> list[date]:
    """The local days of the year on which the zone's UTC offset changes."""
    tz = ZoneInfo(zone)
    days = [date(year, 1, 1) + timedelta(days=i) for i in range(366)]
    noon = [datetime.combine(d, datetime.min.time()).replace(hour=12, tzinfo=tz) for d in days]
    return [
        d
        for d, a, b in zip(days[1:], noon, noon[1:], strict=False)
        if a.utcoffset() != b.utcoffset()
    ]


@settings(max_examples=30, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    step=st.sampled_from([1, 5, 10, 15, 30]),
    year=st.integers(2024, 2032),
    which=st.sampled_from([0, 1]),
)
def test_a_frequent_cron_runs_on_elapsed_time_across_dst(zone, step, year, which) -> None:
    """Debian cron schedules jobs more frequent than hourly normally: every `step` minutes of
    real time, both passes of a repeated hour included, none in a skipped one (the 30-minute
    shift of Lord Howe keeps a grid of divisors of 30). Two days around a change."""
    day = transitions(zone, year)[which]
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), ZoneInfo(zone))
    times = run(
        CronTrigger(cron=f"*/{step} * * * *", zone=zone),
        int(start.timestamp() * 1000),
        2 * 1440 // step,
    )
    assert {b - a for a, b in zip(times, times[1:], strict=False)} == {step * 60_000}
    assert local(times[0], zone).date() < day <= local(times[-1], zone).date()


def test_the_transition_days_in_each_zone() -> None:
    """The documented cases, one by one: spring-forward runs just after the change, fall-back
    runs once (the first pass). (local time, UTC offset in hours) of three runs from a day
    before the change."""
    cases = {
        ("Europe/Berlin", "30 2 * * *", datetime(2026, 3, 28)): [("02:30", 1), ("03:00", 2), ("02:30", 2)],
        ("Europe/Berlin", "30 2 * * *", datetime(2026, 10, 24)): [("02:30", 2), ("02:30", 2), ("02:30", 1)],
        ("America/New_York", "30 2 * * *", datetime(2026, 3, 7)): [("02:30", -5), ("03:00", -4), ("02:30", -4)],
        ("America/New_York", "30 1 * * *", datetime(2026, 10, 31)): [("01:30", -4), ("01:30", -4), ("01:30", -5)],
        ("Australia/Lord_Howe", "15 2 * * *", datetime(2026, 10, 3)): [("02:15", 10.5), ("02:30", 11), ("02:15", 11)],
        ("Australia/Lord_Howe", "45 1 * * *", datetime(2026, 4, 4)): [("01:45", 11), ("01:45", 11), ("01:45", 10.5)],
    }  # fmt: skip
    for (zone, cron, day), expected in cases.items():
        start = int(day.replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)
        found = []
        for ms in run(CronTrigger(cron=cron, zone=zone), start, 3):
            at = local(ms, zone)
            offset = at.utcoffset()
            assert offset is not None
            found.append((at.strftime("%H:%M"), offset.total_seconds() / 3600))
        assert found == expected, (zone, cron)


def test_seconds_are_optional() -> None:
    trigger = CronTrigger(cron="*/10 * * * * *")
    assert trigger.next_after(T0) == T0 + 10_000
    assert trigger.next_after(T0 + 10_000) == T0 + 20_000


def test_fixed_rate_does_not_drift_over_1000_occurrences() -> None:
    """Occurrence k is anchor + k * N exactly, however late each next one is asked for (a loop
    that computed now + N would drift by its lateness every time)."""
    anchor = T0 + 123
    trigger = RateTrigger(every_s=7, anchor_ms=anchor)
    at = trigger.next_after(anchor - 1)
    assert at == anchor
    for k in range(1, 1001):
        late_ms = (k * 997) % 7000  # asked 0..6.999 s after the previous one
        at = trigger.next_after(at + late_ms)
        assert at == anchor + k * 7000


def test_fixed_delay_counts_from_the_finish() -> None:
    assert DelayTrigger(delay_s=30).next_after(T0 + 4321) == T0 + 34_321


def test_calendar_days_and_exclusions() -> None:
    trigger = CalendarTrigger(
        times=("09:00", "17:30"),
        zone="Europe/Berlin",
        days_of_week=(0, 2),  # Monday, Wednesday
        exclude=("2026-11-25",),
    )
    start = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 1000)  # a Sunday
    shown = [local(ms, "Europe/Berlin").strftime("%a %d %H:%M") for ms in run(trigger, start, 4)]
    assert shown == ["Mon 23 09:00", "Mon 23 17:30", "Mon 30 09:00", "Mon 30 17:30"]
    monthly = CalendarTrigger(times=("00:00",), days_of_month=(31,))
    assert [local(ms, "UTC").date() for ms in run(monthly, start, 2)] == [
        date(2026, 12, 31),
        date(2027, 1, 31),
    ]


@pytest.mark.parametrize(
    "trigger",
    [
        CronTrigger(cron="0 9 * * MON-FRI", zone="America/New_York"),
        RateTrigger(every_s=60, anchor_ms=T0),
        DelayTrigger(delay_s=5),
        CalendarTrigger(times=("09:00",), days_of_month=(1, 15), exclude=("2027-01-01",)),
    ],
    ids=lambda t: t.kind,
)
def test_json_round_trip(trigger) -> None:
    again = trigger_from_json(trigger.to_json())
    assert again == trigger
    assert again.next_after(T0) == trigger.next_after(T0)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "trigger.cron", "Bad minute"),
        ({"kind": "cron", "cron": "* * *"}, "trigger.cron", "Wrong number of fields"),
        ({"kind": "cron", "cron": "0 0 31 2 *"}, "trigger.cron", "Bad day-of-month"),
        ({"kind": "cron", "cron": "* * * * *", "zone": "Mars/Olympus"}, "trigger.zone", "unknown"),
        ({"kind": "rate", "every_s": 0}, "trigger.every_s", ">= 1"),
        ({"kind": "rate", "every_s": 1.5}, "trigger.every_s", "whole number"),
        ({"kind": "rate", "every_s": 5, "anchor_ms": -1}, "trigger.anchor_ms", ">= 0"),
        ({"kind": "delay", "delay_s": 0}, "trigger.delay_s", ">= 1"),
        ({"kind": "rate", "every_s": 10**30}, "trigger.every_s", "a century at most"),
        ({"kind": "rate", "every_s": 5, "anchor_ms": 10**30}, "trigger.anchor_ms", "year 9000"),
        ({"kind": "calendar", "times": []}, "trigger.times", "at least one"),
        ({"kind": "calendar", "times": ["25:00"]}, "trigger.times", "HH:MM"),
        (
            {"kind": "calendar", "times": ["09:00"], "days_of_week": [7]},
            "trigger.days_of_week",
            "0..6",
        ),
        (
            {"kind": "calendar", "times": ["09:00"], "exclude": ["2026-13-01"]},
            "trigger.exclude",
            "ISO",
        ),
        ({"kind": "hourly"}, "trigger.kind", "one of"),
        ({"kind": "rate", "every_s": 5, "jitter": 1}, "trigger.jitter", "not a field"),
        ({"kind": "rate"}, "trigger", "incomplete"),
    ],
)
def test_bad_triggers_name_the_field(data, field, words) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        trigger_from_json(data)
    assert caught.value.field == field
    assert words in str(caught.value)
