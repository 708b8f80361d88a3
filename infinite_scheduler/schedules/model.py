"""A recurring schedule as the engine reads it, and the pure decision of what to materialise.

:class:`Schedule` is a stored row (repos/schedules.py) with its trigger parsed; :func:`plan`
says, for one schedule at `now_ms`, which occurrences to make as one-shot rows before
`until_ms` and where the schedule then stands. No I/O, no clock: the materialiser asks, this
answers (like decisions.py for one-shot misfires).

Misfires (the materialiser was down): when the next occurrence is due longer ago than the
misfire threshold, the occurrences at or before now are **missed** (one due less long ago is
only late: a pass running behind makes it as it is, and it fires at once). Under ``fire_once_now`` they collapse into one: the latest of
them (not "now" itself: a pass repeated by another node computes the same id, and a duplicate
is ignored), which, being overdue, fires once at once; the next is computed from now. One that
is older than half the misfire horizon (a monthly schedule after weeks of downtime) is made at
now's second instead, so the fetcher still claims it. Under ``do_nothing`` the latest missed
occurrence is made only if it is within the misfire threshold (a pass running a little late),
and the rest are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from infinite_scheduler.decisions import MisfirePolicy
from infinite_scheduler.schedules.triggers import (
    DelayTrigger,
    RateTrigger,
    Trigger,
    trigger_from_json,
)
from repos.schedules import Advance, InvalidSchedule, ScheduleRow, ScheduleState

#: Steps a search for the latest missed occurrence takes from any one start.
_MAX_STEPS = 100_000
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A stored schedule with its trigger read."""

    row: ScheduleRow
    trigger: Trigger

    @classmethod
    def of(cls, row: ScheduleRow) -> Schedule:
        return cls(row=row, trigger=read_trigger(row.trigger_json))

    @property
    def template(self) -> dict[str, Any]:
        """The payload template (the materialiser stores its JSON as it is)."""
        template: dict[str, Any] = orjson.loads(self.row.template_json)
        return template

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    def log_context(self) -> dict[str, object]:
        return {"schedule": self.row.name, "schedule_id": self.row.id, "entity": self.row.entity}


