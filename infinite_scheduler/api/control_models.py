"""Request and response bodies of the control routes: jobs, categories, the engine pause and a
schedule's extra run. As in models.py: requests forbid unknown fields, times are ISO 8601 with
a zone."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from infinite_scheduler.api.models import Time, _Request, at, opt_at
from infinite_scheduler.clock import epoch_ms
from infinite_scheduler.management import BulkResult, JobFilter, JobView
from infinite_scheduler.schedules.book import Triggered
from repos.base import Status

StateName = Literal[
    "PENDING", "CLAIMED", "DONE", "FAILED", "CANCELLED", "MISSED", "WAITING", "PAUSED"
]
BulkOperation = Literal["cancel", "pause", "resume", "run-now"]
#: Entity type names and job ids as the stores hold them.
ENTITY_MAX = 64
ID_MAX = 191


class JobOut(BaseModel):
    entity: str
    id: int | str
    state: str
    scheduled_at: datetime
    due_at: datetime
    attempts: int
    claimed_by: str | None
    fired_at: datetime | None
    last_error: str | None
    priority: int
    category: str
    #: The schedule it is an occurrence of (its owner's), or null: a one-shot job.
    schedule: int | None
    shard: str

    @classmethod
    def of(cls, job: JobView) -> JobOut:
        return cls(
            entity=job.entity,
            id=job.id,
            state=job.state,
            scheduled_at=at(job.scheduled_ms),
            due_at=at(job.due_ms),
            attempts=job.attempts,
            claimed_by=job.claimed_by,
            fired_at=opt_at(job.fired_ms),
            last_error=job.last_error,
            priority=job.priority,
            category=job.category,
            schedule=job.schedule,
            shard=job.shard,
        )


class JobPageOut(BaseModel):
    #: The caller's jobs of one store page: a non-admin's may hold fewer than asked (others'
    #: occurrences are left out); follow next_cursor until it is null.
    items: list[JobOut]
    next_cursor: str | None


class Reschedule(_Request):
    at: Time


class BulkRequest(_Request):
    """The jobs a bulk operation takes: every field narrows. Without `schedule` it takes
    ADMIN (it reaches one-shot jobs and every owner's occurrences)."""

    entity: str = Field(min_length=1, max_length=ENTITY_MAX)
    states: list[StateName] = Field(default_factory=list, max_length=8)
    from_: Time | None = Field(default=None, alias="from")
    before: Time | None = None
    category: str | None = Field(default=None, max_length=64)
    schedule: int | None = Field(default=None, ge=1, le=2**63 - 1)
    dry_run: bool = False

    def job_filter(self) -> JobFilter:
        return JobFilter(
            entity=self.entity,
            states=frozenset(Status[name] for name in self.states),
            from_ms=None if self.from_ is None else epoch_ms(self.from_),
            before_ms=None if self.before is None else epoch_ms(self.before),
            category=self.category,
            schedule=self.schedule,
        )


class BulkOut(BaseModel):
    operation: str
    matched: int
    changed: int
    dry_run: bool

    @classmethod
    def of(cls, result: BulkResult) -> BulkOut:
        return cls(
            operation=result.operation,
            matched=result.matched,
            changed=result.changed,
            dry_run=result.dry_run,
        )


class CategoryOut(BaseModel):
    name: str
    paused: bool
    paused_at: datetime | None


class EngineOut(BaseModel):
    #: The stored pause: every node claims nothing and drains what it holds.
    paused: bool
    paused_at: datetime | None


class TriggeredOut(BaseModel):
    schedule: int
    entity: str
    #: The extra run's job id (GET /jobs/{entity}/{job_id} follows it).
    job_id: int | str
    at: datetime
    #: False: the same run was stored already (a repeat within a second).
    stored: bool

    @classmethod
    def of(cls, run: Triggered) -> TriggeredOut:
        return cls(
            schedule=run.schedule,
            entity=run.entity,
            job_id=run.key,
            at=at(run.at_ms),
            stored=run.stored,
        )
