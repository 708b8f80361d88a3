"""``/blockouts``: windows in which nothing of a scope fires. Read with READ; made and removed
by ADMIN only: a blockout holds back every owner's jobs of its scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from infinite_scheduler.api.auth import require, services
from infinite_scheduler.api.errors import ERROR_RESPONSES, NotFound
from infinite_scheduler.api.models import BlockoutCreate, BlockoutOut
from infinite_scheduler.api.roles import Caller, Role
from infinite_scheduler.api.services import ApiServices

router = APIRouter(prefix="/blockouts", tags=["blockouts"], responses=ERROR_RESPONSES)
Services = Annotated[ApiServices, Depends(services)]


@router.get("", response_model=list[BlockoutOut])
async def list_blockouts(
    who: Annotated[Caller, Depends(require(Role.READ))], found: Services
) -> list[BlockoutOut]:
    return [BlockoutOut.of(b) for b in await found.schedules.blockouts()]


@router.post("", response_model=BlockoutOut, status_code=201)
async def create_blockout(
    body: BlockoutCreate, who: Annotated[Caller, Depends(require(Role.ADMIN))], found: Services
) -> BlockoutOut:
    made = await found.schedules.add_blockout(
        body.name, body.window(), scope=body.scope, target=body.target, policy=body.policy
    )
    out = BlockoutOut.of(made)
    await found.auditor.record(
        who.name, "blockout.create", f"blockout {made.name}", None, out.model_dump(mode="json")
    )
    return out


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_blockout(
    name: Annotated[str, Path(min_length=1, max_length=191)],
    who: Annotated[Caller, Depends(require(Role.ADMIN))],
    found: Services,
) -> Response:
    before = next((b for b in await found.schedules.blockouts() if b.name == name), None)
    if before is None or not await found.schedules.remove_blockout(name):
        raise NotFound(f"no blockout {name!r} in the store")
    await found.auditor.record(
        who.name,
        "blockout.delete",
        f"blockout {name}",
        BlockoutOut.of(before).model_dump(mode="json"),
        None,
    )
    return Response(status_code=204)