@lru_cache(maxsize=16_384)
def read_trigger(trigger_json: str) -> Trigger:
    """A stored trigger, read and checked once per distinct JSON: every pass reads every due
    schedule's (triggers are immutable values, so sharing one is safe)."""
    return trigger_from_json(orjson.loads(trigger_json))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to make of one schedule now: the occurrence times, and the step to write."""

    occurrences: list[int]
    step: Advance
    missed: int  #: occurrences folded into one (fire_once_now) or dropped (do_nothing)
    #: Occurrences made ahead before the downtime and overdue now: to cancel, as they are
    #: missed too (those that fired before it are finished, and a cancel leaves them alone).
    stale: list[int] = field(default_factory=list)


def first_at(trigger: Trigger, start_ms: int) -> int | None:
    """The first occurrence at or after start_ms (a fixed delay's is the start itself)."""
    if isinstance(trigger, DelayTrigger):
        return start_ms
    return trigger.next_after(start_ms - 1)


def plan(
    s: Schedule,
    *,
    now_ms: int,
    until_ms: int,
    limit: int,
    horizon_ms: int,
    threshold_ms: int,
    ahead_ms: int,
) -> Plan:
    """The occurrences of an ACTIVE schedule to make before until_ms (at most `limit`), missed
    ones folded first (module docstring), and the step that records them."""
    row = s.row
    at = row.next_at_ms
    made: list[int] = []
    missed = 0
    stale: list[int] = []
    # Missed: due longer ago than the misfire threshold (the materialiser was down). Due less
    # long ago, an occurrence is only late: made as it is, it fires at once.
    if at is not None and at < now_ms - threshold_ms and _allowed(row, at, 0):
        stale = _made_ahead(s, now_ms, ahead_ms)
        latest, missed = _latest_missed(s.trigger, at, min(now_ms, _end(row)))
        keep = _kept(latest, now_ms, MisfirePolicy(row.misfire), horizon_ms, threshold_ms)
        if keep is not None:
            made.append(keep)
        missed -= len(made)
        at = _after(s.trigger, now_ms)
    while (
        at is not None
        and at < until_ms
        and len(made) < limit
        and _allowed(row, at, len(made))
        and not (made and isinstance(s.trigger, DelayTrigger))
    ):
        made.append(at)
        at = _after(s.trigger, at)
    return Plan(occurrences=made, step=_step(s, made, at), missed=missed + len(stale), stale=stale)


def _made_ahead(s: Schedule, now_ms: int, ahead_ms: int) -> list[int]:
    """The occurrences the last pass may have made ahead that are overdue at now_ms: those in
    (last_at - ahead, last_at] (every pass makes them before its own now + ahead)."""
    last = s.row.last_at_ms
    if last is None:
        return []
    if isinstance(s.trigger, DelayTrigger):
        return [last] if last <= now_ms else []
    times: list[int] = []
    at = s.trigger.next_after(last - ahead_ms)
    while at is not None and at <= min(last, now_ms) and len(times) < _MAX_STEPS:
        times.append(at)
        at = s.trigger.next_after(at)
    return times


def _end(row: ScheduleRow) -> int:
    return row.end_ms if row.end_ms is not None else 2**62


def _allowed(row: ScheduleRow, at_ms: int, made: int) -> bool:
    """Whether an occurrence at at_ms may be made after `made` others (in this pass, or since
    the row was read)."""
    if row.max_runs is not None and row.runs + made >= row.max_runs:
        return False
    return at_ms <= _end(row)


def _after(trigger: Trigger, t_ms: int) -> int | None:
    # A fixed delay's next occurrence waits for the previous one to finish (the materialiser).
    return None if isinstance(trigger, DelayTrigger) else trigger.next_after(t_ms)


def _latest_missed(trigger: Trigger, first_ms: int, bound_ms: int) -> tuple[int, int]:
    """The latest occurrence in [first_ms, bound_ms] and how many there are (first_ms is one)."""
    if isinstance(trigger, RateTrigger):
        period = trigger.every_s * 1000
        count = (bound_ms - first_ms) // period + 1
        return first_ms + (count - 1) * period, count
    if isinstance(trigger, DelayTrigger):
        return first_ms, 1
    latest, count = first_ms, 1
    # Long downtime of a frequent trigger: start near the bound instead of stepping through it.
    for window_ms in (_HOUR_MS, _DAY_MS):
        start = trigger.next_after(bound_ms - window_ms)
        if start is not None and first_ms < start <= bound_ms:
            latest, count = start, 2  # at least: first_ms and start (an estimate past here)
            break
    for _ in range(_MAX_STEPS):
        nxt = trigger.next_after(latest)
        if nxt is None or nxt > bound_ms:
            break
        latest, count = nxt, count + 1
    return latest, count


def _kept(
    latest: int, now_ms: int, policy: MisfirePolicy, horizon_ms: int, threshold_ms: int
) -> int | None:
    if policy is MisfirePolicy.DO_NOTHING:
        return latest if now_ms - latest <= threshold_ms else None
    if now_ms - latest > horizon_ms // 2:
        return now_ms - now_ms % 1000
    return latest


def _step(s: Schedule, made: list[int], next_at: int | None) -> Advance:
    row = s.row
    runs = row.runs + len(made)
    last = made[-1] if made else row.last_at_ms
    if isinstance(s.trigger, DelayTrigger) and made:
        state, next_at = ScheduleState.WAITING, None
    elif next_at is None or not _allowed(row, next_at, len(made)):
        state, next_at = ScheduleState.ENDED, None
    else:
        state = ScheduleState.ACTIVE
    return Advance(
        id=row.id, version=row.version, state=state, next_at_ms=next_at, last_at_ms=last, runs=runs
    )


def after_finish(s: Schedule, finished_ms: int) -> Advance:
    """A WAITING fixed-delay schedule whose last occurrence finished at finished_ms: ACTIVE
    again, its next occurrence the delay after (ENDED if that is past its end or max runs)."""
    row = s.row
    next_at = s.trigger.next_after(finished_ms)
    ended = next_at is None or not _allowed(row, next_at, 0)
    return Advance(
        id=row.id,
        version=row.version,
        state=ScheduleState.ENDED if ended else ScheduleState.ACTIVE,
        next_at_ms=None if ended else next_at,
        last_at_ms=row.last_at_ms,
        runs=row.runs,
    )


def check_window(start_ms: int, end_ms: int | None, max_runs: int | None) -> None:
    """The bad inputs of a schedule's bounds, each naming its field."""
    if type(start_ms) is not int or start_ms < 0:
        raise InvalidSchedule("start", f"expected epoch milliseconds >= 0, got {start_ms!r}")
    if end_ms is not None and end_ms <= start_ms:
        raise InvalidSchedule("end", f"the end ({end_ms}) is not after the start ({start_ms})")
    if max_runs is not None and (type(max_runs) is not int or max_runs < 1):
        raise InvalidSchedule("max_runs", f"expected an integer >= 1, got {max_runs!r}")
