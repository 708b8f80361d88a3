"""Who is calling: the bearer token of a request checked against the store, and the role an
operation needs (FastAPI dependencies, so OpenAPI documents the bearer scheme)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infinite_scheduler.api.errors import Forbidden, Unauthorized
from infinite_scheduler.api.roles import OPEN_CALLER, Caller, Role
from infinite_scheduler.api.services import ApiServices

bearer = HTTPBearer(
    auto_error=False, description="A token made by `infinite-scheduler tokens create`"
)


def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller a request's bearer token stands for; 401 without a valid live one (an open
    API serves a request without any token as ADMIN while no token is stored: the first
    token made closes it)."""
    found = services(request)
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("malformed Authorization header: send 'Bearer <token>'")
        if found.open_access and not await found.access.live_tokens():
            return OPEN_CALLER
        raise Unauthorized("no token: send 'Authorization: Bearer <token>'")
    who = await found.tokens.caller(credentials.credentials)
    if who is None:
        raise Unauthorized("unknown or revoked token")
    return who


def require(role: Role) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency: the caller, if its role is `role` or above; 403 otherwise."""

    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.may(role):
            raise Forbidden(f"token {who.name!r} has role {who.role.name}; this needs {role.name}")
        return who

    return check
