"""``/audit``: the audit log, newest first, for ADMIN tokens only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from infinite_scheduler.api.auth import require, services
from infinite_scheduler.api.errors import ERROR_RESPONSES
from infinite_scheduler.api.models import AuditOut, AuditPage
from infinite_scheduler.api.roles import Caller, Role
from infinite_scheduler.api.services import ApiServices

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)


@router.get("", response_model=AuditPage)
async def read_audit(
    who: Annotated[Caller, Depends(require(Role.ADMIN))],
    found: Annotated[ApiServices, Depends(services)],
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """`limit` rows older than id `before` (the previous page's next_before), newest first."""
    rows = await found.auditor.page(before_id=before, limit=limit)
    more = len(rows) == limit
    return AuditPage(
        items=[AuditOut.of(r) for r in rows], next_before=rows[-1].id if more else None
    )
