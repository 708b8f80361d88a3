"""``/health`` (the process answers) and ``/ready`` (the store answers and, inside an engine,
its node is ACTIVE; it says whether the engine pause holds it): for load balancers and
orchestrators, without a token."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from infinite_scheduler.api.auth import services
from infinite_scheduler.api.errors import ERROR_RESPONSES, error_response
from infinite_scheduler.api.models import Health, Ready
from infinite_scheduler.api.services import ApiServices
from infinite_scheduler.errors import StoreError

#: A store that takes longer than this to answer a one-row read is not ready.
READY_TIMEOUT_S = 2.0

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses={503: ERROR_RESPONSES[503]})
async def ready(found: Annotated[ApiServices, Depends(services)]) -> Ready | JSONResponse:
    """200 when the store answers (and the engine's node is ACTIVE); 503 saying which not."""
    ping = found.ping or found.access.ping
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await ping()
    except (StoreError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        return error_response(503, "not_ready", f"store unreachable: {reason}")
    if found.node_active is None:
        return Ready(ready=True, store="ok", node="none")
    if not found.node_active():
        return error_response(503, "not_ready", "the engine's node is not ACTIVE")
    paused = found.node_paused is not None and found.node_paused()
    # Still ready when paused: its API must stay reachable, to resume it.
    return Ready(ready=True, store="ok", node="active", engine="paused" if paused else "running")
