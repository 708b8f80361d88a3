"""``/jobs``: list, read, cancel, pause, resume, run now and reschedule stored jobs, one at a
time or in bulk by filter, over the job service (infinite_scheduler/management), which holds
every rule about states; its refusals answer 409 (the state), 422 (a field) or 404.

Who may change which job is roles.py's rule: an occurrence is its schedule's owner's (others:
404), a one-shot job no one's (read by all, changed by ADMIN: 403). Each change is written to
the audit log with the job before and after.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from infinite_scheduler.api.auth import caller, require, services
from infinite_scheduler.api.control_models import (
    ENTITY_MAX,
    ID_MAX,
    BulkOperation,
    BulkOut,
    BulkRequest,
    JobOut,
    JobPageOut,
    Reschedule,
    StateName,
)
from infinite_scheduler.api.errors import ERROR_RESPONSES, Forbidden, NotFound
from infinite_scheduler.api.roles import Caller, Role, may_change_job, may_see_job
from infinite_scheduler.api.services import ApiServices
from infinite_scheduler.errors import ScheduleNotFound
from infinite_scheduler.management import JobFilter, JobView, Operation, PageRequest
from infinite_scheduler.management.values import DEFAULT_PAGE, MAX_PAGE
from repos.base import Status

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERROR_RESPONSES)
Reader = Annotated[Caller, Depends(require(Role.READ))]
Scheduler = Annotated[Caller, Depends(require(Role.SCHEDULE))]
Executor = Annotated[Caller, Depends(require(Role.EXECUTE))]
Services = Annotated[ApiServices, Depends(services)]
Entity = Annotated[str, Path(min_length=1, max_length=ENTITY_MAX, description="entity type")]
JobId = Annotated[str, Path(min_length=1, max_length=ID_MAX, description="the job's id")]
#: The role each bulk operation takes, as its one-job form does.
BULK_ROLE = {"cancel": Role.SCHEDULE, "pause": Role.SCHEDULE, "resume": Role.SCHEDULE,
             "run-now": Role.EXECUTE}  # fmt: skip


@router.get("", response_model=JobPageOut)
async def list_jobs(
    who: Reader,
    found: Services,
    entity: Annotated[str, Query(min_length=1, max_length=ENTITY_MAX)],
    state: Annotated[list[StateName] | None, Query(max_length=8)] = None,
    from_: Annotated[int | None, Query(alias="from", ge=0, le=2**53)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    schedule: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    order: Annotated[str, Query(pattern="^(oldest|newest)$")] = "oldest",
) -> JobPageOut:
    """A page of jobs of one entity type in scheduled-time order; `from` and `before` bound
    the scheduled time (epoch ms). Pass `next_cursor` as `cursor` for the next page."""
    if schedule is not None and not may_see_job(who, await _owner(found, schedule)):
        raise NotFound(f"no schedule {schedule} in the store", field="schedule")
    job_filter = JobFilter(
        entity=entity,
        states=frozenset(Status[name] for name in state or ()),
        from_ms=from_,
        before_ms=before,
        category=category,
        schedule=schedule,
    )
    page = await found.jobs.list_jobs(
        job_filter,
        PageRequest(size=size, cursor=cursor, order="newest" if order == "newest" else "oldest"),
    )
    owners: dict[int, str | None] = {}
    items = [JobOut.of(job) for job in page.jobs if await _visible(found, who, job, owners)]
    return JobPageOut(items=items, next_cursor=page.next_cursor)


@router.get("/{entity}/{job_id}", response_model=JobOut)
async def get_job(entity: Entity, job_id: JobId, who: Reader, found: Services) -> JobOut:
    """One job: its state, times, attempts, claim and last error."""
    return JobOut.of(await _readable(found, who, entity, job_id))


@router.post("/{entity}/{job_id}/cancel", response_model=JobOut)
async def cancel_job(entity: Entity, job_id: JobId, who: Scheduler, found: Services) -> JobOut:
    """Cancel a PENDING, PAUSED, WAITING or CLAIMED job (claimed: its node drops it if this
    lands at least a second before it is due; closer, 409)."""
    return await _change(found, who, Operation.CANCEL, entity, job_id)


@router.post("/{entity}/{job_id}/pause", response_model=JobOut)
async def pause_job(entity: Entity, job_id: JobId, who: Scheduler, found: Services) -> JobOut:
    """Hold a PENDING or CLAIMED job back until resumed."""
    return await _change(found, who, Operation.PAUSE, entity, job_id)


@router.post("/{entity}/{job_id}/resume", response_model=JobOut)
async def resume_job(entity: Entity, job_id: JobId, who: Scheduler, found: Services) -> JobOut:
    """A PAUSED job back to PENDING at its time (overdue: it fires once, now)."""
    return await _change(found, who, Operation.RESUME, entity, job_id)


@router.post("/{entity}/{job_id}/run-now", response_model=JobOut)
async def run_job_now(entity: Entity, job_id: JobId, who: Executor, found: Services) -> JobOut:
    """A PENDING or PAUSED job due now: the next poll of any node claims it."""
    return await _change(found, who, Operation.RUN_NOW, entity, job_id)


@router.post("/{entity}/{job_id}/reschedule", response_model=JobOut)
async def reschedule_job(
    entity: Entity, job_id: JobId, body: Reschedule, who: Scheduler, found: Services
) -> JobOut:
    """A PENDING or PAUSED job to a new time (not in the past), moved between shards."""
    return await _change(found, who, Operation.RESCHEDULE, entity, job_id, body)


@router.post("/bulk/{operation}", response_model=BulkOut)
async def bulk(
    operation: Annotated[BulkOperation, Path()],
    body: BulkRequest,
    who: Annotated[Caller, Depends(caller)],
    found: Services,
) -> BulkOut:
    """cancel, pause, resume or run-now every job the filter matches that is in a state the
    operation takes; `dry_run` counts them and changes nothing. The role is the operation's;
    without a `schedule` (the caller's) it is ADMIN: the filter would reach one-shot jobs and
    other owners' occurrences, which a non-admin may not change."""
    needs = BULK_ROLE[operation] if body.schedule is not None else Role.ADMIN
    if not who.may(needs):
        raise Forbidden(
            f"token {who.name!r} has role {who.role.name}; bulk {operation}"
            f"{'' if body.schedule is not None else ' without a schedule'} needs {needs.name}"
        )
    if body.schedule is not None and not may_change_job(who, await _owner(found, body.schedule)):
        raise NotFound(f"no schedule {body.schedule} in the store", field="body.schedule")
    result = await found.jobs.bulk(operation, body.job_filter(), dry_run=body.dry_run)
    out = BulkOut.of(result)
    if not body.dry_run:
        await found.auditor.record(
            who.name,
            f"jobs.bulk.{operation}",
            f"jobs {body.entity}",
            body.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            out.model_dump(mode="json"),
        )
    return out


async def _change(
    found: ApiServices,
    who: Caller,
    op: Operation,
    entity: str,
    job_id: str,
    body: Reschedule | None = None,
) -> JobOut:
    before = await _readable(found, who, entity, job_id)
    if not may_change_job(who, await _job_owner(found, before)):
        raise Forbidden(f"{entity} {before.id!r} is a one-shot job: only ADMIN changes it")
    if op is Operation.RESCHEDULE:
        assert body is not None
        after = await found.jobs.reschedule(entity, before.id, body.at)
    else:
        call = {Operation.CANCEL: found.jobs.cancel, Operation.PAUSE: found.jobs.pause,
                Operation.RESUME: found.jobs.resume, Operation.RUN_NOW: found.jobs.run_now}[op]  # fmt: skip
        after = await call(entity, before.id)
    out = JobOut.of(after)
    await found.auditor.record(
        who.name,
        f"job.{op.value}",
        f"job {entity} {after.id}",
        JobOut.of(before).model_dump(mode="json"),
        out.model_dump(mode="json"),
    )
    return out


async def _readable(found: ApiServices, who: Caller, entity: str, job_id: str) -> JobView:
    """The job, if the caller may see it; 404 otherwise (absent or another owner's)."""
    job = await found.jobs.get_job(entity, job_id)
    if not may_see_job(who, await _job_owner(found, job)):
        raise NotFound(f"{entity} {job_id!r}: no such job in the live shards")
    return job


async def _visible(
    found: ApiServices, who: Caller, job: JobView, owners: dict[int, str | None]
) -> bool:
    if who.admin or job.schedule is None:
        return True
    if job.schedule not in owners:
        owners[job.schedule] = await _owner(found, job.schedule)
    return may_see_job(who, owners[job.schedule])


async def _job_owner(found: ApiServices, job: JobView) -> str | None:
    return None if job.schedule is None else await _owner(found, job.schedule)


async def _owner(found: ApiServices, schedule_id: int) -> str | None:
    """The owner of a schedule; None when it is no longer stored (its jobs are no one's)."""
    try:
        return (await found.schedules.get(schedule_id)).row.owner
    except ScheduleNotFound:
        return None
