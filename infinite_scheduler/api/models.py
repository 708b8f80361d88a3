"""The API's request and response bodies. Requests forbid unknown fields (a typo is an error,
never silently ignored); times are ISO 8601 with a zone, or null."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from infinite_scheduler.schedules.blockouts import Blockout
from infinite_scheduler.schedules.model import Schedule
from repos.access import AuditRow

Misfire = Literal["fire_once_now", "do_nothing"]
#: The latest time taken: a schedule's occurrences (a century apart at most) stay datetimes.
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _not_too_late(value: datetime) -> datetime:
    if value >= LATEST:
        raise ValueError(f"must be before {LATEST.isoformat()}")
    return value


Time = Annotated[AwareDatetime, AfterValidator(_not_too_late)]
#: Names, categories and owners: as long as the schedules table holds.
Name = Field(min_length=1, max_length=191)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScheduleCreate(_Request):
    name: str = Name
    entity: str = Field(min_length=1, max_length=64)
    trigger: dict[str, Any] = Field(
        description='{"kind": "cron", "cron": "0 9 * * *", "zone": "Europe/Paris"}, '
        '{"kind": "rate", "every_s": 60}, {"kind": "delay", "delay_s": 30}, or a calendar'
    )
    payload_template: dict[str, Any] = Field(default_factory=dict)
    start: Time | None = None
    end: Time | None = None
    max_runs: int | None = Field(default=None, ge=1, le=2**31)
    priority: int = Field(default=500, ge=1, le=1000)
    category: str = Field(default="", max_length=64)
    owner: str | None = Field(default=None, max_length=191)
    misfire: Misfire = "fire_once_now"
    paused: bool = False


class ScheduleUpdate(_Request):
    """Only the fields given change; the others stay."""

    name: str | None = Field(default=None, min_length=1, max_length=191)
    trigger: dict[str, Any] | None = None
    payload_template: dict[str, Any] | None = None
    end: Time | None = None
    max_runs: int | None = Field(default=None, ge=1, le=2**31)
    priority: int | None = Field(default=None, ge=1, le=1000)
    category: str | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=191)
    misfire: Misfire | None = None


class ScheduleOut(BaseModel):
    id: int
    name: str
    entity: str
    trigger: dict[str, Any]
    payload_template: dict[str, Any]
    start: datetime
    end: datetime | None
    max_runs: int | None
    runs: int
    priority: int
    category: str
    owner: str
    misfire: str
    paused: bool
    state: str
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: Schedule) -> ScheduleOut:
        row = s.row
        return cls(
            id=row.id,
            name=row.name,
            entity=row.entity,
            trigger=s.trigger.to_json(),
            payload_template=s.template,
            start=at(row.start_ms),
            end=opt_at(row.end_ms),
            max_runs=row.max_runs,
            runs=row.runs,
            priority=row.priority,
            category=row.category,
            owner=row.owner,
            misfire=row.misfire,
            paused=row.paused,
            state=row.state.name,
            next_fire_at=opt_at(row.next_at_ms),
            last_fire_at=opt_at(row.last_at_ms),
            created_at=at(row.created_at_ms),
            updated_at=at(row.updated_at_ms),
        )


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    #: Pass as `after` for the next page; null: this was the last.
    next_after: int | None


class BlockoutCreate(_Request):
    """A window: `start` and `end`, or a recurring one: `trigger` (cron or calendar) and
    `duration_s`."""

    name: str = Name
    start: Time | None = None
    end: Time | None = None
    trigger: dict[str, Any] | None = None
    duration_s: int | None = Field(default=None, ge=1, le=366 * 86_400)
    scope: Literal["global", "entity", "category", "schedule"] = "global"
    target: str = Field(default="", max_length=191)
    policy: Literal["delay", "skip"] = "delay"

    def window(self) -> dict[str, Any]:
        """The window as ScheduleBook.add_blockout takes it (only the keys given)."""
        given = {"start": self.start, "end": self.end, "trigger": self.trigger,
                 "duration_s": self.duration_s}  # fmt: skip
        return {key: value for key, value in given.items() if value is not None}


class BlockoutOut(BaseModel):
    name: str
    scope: str
    target: str
    start: datetime | None
    end: datetime | None
    trigger: dict[str, Any] | None
    duration_s: int | None
    policy: str

    @classmethod
    def of(cls, b: Blockout) -> BlockoutOut:
        recurring = b.trigger is not None
        return cls(
            name=b.name,
            scope=b.scope,
            target=b.target,
            start=opt_at(b.start_ms),
            end=opt_at(b.end_ms),
            trigger=None if b.trigger is None else b.trigger.to_json(),
            duration_s=b.duration_ms // 1000 if recurring else None,
            policy=b.policy,
        )


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    request_id: str

    @classmethod
    def of(cls, row: AuditRow) -> AuditOut:
        return cls(
            id=row.id,
            at=at(row.at_ms),
            actor=row.actor,
            action=row.action,
            target=row.target,
            before=None if row.before_json is None else orjson.loads(row.before_json),
            after=None if row.after_json is None else orjson.loads(row.after_json),
            request_id=row.request_id,
        )


class AuditPage(BaseModel):
    items: list[AuditOut]
    #: Pass as `before` for the next (older) page; null: this was the last.
    next_before: int | None


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    ready: bool
    store: Literal["ok", "unreachable"]
    node: Literal["active", "inactive", "none"]
    #: "paused": claiming nothing, draining (the engine pause); "none": no engine here.
    engine: Literal["running", "paused", "none"] = "none"


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def opt_at(ms: int | None) -> datetime | None:
    return None if ms is None else at(ms)
