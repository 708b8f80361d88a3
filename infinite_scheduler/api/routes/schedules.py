"""``/schedules``: list, read, create, update, pause, resume and delete recurring schedules,
over ScheduleBook (infinite_scheduler/schedules/book.py), which checks every field. Each change
is written to the audit log with the schedule before and after.

A non-admin caller sees only the schedules its token's owner owns; any other is 404, as one
that does not exist (roles.py says why)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from infinite_scheduler.api.auth import require, services
from infinite_scheduler.api.control_models import TriggeredOut
from infinite_scheduler.api.errors import ERROR_RESPONSES, Forbidden, NotFound
from infinite_scheduler.api.models import ScheduleCreate, ScheduleOut, SchedulePage, ScheduleUpdate
from infinite_scheduler.api.roles import Caller, Role
from infinite_scheduler.api.services import ApiServices
from infinite_scheduler.schedules.model import Schedule

router = APIRouter(prefix="/schedules", tags=["schedules"], responses=ERROR_RESPONSES)
Reader = Annotated[Caller, Depends(require(Role.READ))]
Scheduler = Annotated[Caller, Depends(require(Role.SCHEDULE))]
Services = Annotated[ApiServices, Depends(services)]
ScheduleId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the schedule's id")]
#: Rows read per store page while filling a caller's page with the schedules it owns.
SCAN_PAGE = 500


@router.get("", response_model=SchedulePage)
async def list_schedules(
    who: Reader,
    found: Services,
    entity: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SchedulePage:
    """The schedules the caller may see, by id, `limit` at a time from id `after` on."""
    items: list[Schedule] = []
    cursor = after
    while len(items) < limit:
        page = await found.schedules.list(entity=entity, after=cursor, limit=SCAN_PAGE)
        for s in page:
            cursor = s.id
            if who.owns(s.row.owner):
                items.append(s)
                if len(items) == limit:
                    break
        if len(page) < SCAN_PAGE:
            break
    more = len(items) == limit
    return SchedulePage(
        items=[ScheduleOut.of(s) for s in items], next_after=items[-1].id if more else None
    )


@router.get("/{schedule_id}", response_model=ScheduleOut)
async def get_schedule(schedule_id: ScheduleId, who: Reader, found: Services) -> ScheduleOut:
    return ScheduleOut.of(await _visible(found, who, schedule_id))


@router.post("", response_model=ScheduleOut, status_code=201)
async def create_schedule(body: ScheduleCreate, who: Scheduler, found: Services) -> ScheduleOut:
    """Store a new schedule; its first occurrence is made by the engine's next pass."""
    owner = who.owner_for(body.owner)
    if owner is None:
        raise Forbidden(
            f"token {who.name!r} may create schedules of owner {who.owner!r} only",
            field="body.owner",
        )
    fields = body.model_dump(exclude={"name", "entity", "trigger", "payload_template", "owner"})
    created = await found.schedules.create(
        body.name, body.entity, body.trigger, body.payload_template, owner=owner, **fields
    )
    out = ScheduleOut.of(created)
    await _audit(found, who, "schedule.create", created.id, None, out)
    return out


@router.patch("/{schedule_id}", response_model=ScheduleOut)
async def update_schedule(
    schedule_id: ScheduleId, body: ScheduleUpdate, who: Scheduler, found: Services
) -> ScheduleOut:
    """Change the fields given; occurrences made ahead are made again with the change."""
    before = await _visible(found, who, schedule_id)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if "owner" in changes and not who.owns(changes["owner"] or ""):
        raise Forbidden(
            f"token {who.name!r} may give schedules to owner {who.owner!r} only", field="body.owner"
        )
    after = await found.schedules.update(schedule_id, **changes)
    return await _changed(found, who, "schedule.update", before, after)


@router.post("/{schedule_id}/pause", response_model=ScheduleOut)
async def pause_schedule(schedule_id: ScheduleId, who: Scheduler, found: Services) -> ScheduleOut:
    """No occurrence is made until resumed; those made ahead are cancelled."""
    before = await _visible(found, who, schedule_id)
    after = await found.schedules.pause(schedule_id)
    return await _changed(found, who, "schedule.pause", before, after)


@router.post("/{schedule_id}/resume", response_model=ScheduleOut)
async def resume_schedule(schedule_id: ScheduleId, who: Scheduler, found: Services) -> ScheduleOut:
    """Occurrences are made again from now on."""
    before = await _visible(found, who, schedule_id)
    after = await found.schedules.resume(schedule_id)
    return await _changed(found, who, "schedule.resume", before, after)


@router.post("/{schedule_id}/trigger", response_model=TriggeredOut)
async def trigger_schedule(
    schedule_id: ScheduleId, who: Annotated[Caller, Depends(require(Role.EXECUTE))], found: Services
) -> TriggeredOut:
    """One extra occurrence now, besides the schedule's own (its next one stays as it is);
    a paused schedule runs too. Its job is listed with the schedule's occurrences."""
    await _visible(found, who, schedule_id)
    out = TriggeredOut.of(await found.schedules.trigger(schedule_id))
    await found.auditor.record(
        who.name, "schedule.trigger", f"schedule {schedule_id}", None, out.model_dump(mode="json")
    )
    return out


@router.delete("/{schedule_id}", status_code=204, response_class=Response)
async def delete_schedule(schedule_id: ScheduleId, who: Scheduler, found: Services) -> Response:
    """Delete it and cancel its occurrences made ahead."""
    before = await _visible(found, who, schedule_id)
    if not await found.schedules.delete(schedule_id):
        raise NotFound(f"no schedule {schedule_id} in the store")
    await _audit(found, who, "schedule.delete", schedule_id, ScheduleOut.of(before), None)
    return Response(status_code=204)


async def _visible(found: ApiServices, who: Caller, schedule_id: int) -> Schedule:
    """The schedule, if the caller may see it; 404 otherwise (absent or another owner's)."""
    s = await found.schedules.get(schedule_id)
    if not who.owns(s.row.owner):
        raise NotFound(f"no schedule {schedule_id} in the store")
    return s


async def _changed(
    found: ApiServices, who: Caller, action: str, before: Schedule, after: Schedule
) -> ScheduleOut:
    out = ScheduleOut.of(after)
    await _audit(found, who, action, after.id, ScheduleOut.of(before), out)
    return out


async def _audit(
    found: ApiServices,
    who: Caller,
    action: str,
    schedule_id: int,
    before: ScheduleOut | None,
    after: ScheduleOut | None,
) -> None:
    await found.auditor.record(
        who.name,
        action,
        f"schedule {schedule_id}",
        None if before is None else before.model_dump(mode="json"),
        None if after is None else after.model_dump(mode="json"),
    )
