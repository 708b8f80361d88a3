"""Triggers: when a recurring schedule fires. Pure values, no I/O, no clock.

Each trigger answers ``next_after(t_ms)``: the first occurrence strictly after `t_ms` (epoch
milliseconds, UTC), or None when there is none. Each is validated when made (a clear
InvalidSchedule naming the field) and round-trips through JSON (``to_json`` /
:func:`trigger_from_json`) for the ``schedules`` table. Occurrences of every trigger are at
least a second apart, which the occurrence ids rely on (infinite_scheduler/schedules/ids.py).

- :class:`CronTrigger`: a cron expression (5 fields, or 6 with seconds first) in an IANA zone.
- :class:`RateTrigger`: every N s from an anchor, occurrence k at ``anchor + k * N``: computed
  from the anchor, never from now, so it never drifts.
- :class:`DelayTrigger`: N s after the previous run finished (the materialiser asks it with
  the finish time).
- :class:`CalendarTrigger`: times of day on days of the week and/or month, in a zone, minus
  excluded dates.
- A one-shot job is no trigger: it stays an entity row.

Cron is **cronsim** (2.8), not croniter: cronsim follows Debian cron's documented DST rules
(a job at a specific time whose local time is skipped by a spring-forward runs right after the
change, one in the repeated hour of a fall-back runs once; jobs running more often than hourly,
or written with a seconds field, run on real elapsed time), which is the behaviour our users
compare against, it is small, typed (py.typed) and dependency-free; croniter 7 has no DST rule
of its own beyond what its datetime arithmetic gives, and its maintainers said in 2024 it would
end. This module does no date arithmetic for cron: cronsim iterates, and next_after only skips
the results that, in a repeated hour, fall at or before `t_ms`.

The calendar trigger applies the same two rules (a time in a skipped hour fires at the change;
a time in a repeated hour fires once, at its first instance), so both kinds read alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from infinite_scheduler.clock import epoch_ms
from repos.schedules import InvalidSchedule

#: How far ahead next_after looks for a calendar day that matches (Feb 29 on a Monday: 28 years).
CALENDAR_SEARCH_DAYS = 366 * 29
#: Results cronsim may give at or before t_ms in a repeated hour, at most (a minute list).
_CRON_SKIPS = 3700
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def _zone(value: object, field_name: str) -> ZoneInfo:
    if not isinstance(value, str) or not value:
        raise InvalidSchedule(field_name, f"expected an IANA time zone name, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            field_name, f"unknown time zone {value!r} (an IANA name such as 'Europe/Berlin')"
        ) from None


def _local(t_ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, UTC).astimezone(zone)


@dataclass(frozen=True, slots=True, kw_only=True)
class CronTrigger:
    """A cron expression (``"0 9 * * MON-FRI"``, or with seconds ``"*/10 * * * * *"``) in an
    IANA zone; Debian cron's DST rules (module docstring)."""

    kind: ClassVar[str] = "cron"
    cron: str
    zone: str = "UTC"
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", _zone(self.zone, "trigger.zone"))
        if not isinstance(self.cron, str) or not self.cron.strip():
            raise InvalidSchedule("trigger.cron", f"expected a cron expression, got {self.cron!r}")
        try:
            CronSim(self.cron, datetime(2000, 1, 1, tzinfo=self._tz))
        except CronSimError as exc:
            raise InvalidSchedule(
                "trigger.cron", f"invalid cron expression {self.cron!r}: {exc}"
            ) from None

    def next_after(self, t_ms: int) -> int | None:
        it = CronSim(self.cron, _local(t_ms, self._tz))
        try:
            for _ in range(_CRON_SKIPS):
                at_ms = epoch_ms(next(it))
                if at_ms > t_ms:
                    return at_ms
        except StopIteration:  # no date matches any more (cronsim gives up after years)
            return None
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "cron": self.cron, "zone": self.zone}


#: A period or delay of a century at most, an anchor before the year 9000: every occurrence
#: stays a time that datetimes, JSON and BIGINT columns hold.
MAX_PERIOD_S = 100 * 366 * 86_400
MAX_ANCHOR_MS = 221_845_392_000_000  # 9000-01-01T00:00:00Z


