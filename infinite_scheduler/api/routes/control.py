"""``/categories`` and ``/engine``: the category pauses and the engine pause of every node of
the store (infinite_scheduler/categories.py, engine_control.py). Read with READ; changed by
ADMIN only: like a blockout, a pause holds back every owner's jobs. Each change is written to
the audit log with the paused state before and after (a repeated pause too: its row shows
that nothing changed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from infinite_scheduler.api.auth import require, services
from infinite_scheduler.api.control_models import CategoryOut, EngineOut
from infinite_scheduler.api.errors import ERROR_RESPONSES
from infinite_scheduler.api.models import opt_at
from infinite_scheduler.api.roles import Caller, Role
from infinite_scheduler.api.services import ApiServices

router = APIRouter(tags=["control"], responses=ERROR_RESPONSES)
Reader = Annotated[Caller, Depends(require(Role.READ))]
Admin = Annotated[Caller, Depends(require(Role.ADMIN))]
Services = Annotated[ApiServices, Depends(services)]
Category = Annotated[str, Path(min_length=1, max_length=64, description="a configured category")]


@router.get("/categories", response_model=list[CategoryOut])
async def list_categories(who: Reader, found: Services) -> list[CategoryOut]:
    """The configured categories, each with whether (and since when) it is paused."""
    paused = await found.categories.paused()
    return [_category(name, paused) for name in found.categories.configured]


@router.post("/categories/{name}/pause", response_model=CategoryOut)
async def pause_category(name: Category, who: Admin, found: Services) -> CategoryOut:
    """Start no job of the category on any node until resumed (within about a heartbeat)."""
    return await _set_category(found, who, name, paused=True)


@router.post("/categories/{name}/resume", response_model=CategoryOut)
async def resume_category(name: Category, who: Admin, found: Services) -> CategoryOut:
    """Let the category's jobs start again, within its limits."""
    return await _set_category(found, who, name, paused=False)


@router.get("/engine", response_model=EngineOut)
async def engine_status(who: Reader, found: Services) -> EngineOut:
    """Whether the engine is paused on every node of the store."""
    return _engine(await found.engine.paused_since())


@router.post("/engine/pause", response_model=EngineOut)
async def pause_engine(who: Admin, found: Services) -> EngineOut:
    """Every node stops claiming and drains what it holds (its jobs fire at their times),
    and stays up; within about a heartbeat."""
    return await _set_engine(found, who, paused=True)


@router.post("/engine/resume", response_model=EngineOut)
async def resume_engine(who: Admin, found: Services) -> EngineOut:
    """Every node claims again, overdue jobs first."""
    return await _set_engine(found, who, paused=False)


async def _set_category(found: ApiServices, who: Caller, name: str, *, paused: bool) -> CategoryOut:
    before = await found.categories.paused()
    change = found.categories.pause if paused else found.categories.resume
    await change(name)  # UnknownCategory (404): nothing stored
    out = _category(name, await found.categories.paused())
    await found.auditor.record(
        who.name,
        f"category.{'pause' if paused else 'resume'}",
        f"category {name}",
        _category(name, before).model_dump(mode="json"),
        out.model_dump(mode="json"),
    )
    return out


async def _set_engine(found: ApiServices, who: Caller, *, paused: bool) -> EngineOut:
    before = await found.engine.paused_since()
    await (found.engine.pause() if paused else found.engine.resume())
    out = _engine(await found.engine.paused_since())
    await found.auditor.record(
        who.name,
        f"engine.{'pause' if paused else 'resume'}",
        "engine",
        _engine(before).model_dump(mode="json"),
        out.model_dump(mode="json"),
    )
    return out


def _category(name: str, paused: dict[str, int]) -> CategoryOut:
    return CategoryOut(name=name, paused=name in paused, paused_at=opt_at(paused.get(name)))


def _engine(since: int | None) -> EngineOut:
    return EngineOut(paused=since is not None, paused_at=opt_at(since))
