"""What the API's routes work on, handed to the app by whoever runs it (the engine's process
or ``infinite-scheduler api``): the schedule book, the job service, the category and engine
pauses, the tokens, the audit log, and how to tell whether it is ready."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.store_views import StoreViews
from infinite_scheduler.api.tokens import TokenBook
from infinite_scheduler.categories import Categories
from infinite_scheduler.engine_control import EngineControl
from infinite_scheduler.management import JobService
from infinite_scheduler.schedules.book import ScheduleBook
from repos.access import AccessStore


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiServices:
    schedules: ScheduleBook
    jobs: JobService
    categories: Categories
    engine: EngineControl
    access: AccessStore
    tokens: TokenBook
    auditor: Auditor
    #: No token stored and api.allow_open: requests without a token act as ADMIN.
    open_access: bool = False
    #: Inside an engine: whether its node is ACTIVE (joined, renewing, not stopping).
    node_active: Callable[[], bool] | None = None
    #: Inside an engine: whether its node applies the engine pause (claims nothing).
    node_paused: Callable[[], bool] | None = None
    #: Raises when the store cannot answer (readiness); defaults to a read of the tokens.
    ping: Callable[[], Awaitable[None]] | None = None
    #: The nodes, shards and history the dashboard shows; None: not served by this process.
    views: StoreViews | None = None