def _whole_seconds(value: object, field_name: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_PERIOD_S:
        raise InvalidSchedule(
            field_name,
            f"expected a whole number of seconds >= 1 (a century at most), got {value!r}",
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RateTrigger:
    """Every `every_s` seconds from `anchor_ms`: occurrence k at anchor + k * every_s (k >= 0)."""

    kind: ClassVar[str] = "rate"
    every_s: int
    anchor_ms: int = 0

    def __post_init__(self) -> None:
        _whole_seconds(self.every_s, "trigger.every_s")
        if type(self.anchor_ms) is not int or not 0 <= self.anchor_ms < MAX_ANCHOR_MS:
            raise InvalidSchedule(
                "trigger.anchor_ms",
                f"expected epoch milliseconds >= 0 (before the year 9000), got {self.anchor_ms!r}",
            )

    def next_after(self, t_ms: int) -> int:
        period_ms = self.every_s * 1000
        if t_ms < self.anchor_ms:
            return self.anchor_ms
        return self.anchor_ms + ((t_ms - self.anchor_ms) // period_ms + 1) * period_ms

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "every_s": self.every_s, "anchor_ms": self.anchor_ms}


@dataclass(frozen=True, slots=True, kw_only=True)
class DelayTrigger:
    """`delay_s` seconds after the previous run finished: next_after(finished_ms)."""

    kind: ClassVar[str] = "delay"
    delay_s: int

    def __post_init__(self) -> None:
        _whole_seconds(self.delay_s, "trigger.delay_s")

    def next_after(self, t_ms: int) -> int:
        return t_ms + self.delay_s * 1000

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "delay_s": self.delay_s}


def _parse_time(value: object) -> time:
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidSchedule("trigger.times", f"expected 'HH:MM' or 'HH:MM:SS', got {value!r}")
    h, m, s = match.groups()
    return time(int(h), int(m), int(s or 0))


def _parse_date(value: object) -> date:
    try:
        if isinstance(value, str):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise InvalidSchedule("trigger.exclude", f"expected an ISO date 'YYYY-MM-DD', got {value!r}")


def _ints(values: object, field_name: str, low: int, high: int) -> tuple[int, ...]:
    if not isinstance(values, list | tuple) or any(
        type(v) is not int or not low <= v <= high for v in values
    ):
        raise InvalidSchedule(
            field_name, f"expected a list of integers {low}..{high}, got {values!r}"
        )
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarTrigger:
    """Times of day (``"09:00"``, ``"17:30:15"``) in a zone, on the days matching both
    `days_of_week` (0 = Monday .. 6 = Sunday; empty: every day) and `days_of_month` (1..31;
    empty: every day), except the `exclude` dates (ISO, local)."""

    kind: ClassVar[str] = "calendar"
    times: tuple[str, ...]
    zone: str = "UTC"
    days_of_week: tuple[int, ...] = ()
    days_of_month: tuple[int, ...] = ()
    exclude: tuple[str, ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _clock: tuple[time, ...] = field(init=False, repr=False, compare=False)
    _dow: frozenset[int] = field(init=False, repr=False, compare=False)
    _dom: frozenset[int] = field(init=False, repr=False, compare=False)
    _skip: frozenset[date] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_tz", _zone(self.zone, "trigger.zone"))
        if not isinstance(self.times, list | tuple) or not self.times:
            raise InvalidSchedule("trigger.times", "give at least one time of day ('HH:MM')")
        set_(self, "_clock", tuple(sorted({_parse_time(t) for t in self.times})))
        set_(self, "_dow", frozenset(_ints(self.days_of_week, "trigger.days_of_week", 0, 6)))
        set_(self, "_dom", frozenset(_ints(self.days_of_month, "trigger.days_of_month", 1, 31)))
        if not isinstance(self.exclude, list | tuple):
            raise InvalidSchedule(
                "trigger.exclude", f"expected a list of dates, got {self.exclude!r}"
            )
        set_(self, "_skip", frozenset(map(_parse_date, self.exclude)))
        for name in ("times", "days_of_week", "days_of_month", "exclude"):
            set_(self, name, tuple(getattr(self, name)))

    def matches(self, day: date) -> bool:
        return (
            (not self._dow or day.weekday() in self._dow)
            and (not self._dom or day.day in self._dom)
            and day not in self._skip
        )

    def next_after(self, t_ms: int) -> int | None:
        first = _local(t_ms, self._tz).date() - timedelta(days=1)  # a repeated hour's second pass
        for i in range(CALENDAR_SEARCH_DAYS):
            day = first + timedelta(days=i)
            if not self.matches(day):
                continue
            for clock in self._clock:
                at_ms = wall_time_ms(datetime.combine(day, clock), self._tz)
                if at_ms > t_ms:
                    return at_ms
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "times": list(self.times),
            "zone": self.zone,
            "days_of_week": list(self.days_of_week),
            "days_of_month": list(self.days_of_month),
            "exclude": list(self.exclude),
        }


def wall_time_ms(naive: datetime, zone: ZoneInfo) -> int:
    """The instant a local wall time names: its first instance when a fall-back repeats it;
    when a spring-forward skips it, the instant of the change (the first local time after it)."""
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return epoch_ms(first)
    # Skipped: fold=1 reads it with the offset after the change (an instant before the change),
    # fold=0 with the one before (after the change). The change lies between: find it.
    lo, hi = epoch_ms(naive.replace(tzinfo=zone, fold=1)) // 1000, epoch_ms(first) // 1000
    lo, hi = min(lo, hi), max(lo, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return lo * 1000


Trigger = CronTrigger | RateTrigger | DelayTrigger | CalendarTrigger
_KINDS: dict[str, type[Trigger]] = {
    t.kind: t for t in (CronTrigger, RateTrigger, DelayTrigger, CalendarTrigger)
}
_FIELDS: dict[str, frozenset[str]] = {
    "cron": frozenset({"cron", "zone"}),
    "rate": frozenset({"every_s", "anchor_ms"}),
    "delay": frozenset({"delay_s"}),
    "calendar": frozenset({"times", "zone", "days_of_week", "days_of_month", "exclude"}),
}


def trigger_from_json(data: Mapping[str, Any]) -> Trigger:
    """The trigger a ``to_json()`` dict (or a user's) describes; InvalidSchedule if it is not one."""
    if not isinstance(data, Mapping):
        raise InvalidSchedule("trigger", f"expected an object with a 'kind', got {data!r}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise InvalidSchedule("trigger.kind", f"expected one of {sorted(_KINDS)}, got {kind!r}")
    unknown = sorted(set(data) - _FIELDS[kind] - {"kind"})
    if unknown:
        raise InvalidSchedule(f"trigger.{unknown[0]}", f"not a field of a {kind} trigger")
    values = {k: v for k, v in data.items() if k != "kind"}
    for name in ("times", "days_of_week", "days_of_month", "exclude"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    try:
        return _KINDS[kind](**values)
    except TypeError as exc:  # a required field missing
        raise InvalidSchedule("trigger", f"incomplete {kind} trigger: {exc}") from None
