"""The web dashboard: static pages (HTML, a JS module, CSS; no build step, nothing fetched
from elsewhere) under ``/dashboard/``, drawing on the API's own routes with the token the
user pastes once (kept in the tab's sessionStorage, sent as ``Authorization: Bearer``).

The pages hold no data and need no token; every figure they show comes from a route that
checks it. The read-only views they draw beside schedules and jobs (routes/views.py) are
mounted here too.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from infinite_scheduler.api.routes import views

STATIC = Path(__file__).with_name("static")
PATH = "/dashboard"


def install(app: FastAPI) -> None:
    """Mount the views' routes and the pages (/dashboard/ serves index.html)."""
    app.include_router(views.router)
    app.mount(PATH, StaticFiles(directory=STATIC, html=True), name="dashboard")
