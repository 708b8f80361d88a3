"""``/me``, ``/overview``, ``/shards``, ``/history`` and ``/sla``: what the dashboard shows beside the
schedules and jobs, read from the store (api/store_views.py), with READ.

Shards and the overview are counts, owned by no one. History rows name jobs: a non-admin sees
those it may see as a job (roles.py): a one-shot job's, and the occurrences of the schedules
of its token's owner; the rest are left out of a page, and one job's attempts answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from infinite_scheduler.api.auth import require, services
from infinite_scheduler.api.errors import ERROR_RESPONSES, Invalid, NotFound
from infinite_scheduler.api.models import at
from infinite_scheduler.api.roles import Caller, Role
from infinite_scheduler.api.services import ApiServices
from infinite_scheduler.api.store_views import BUCKET_MS, RECENT_MS, StoreViews
from infinite_scheduler.api.view_models import (
    BacklogOut,
    BucketOut,
    CallerOut,
    EntityOut,
    HistoryPageOut,
    HistoryRowOut,
    NodeOut,
    OverviewOut,
    RecentOut,
    SlaOut,
)
from infinite_scheduler.errors import ScheduleNotFound
from infinite_scheduler.history import ExecutionHistory, parse_window
from infinite_scheduler.schedules.ids import schedule_of
from repos.history import BadCursor, HistoryFilter, HistoryRow, Outcome

router = APIRouter(tags=["views"], responses=ERROR_RESPONSES)
Reader = Annotated[Caller, Depends(require(Role.READ))]
Services = Annotated[ApiServices, Depends(services)]
Entity = Annotated[str, Path(min_length=1, max_length=64, description="entity type")]
OutcomeName = Annotated[str, Query(pattern="^(ok|failed|timeout|retry|missed|cancelled)$")]
HISTORY_OFF = "the execution history is off ([history] enabled = false)"


@router.get("/me", response_model=CallerOut)
async def me(who: Reader) -> CallerOut:
    """The caller the token stands for: the dashboard shows the buttons its role allows."""
    return CallerOut(name=who.name, role=who.role.name, owner=who.owner)


@router.get("/overview", response_model=OverviewOut)
async def overview(who: Reader, found: Services) -> OverviewOut:
    """The nodes, each entity type's unfinished rows, the last minute's fired, failed and
    lateness p99, and fired/failed per bucket over the last ten minutes (all nodes)."""
    views = _views(found)
    now_ms, nodes = await views.nodes()
    report = await views.recent()
    recent = None
    if report is not None:
        total = report.total
        recent = RecentOut(
            window_s=RECENT_MS // 1000,
            fired=total.fired,
            fired_per_s=round(total.fired * 1000 / RECENT_MS, 3),
            failed=total.failed + total.timeout + total.retried,
            late=total.late,
            lateness_p99_ms=total.lateness_p99_ms,
        )
    return OverviewOut(
        now=at(now_ms),
        nodes=[NodeOut.of(n) for n in nodes],
        backlog=[BacklogOut.of(e) for e in await views.entities()],
        recent=recent,
        bucket_s=BUCKET_MS // 1000,
        series=[BucketOut.of(b) for b in await views.series()],
    )


@router.get("/shards", response_model=list[EntityOut])
async def shards(who: Reader, found: Services) -> list[EntityOut]:
    """Each entity type's live shards, oldest first: rows by status, and when retention drops
    each (the first is dropped next; its unfinished rows would be lost with it)."""
    return [EntityOut.of(e) for e in await _views(found).entities()]


@router.get("/history", response_model=HistoryPageOut)
async def history_page(
    who: Reader,
    found: Services,
    entity: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    outcome: OutcomeName | None = None,
    from_: Annotated[int | None, Query(alias="from", ge=0, le=2**53)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> HistoryPageOut:
    """Attempts, newest first, that ended in [`from`, `before`) (epoch ms); pass `cursor` from
    the page before for the next one."""
    views = _views(found)
    history = _history(views)
    where = HistoryFilter(
        entity=entity,
        outcome=None if outcome is None else Outcome[outcome.upper()],
        start_ms=from_,
        end_ms=before,
    )
    try:
        page = await history.page(where, cursor=cursor, limit=limit)
    except BadCursor as exc:
        raise Invalid(str(exc), field="cursor") from None
    owners: dict[int, str | None] = {}
    rows = [r for r in page.rows if await _visible(found, views, who, r, owners)]
    return HistoryPageOut(rows=[HistoryRowOut.of(r) for r in rows], cursor=page.cursor)


@router.get("/history/{entity}/{job_id}", response_model=list[HistoryRowOut])
async def job_history(
    entity: Entity,
    job_id: Annotated[str, Path(min_length=1, max_length=191)],
    who: Reader,
    found: Services,
) -> list[HistoryRowOut]:
    """Every attempt of one job, newest first (empty: it has not ended an attempt yet)."""
    views = _views(found)
    rows = await _history(views).of_job(entity, job_id, limit=1000)
    probe = HistoryRow(
        entity=entity, job_id=job_id, at_ms=0, attempt=0, node="", category="", due_ms=0,
        fired_ms=None, finished_ms=0, outcome=Outcome.OK, error=None,
    )  # fmt: skip
    if not await _visible(found, views, who, probe, {}):
        raise NotFound(f"{entity} {job_id!r}: no such job")
    return [HistoryRowOut.of(r) for r in rows]


@router.get("/sla", response_model=SlaOut)
async def sla(
    who: Reader,
    found: Services,
    entity: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    window: Annotated[str, Query(max_length=32, description="90s, 15m, 1h, 7d")] = "1h",
) -> SlaOut:
    """The SLA summary of the attempts that ended in the last `window`, per entity type and
    category and in all: fired, late and failed shares, lateness and duration p50/p99."""
    history = _history(_views(found))
    try:
        window_ms = parse_window(window)
    except ValueError as exc:
        raise Invalid(str(exc), field="window") from None
    if window_ms > 366 * 86_400_000:
        raise Invalid(f"window {window!r} is longer than a year", field="window")
    return SlaOut.of(await history.sla(entity=entity, category=category, window_ms=window_ms))


def _views(found: ApiServices) -> StoreViews:
    if found.views is None:
        raise NotFound("this API process serves no store views")
    return found.views


def _history(views: StoreViews) -> ExecutionHistory:
    if views.history is None:
        raise NotFound(HISTORY_OFF)
    return views.history


async def _visible(
    found: ApiServices,
    views: StoreViews,
    who: Caller,
    row: HistoryRow,
    owners: dict[int, str | None],
) -> bool:
    """Whether the caller may see the job of a history row: ADMIN, a one-shot job (no one's),
    or an occurrence of a schedule its owner owns (a schedule deleted since: no one's)."""
    if who.admin:
        return True
    schedule = _schedule_of(views, row.entity, row.job_id)
    if schedule is None:
        return True
    if schedule not in owners:
        try:
            owners[schedule] = (await found.schedules.get(schedule)).row.owner
        except ScheduleNotFound:
            owners[schedule] = None
    owner = owners[schedule]
    return owner is None or who.owns(owner)


def _schedule_of(views: StoreViews, entity: str, job_id: str) -> int | None:
    """The schedule a job id was made from, read by its entity type's key type."""
    if views.key_type(entity) is int:
        try:
            return schedule_of(int(job_id))
        except ValueError:
            return None
    return schedule_of(job_id)
