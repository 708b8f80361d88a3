"""The schedules' Python API, one implementation behind the engine's and SchedulerClient's
``schedules`` attribute: create, get, list, update, pause, resume, delete, and blockouts.

Every input is checked before anything is written (InvalidSchedule naming the field): the
trigger, the bounds, the priority, and the payload template, from which one entity is built
and encoded as the entity type's spec would store it. A change (update, pause, resume) bumps
the schedule's generation and cancels the occurrences made ahead and not yet due (the
materialiser makes them up to a minute ahead): the next pass makes them anew, with the change,
under new ids (infinite_scheduler/schedules/ids.py). Changes are conditional on the stored
version and read again when the materialiser wrote in between.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from infinite_scheduler.clock import Clock, epoch_ms
from infinite_scheduler.decisions import MisfirePolicy
from infinite_scheduler.job import category_refusal
from infinite_scheduler.schedules.blockouts import Blockout, make_blockout
from infinite_scheduler.schedules.ids import check_schedule_id, extra_run_key, occurrence_key
from infinite_scheduler.schedules.materialiser import occurrence_row
from infinite_scheduler.schedules.model import Schedule, check_window, first_at
from infinite_scheduler.schedules.triggers import (
    CalendarTrigger,
    CronTrigger,
    DelayTrigger,
    Trigger,
    trigger_from_json,
)
from repos.base import EncodedBatch, EntitySpec, EntitySpecError, ShardingRepository, check_for
from repos.schedules import (
    BlockoutRow,
    InvalidSchedule,
    ScheduleError,
    ScheduleRow,
    ScheduleState,
    ScheduleStore,
)

logger = logging.getLogger(__name__)
Repo = ShardingRepository[Any, Any]
#: Reads and writes again when the materialiser changed the row in between.
CHANGE_ATTEMPTS = 5
#: A template's sample occurrence id and time, to check it builds an entity.
_SAMPLE_ID = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Triggered:
    """An extra run of a schedule: its job's id and time; `stored` False when the same run
    was stored already (a repeat within the id's resolution)."""

    schedule: int
    entity: str
    key: int | str
    at_ms: int
    stored: bool


class ScheduleBook:
    """Schedules and blockouts of one store, for the entity types given (by name)."""

    def __init__(
        self,
        store: ScheduleStore,
        repos: Mapping[str, Repo],
        *,
        clock: Clock,
        categories: Collection[str],
    ) -> None:
        """`categories`: those the config defines; a schedule or a blockout naming another is
        refused, as a job is (infinite_scheduler/job.py)."""
        self.store = store
        self._repos = repos
        self._clock = clock
        self._categories = frozenset(categories)

    @property
    def repositories(self) -> Mapping[str, Repo]:
        """The entity types' repositories, by name: the store views read their shards."""
        return self._repos

    async def create(
        self,
        name: str,
        entity: EntitySpec[Any, Any] | str,
        trigger: Trigger | Mapping[str, Any],
        payload_template: Mapping[str, Any],
        *,
        start: datetime | int | None = None,
        end: datetime | int | None = None,
        max_runs: int | None = None,
        priority: int = 500,
        category: str = "",
        owner: str = "",
        misfire: str = "fire_once_now",
        paused: bool = False,
    ) -> Schedule:
        """Check everything, then store the schedule; the first occurrence is made by the next
        materialisation pass. `start` defaults to now; times are aware datetimes or epoch ms."""
        now_ms = self._clock.now_ms()
        spec = self._spec(entity)
        start_ms = now_ms if start is None else _ms(start, "start")
        end_ms = None if end is None else _ms(end, "end")
        check_window(start_ms, end_ms, max_runs)
        _check_fields(name, priority, category, owner, misfire)
        self._check_category("category", category)
        fields = {"name": name, "max_runs": max_runs, "priority": priority, "category": category,
                  "owner": owner, "misfire": misfire, "paused": paused}  # fmt: skip
        row = _new_row(spec, _trigger(trigger), payload_template, start_ms, end_ms, now_ms, fields)
        stored = await self.store.create(row)
        try:
            check_schedule_id(spec.key_type, stored.id)
        except InvalidSchedule:
            await self.store.delete(stored.id)
            raise
        logger.info("schedule %r created", name, extra=Schedule.of(stored).log_context())
        return Schedule.of(stored)

    async def get(self, ref: int | str) -> Schedule:
        """By id or name; ScheduleNotFound if there is none."""
        return Schedule.of(await self.store.get(ref))

    async def list(
        self, *, entity: str | None = None, limit: int = 1000, after: int = 0
    ) -> builtins.list[Schedule]:
        """Every schedule (of one entity type, if given), by id; from id `after` on (keyset
        pages)."""
        found: list[Schedule] = []
        while len(found) < limit:
            rows = await self.store.list_schedules(
                entity=entity, after_id=after, limit=min(500, limit)
            )
            if not rows:
                break
            found += map(Schedule.of, rows)
            after = rows[-1].id
        return found[:limit]

    async def update(self, ref: int | str, **changes: Any) -> Schedule:
        """Change any of: trigger, payload_template, end, max_runs, priority, category, owner,
        misfire, name. Occurrences made ahead are cancelled and made again with the change."""
        return await self._change(ref, lambda s, now: self._updated(s, changes, now))

    async def pause(self, ref: int | str) -> Schedule:
        """No occurrence is made until resume(); those made ahead are cancelled."""
        return await self._change(ref, lambda s, now: replace(s.row, paused=True))

    async def resume(self, ref: int | str) -> Schedule:
        """Occurrences are made again from now on (those due while paused are not made)."""
        return await self._change(ref, self._resumed)

    async def trigger(self, ref: int | str) -> Triggered:
        """One extra occurrence of the schedule, due now, stored as the materialiser stores
        one (ids.extra_run_key: the same id again within the same second is not stored
        twice). The schedule itself is not touched: its next occurrence, its run count and
        its state stay. A paused or ended schedule runs too: an operator asked for it."""
        s = await self.get(ref)
        repo = self._repos.get(s.row.entity)
        if repo is None:
            raise InvalidSchedule("entity", f"entity type {s.row.entity!r} is not registered here")
        now_ms = self._clock.now_ms()
        key = extra_run_key(repo.spec.key_type, s.id, s.row.generation, now_ms)
        row = occurrence_row(s, key, now_ms, s.row.template_json.encode())
        check_for(repo, EncodedBatch.of_rows([row]), now_ms=now_ms)
        stored = await repo.insert_rows([row], now_ms=now_ms, on_duplicate="ignore") == 1
        logger.info("schedule %r triggered: %r", s.name, key, extra=s.log_context())
        return Triggered(schedule=s.id, entity=s.row.entity, key=key, at_ms=now_ms, stored=stored)

    async def delete(self, ref: int | str) -> bool:
        """Delete the schedule and cancel its occurrences made ahead; False if there was none."""
        try:
            s = await self.get(ref)
        except ScheduleError:
            return False
        deleted = await self.store.delete(s.id)
        await self._cancel_ahead(s, self._clock.now_ms())
        return deleted

    # -- blockouts ----------------------------------------------------------------------------

    async def add_blockout(
        self,
        name: str,
        window: Mapping[str, Any],
        *,
        scope: str = "global",
        target: str = "",
        policy: str = "delay",
    ) -> Blockout:
        """A window of ``{"start": datetime, "end": datetime}`` (or start_ms/end_ms), or
        ``{"trigger": cron/calendar, "duration_s": N}``; scope global/entity/category/schedule."""
        window = dict(window)
        for key in ("start", "end"):
            if key in window:
                window[f"{key}_ms"] = _ms(window.pop(key), f"window.{key}")
        if isinstance(window.get("trigger"), CronTrigger | CalendarTrigger):
            window["trigger"] = window["trigger"].to_json()
        blockout = make_blockout(name, window, scope=scope, target=target, policy=policy)
        if scope == "category":
            self._check_category("target", target)
        row = BlockoutRow(
            name=name,
            scope=scope,
            target=target,
            window_json=blockout.window_json(),
            policy=policy,
            created_at_ms=self._clock.now_ms(),
        )
        return Blockout.of(await self.store.create_blockout(row))

    async def blockouts(self) -> builtins.list[Blockout]:
        return [Blockout.of(row) for row in await self.store.blockouts()]

    async def remove_blockout(self, name: str) -> bool:
        return await self.store.delete_blockout(name)

    # -- internals ----------------------------------------------------------------------------

    def _check_category(self, field: str, category: str) -> None:
        refused = category_refusal(category, self._categories)
        if refused is not None:
            raise InvalidSchedule(field, f"{category!r}: {refused}")

    def _spec(self, entity: EntitySpec[Any, Any] | str) -> EntitySpec[Any, Any]:
        name = entity if isinstance(entity, str) else entity.name
        repo = self._repos.get(name)
        if repo is None:
            raise InvalidSchedule(
                "entity",
                f"entity type {name!r} is not registered here (known: {sorted(self._repos)})",
            )
        return repo.spec

    async def _change(
        self, ref: int | str, change: Callable[[Schedule, int], ScheduleRow]
    ) -> Schedule:
        """Apply `change` (the schedule as stored, now) with a new generation, conditional on
        the version read; then cancel what the old generation made ahead."""
        for _ in range(CHANGE_ATTEMPTS):
            s = await self.get(ref)
            now_ms = self._clock.now_ms()
            row = change(s, now_ms)
            row = replace(row, generation=s.row.generation + 1)
            stored = await self.store.replace(row, now_ms=now_ms)
            if stored is not None:
                await self._cancel_ahead(s, now_ms)
                logger.info("schedule %r changed", s.name, extra=s.log_context())
                return Schedule.of(stored)
        raise ScheduleError(f"schedule {ref!r} kept changing; try again")

    def _updated(self, s: Schedule, changes: Mapping[str, Any], now_ms: int) -> ScheduleRow:
        allowed = {"trigger", "payload_template", "end", "max_runs", "priority", "category",
                   "owner", "misfire", "name"}  # fmt: skip
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise InvalidSchedule(unknown[0], f"cannot be changed (changeable: {sorted(allowed)})")
        row = s.row
        trig = _trigger(changes["trigger"]) if "trigger" in changes else s.trigger
        end_ms = row.end_ms
        if "end" in changes:
            end_ms = None if changes["end"] is None else _ms(changes["end"], "end")
        max_runs = changes.get("max_runs", row.max_runs)
        check_window(row.start_ms, end_ms, max_runs)
        fields = {k: changes.get(k, getattr(row, k)) for k in
                  ("name", "priority", "category", "owner", "misfire")}  # fmt: skip
        _check_fields(**fields)
        if "category" in changes:
            self._check_category("category", fields["category"])
        template = row.template_json
        if "payload_template" in changes:
            spec = self._spec(row.entity)
            template = encode_template(spec, changes["payload_template"], row.start_ms)
        updated = replace(
            row, trigger_json=orjson.dumps(trig.to_json()).decode(), template_json=template,
            end_ms=end_ms, max_runs=max_runs, **fields,
        )  # fmt: skip
        return _restarted(Schedule.of(updated), now_ms)

    def _resumed(self, s: Schedule, now_ms: int) -> ScheduleRow:
        return _restarted(replace(s, row=replace(s.row, paused=False)), now_ms)

    async def _cancel_ahead(self, s: Schedule, now_ms: int) -> int:
        """Cancel the occurrences of `s` (as it was) made ahead: due after now, up to the last
        one made. Cancel takes a CLAIMED row too: a node holding one whose payload it has not
        read yet (more than payload_ahead_s ahead) does not fire it."""
        repo = self._repos.get(s.row.entity)
        last = s.row.last_at_ms
        if repo is None or last is None or last <= now_ms:
            return 0
        times = []
        if isinstance(s.trigger, DelayTrigger):
            times = [last]
        else:
            at = s.trigger.next_after(now_ms)
            while at is not None and at <= last and len(times) < 10_000:
                times.append(at)
                at = s.trigger.next_after(at)
        key_type = repo.spec.key_type
        keys = [occurrence_key(key_type, s.id, s.row.generation, at) for at in times]
        return await repo.cancel(keys) if keys else 0


def _new_row(
    spec: EntitySpec[Any, Any],
    trigger: Trigger,
    template: Mapping[str, Any],
    start_ms: int,
    end_ms: int | None,
    now_ms: int,
    fields: Mapping[str, Any],
) -> ScheduleRow:
    """A new schedule's row, its template checked and its first occurrence computed."""
    next_at = first_at(trigger, start_ms)
    return ScheduleRow(
        entity=spec.name,
        trigger_json=orjson.dumps(trigger.to_json()).decode(),
        template_json=encode_template(spec, template, start_ms),
        start_ms=start_ms,
        end_ms=end_ms,
        state=ScheduleState.ACTIVE if next_at is not None else ScheduleState.ENDED,
        next_at_ms=next_at,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        **fields,
    )


def _restarted(s: Schedule, now_ms: int) -> ScheduleRow:
    """The row with its next occurrence computed from now (or its start, if later)."""
    row = s.row
    start = max(row.start_ms, now_ms + 1)
    next_at = first_at(s.trigger, start)
    ended = next_at is None or (row.end_ms is not None and next_at > row.end_ms)
    ended = ended or (row.max_runs is not None and row.runs >= row.max_runs)
    return replace(
        row,
        state=ScheduleState.ENDED if ended else ScheduleState.ACTIVE,
        next_at_ms=None if ended else next_at,
    )


def _trigger(trigger: Trigger | Mapping[str, Any]) -> Trigger:
    if isinstance(trigger, Mapping):
        return trigger_from_json(trigger)
    if hasattr(trigger, "next_after") and hasattr(trigger, "to_json"):
        return trigger
    raise InvalidSchedule("trigger", f"expected a trigger or its JSON, got {trigger!r}")


def _ms(value: object, field: str) -> int:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidSchedule(field, "naive datetime: give it a timezone (UTC)")
        return epoch_ms(value)
    if type(value) is int:
        return value
    raise InvalidSchedule(field, f"expected an aware datetime or epoch ms, got {value!r}")


def _check_fields(name: str, priority: int, category: str, owner: str, misfire: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= 191:
        raise InvalidSchedule("name", f"expected 1..191 characters, got {name!r}")
    if type(priority) is not int or not 1 <= priority <= 1000:
        raise InvalidSchedule("priority", f"expected an integer 1..1000, got {priority!r}")
    if not isinstance(category, str) or len(category) > 64:
        raise InvalidSchedule("category", f"expected at most 64 characters, got {category!r}")
    if not isinstance(owner, str) or len(owner) > 191:
        raise InvalidSchedule("owner", f"expected at most 191 characters, got {owner!r}")
    if misfire not in tuple(MisfirePolicy):
        raise InvalidSchedule(
            "misfire", f"expected one of {[p.value for p in MisfirePolicy]}, got {misfire!r}"
        )


def encode_template(spec: EntitySpec[Any, Any], template: Mapping[str, Any], at_ms: int) -> str:
    """The payload every occurrence stores, checked by building one entity from the template
    and encoding it as the spec does; InvalidSchedule naming the template's field at fault."""
    if not isinstance(template, Mapping):
        raise InvalidSchedule("payload_template", f"expected an object, got {template!r}")
    for key in template:
        if key in (spec.id_field, spec.time_field):
            raise InvalidSchedule(
                f"payload_template.{key}", "is set per occurrence by the schedule"
            )
        if key not in spec.payload_fields:
            raise InvalidSchedule(
                f"payload_template.{key}", f"not a field of {spec.model.__name__}"
            )
    try:
        payload = orjson.dumps(dict(template))
    except TypeError as exc:
        raise InvalidSchedule("payload_template", f"not serialisable to JSON: {exc}") from None
    sample_key: int | str = _SAMPLE_ID if spec.key_type is int else "sample"
    try:
        entity = spec.decode(sample_key, at_ms, payload)
        return spec.encode(entity).payload.decode()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "?"
        raise InvalidSchedule(f"payload_template.{where}", first["msg"]) from None
    except EntitySpecError as exc:
        raise InvalidSchedule(f"payload_template.{exc.field or '?'}", exc.reason) from None
    except (TypeError, ValueError) as exc:
        missing = [f for f in spec.payload_fields if f not in template]
        where = missing[0] if missing else "?"
        raise InvalidSchedule(
            f"payload_template.{where}", f"does not build a {spec.model.__name__}: {exc}"
        ) from None
