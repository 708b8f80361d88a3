"""The API's app: FastAPI (its OpenAPI document comes from the pydantic models the project
uses already; Starlette underneath, served by uvicorn) with the uniform error body, request
ids, the body limit, and one router per resource.

A later resource is one more router: ``create_app(services, extra_routers=[jobs.router])``,
its routes reaching their service object through ``request.app.state``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

from infinite_scheduler import __version__
from infinite_scheduler.api import dashboard, errors
from infinite_scheduler.api.middleware import BodyLimit, RequestIds
from infinite_scheduler.api.routes import audit, blockouts, control, health, jobs, schedules
from infinite_scheduler.api.services import ApiServices

ROUTERS = (
    health.router,
    schedules.router,
    jobs.router,
    control.router,
    blockouts.router,
    audit.router,
)
DEFAULT_MAX_BODY_BYTES = 2_097_152


def create_app(
    services: ApiServices,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The ASGI app over `services`; OpenAPI at /openapi.json, docs at /docs."""
    app = FastAPI(
        title="infinite-scheduler",
        version=__version__,
        description="Manage an infinite-scheduler store: schedules, jobs, blockouts, the"
        " category and engine pauses, the audit log."
        " Every request but /health and /ready takes `Authorization: Bearer <token>`"
        " (`infinite-scheduler tokens create`).",
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app)
    for router in (*ROUTERS, *extra_routers):
        app.include_router(router)
    dashboard.install(app)  # the web pages at /dashboard/ and the views they draw
    # Added last, so outermost: the request id is set before anything can fail.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestIds)
    return app
