"""Blockouts (Quartz's calendars): named windows in which nothing of a scope fires. Pure.

A window is absolute (``{"start_ms": ..., "end_ms": ...}``) or recurring (``{"trigger": a cron or
calendar trigger, "duration_s": N}``: a window opens at each occurrence and lasts N s). A
blockout applies globally, to one entity type, one category or one schedule, and by its policy
a job due inside either fires at the window's end (``delay``; several falling in one window
become one fire there: their ids are the same) or is not fired at all (``skip``: its row is
stored MISSED with last_error ``blockout '<name>': skipped``, so the skip is on record).

Where the check runs: in the materialiser, as it turns schedule occurrences into rows (one
read of the small blockouts table per pass), and, for every job but by schedule scope, where a
claimed job is about to fire (infinite_scheduler/fire_blockouts.py): one-shot jobs, and
occurrences made ahead before a blockout was added. Both ask :func:`blocked`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from infinite_scheduler.schedules.triggers import (
    CalendarTrigger,
    CronTrigger,
    trigger_from_json,
)
from repos.schedules import BlockoutRow, InvalidSchedule

Scope = Literal["global", "entity", "category", "schedule"]
SCOPES = ("global", "entity", "category", "schedule")
POLICIES = ("delay", "skip")
#: Windows chained (one ending inside the next) before a delay gives up and skips.
MAX_CHAIN = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Blockout:
    """One blockout, its window read."""

    name: str
    scope: Scope
    target: str
    policy: Literal["delay", "skip"]
    start_ms: int | None = None  #: absolute window
    end_ms: int | None = None
    trigger: CronTrigger | CalendarTrigger | None = None  #: recurring window
    duration_ms: int = 0

    @classmethod
    def of(cls, row: BlockoutRow) -> Blockout:
        return make_blockout(
            row.name, orjson.loads(row.window_json), scope=row.scope, target=row.target,
            policy=row.policy,
        )  # fmt: skip

    def window_json(self) -> str:
        if self.trigger is None:
            return orjson.dumps({"start_ms": self.start_ms, "end_ms": self.end_ms}).decode()
        window = {"trigger": self.trigger.to_json(), "duration_s": self.duration_ms // 1000}
        return orjson.dumps(window).decode()

    def applies(self, *, entity: str, category: str, schedule: str) -> bool:
        return self.scope == "global" or self.target == {
            "entity": entity, "category": category, "schedule": schedule
        }.get(self.scope)  # fmt: skip

    def end_of_window(self, t_ms: int) -> int | None:
        """The end of this blockout's window holding t_ms (the later end, when windows of a
        recurring blockout overlap), or None if t_ms is outside every window."""
        if self.trigger is None:
            assert self.start_ms is not None and self.end_ms is not None
            return self.end_ms if self.start_ms <= t_ms < self.end_ms else None
        start = self.trigger.next_after(t_ms - self.duration_ms)
        if start is None or start > t_ms:
            return None
        end = start + self.duration_ms
        for _ in range(MAX_CHAIN):
            nxt = self.trigger.next_after(start)
            if nxt is None or nxt >= end:
                break
            start, end = nxt, max(end, nxt + self.duration_ms)
        return end


def make_blockout(
    name: str, window: Any, *, scope: str = "global", target: str = "", policy: str = "delay"
) -> Blockout:
    """Check a blockout's fields (InvalidSchedule naming the one at fault) and build it."""
    if not isinstance(name, str) or not 0 < len(name) <= 191:
        raise InvalidSchedule("name", f"expected 1..191 characters, got {name!r}")
    if scope not in SCOPES:
        raise InvalidSchedule("scope", f"expected one of {list(SCOPES)}, got {scope!r}")
    if (scope == "global") != (target == "") or not isinstance(target, str):
        raise InvalidSchedule(
            "target", "name the entity type, category or schedule; none for a global blockout"
        )
    if policy not in POLICIES:
        raise InvalidSchedule("policy", f"expected one of {list(POLICIES)}, got {policy!r}")
    common: dict[str, Any] = {"name": name, "scope": scope, "target": target, "policy": policy}
    if not isinstance(window, dict):
        raise InvalidSchedule("window", f"expected an object, got {window!r}")
    if "trigger" in window:
        return Blockout(**common, **_recurring(window))
    start, end = window.get("start_ms"), window.get("end_ms")
    if type(start) is not int or type(end) is not int:
        raise InvalidSchedule("window", "give start_ms and end_ms, or a trigger and duration_s")
    if end <= start:
        raise InvalidSchedule("window.end_ms", f"the end ({end}) is not after the start ({start})")
    return Blockout(**common, start_ms=start, end_ms=end)


def _recurring(window: dict[str, Any]) -> dict[str, Any]:
    trigger = trigger_from_json(window["trigger"])
    if not isinstance(trigger, CronTrigger | CalendarTrigger):
        raise InvalidSchedule("window.trigger", "a recurring window opens by cron or calendar")
    duration = window.get("duration_s")
    if type(duration) is not int or duration < 1:
        raise InvalidSchedule("window.duration_s", f"expected whole seconds >= 1, got {duration!r}")
    unknown = sorted(set(window) - {"trigger", "duration_s"})
    if unknown:
        raise InvalidSchedule(f"window.{unknown[0]}", "not a field of a recurring window")
    return {"trigger": trigger, "duration_ms": duration * 1000}


@dataclass(frozen=True, slots=True)
class Moved:
    """An occurrence a blockout delays to `at_ms` (the end of its window)."""

    at_ms: int
    blockout: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """An occurrence a blockout skips."""

    blockout: str


def blocked(blockouts: Sequence[Blockout], at_ms: int) -> Moved | Skipped | None:
    """What the blockouts (already those that apply) make of an occurrence at at_ms: None when
    it falls in no window. A delay to a window's end that falls in another window moves on to
    that one's end; a skip anywhere on the way wins."""
    moved: Moved | None = None
    for _ in range(MAX_CHAIN):
        hit = next(
            ((b, end) for b in blockouts if (end := b.end_of_window(at_ms)) is not None), None
        )
        if hit is None:
            return moved
        blockout, end = hit
        if blockout.policy == "skip":
            return Skipped(blockout.name)
        at_ms, moved = end, Moved(end, blockout.name)
    return Skipped(moved.blockout if moved else "")
