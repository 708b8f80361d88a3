"""Jobs stored, cancelled and looked up without an engine: for a web app, a batch job, a script.

A client writes PENDING rows and never claims one, so it needs no node id, no heartbeat and no
handler, and runs beside any number of engine nodes on the same store. Whichever node polls
next claims a new job: one due inside a node's claimed window is picked up by its near poll
(`near_poll_interval_s`, about a second late at most), a later one by the fetch that reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from infinite_scheduler.categories import Categories
from infinite_scheduler.clock import Clock, SystemClock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.dependency_store import plan_waiting, store_waiting
from infinite_scheduler.engine_control import EngineControl
from infinite_scheduler.errors import ClientNotOpen, EntitySpecError
from infinite_scheduler.history import ExecutionHistory, HistoryPage
from infinite_scheduler.job import check_categories, group_jobs, split_jobs, with_options
from infinite_scheduler.schedules.book import ScheduleBook
from infinite_scheduler.stores import Repo, store_history, store_repository, store_schedules
from repos.base import EntitySpec, OnDuplicate, StoredRow, encode_for
from repos.history import HistoryFilter, HistoryRow, SlaReport


class SchedulerClient:
    """Stores, cancels and looks up jobs of the given entity types on the configured store.

    ``async with SchedulerClient(config, SMS) as client: await client.schedule([...])``
    """

    def __init__(
        self, config: SchedulerConfig, *specs: EntitySpec[Any, Any], clock: Clock | None = None
    ) -> None:
        if not specs:
            raise EntitySpecError(None, "SchedulerClient needs at least one EntitySpec")
        self.config = config
        self.clock = clock or SystemClock()
        self._specs = {spec.name: spec for spec in specs}
        self._names = {spec.model: spec.name for spec in specs}
        self._repos: dict[str, Repo] = {}
        self._stack: AsyncExitStack | None = None
        self._schedules: ScheduleBook | None = None
        self._categories: Categories | None = None
        self._history: ExecutionHistory | None = None
        self._engine_control: EngineControl | None = None

    async def __aenter__(self) -> SchedulerClient:
        async with AsyncExitStack() as stack:
            for name, spec in self._specs.items():
                repo = store_repository(self.config, spec)
                await repo.open()
                stack.push_async_callback(repo.close)
                self._repos[name] = repo
            schedule_store = store_schedules(self.config)
            await schedule_store.open()
            stack.push_async_callback(schedule_store.close)
            self._schedules = ScheduleBook(
                schedule_store, self._repos, clock=self.clock, categories=self.config.categories
            )
            self._categories = Categories(schedule_store, self.config.categories, clock=self.clock)
            history_store = store_history(self.config)
            await history_store.open()
            stack.push_async_callback(history_store.close)
            self._history = ExecutionHistory(
                history_store,
                clock=self.clock,
                late_threshold_ms=self.config.history.late_threshold_ms,
            )
            self._engine_control = EngineControl(schedule_store, clock=self.clock)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._repos = {}
        self._schedules = None
        self._categories = None
        self._history = None
        self._engine_control = None
        if stack is not None:
            await stack.aclose()

    async def schedule(
        self, entities: Iterable[Any], *, on_duplicate: OnDuplicate = "error"
    ) -> int:
        """Store new jobs: entities, and Jobs (infinite_scheduler/job.py: a priority, a
        category, dependencies) mixed, PENDING, or WAITING for their dependencies (after the
        call's other jobs, which they may wait for); returns rows stored. Entities of a type
        this client was not given, Jobs of a category the config does not define, and a
        dependency refused (DependencyRefused) stop the call before anything is stored."""
        self._open("schedule")
        now_ms = self.clock.now_ms()
        plain, waiting = split_jobs(list(entities))
        batches = []
        if waiting and on_duplicate != "error":
            raise ValueError(
                "jobs with dependencies cannot be stored with on_duplicate='ignore': a job"
                " stored already would take the dependencies of the new one; nothing stored"
            )
        if waiting:
            check_categories(waiting, self.config.categories)
            batches = await plan_waiting(
                self._repos, self._names, plain, waiting, now_ms=now_ms, unknown=_not_given
            )
        stored = 0
        groups = group_jobs(plain, self._names, _not_given, self.config.categories)
        for name, (batch, options) in groups.items():
            repo = self._repos[name]
            if options is None:
                stored += await repo.insert(batch, now_ms=now_ms, on_duplicate=on_duplicate)
            else:
                rows = with_options(encode_for(repo, batch, now_ms=now_ms), options)
                stored += await repo.insert_rows(rows, now_ms=now_ms, on_duplicate=on_duplicate)
        if batches:
            stored += await store_waiting(batches, now_ms=now_ms)
        return stored

    async def cancel(self, spec: EntitySpec[Any, Any], keys: Sequence[Any]) -> int:
        """Cancel PENDING or CLAIMED jobs by id; returns rows cancelled. A node holding one
        with its payload read already (due within payload_ahead_s) may still fire it."""
        return await self._repo(spec, "cancel").cancel(list(keys))

    async def get(self, spec: EntitySpec[Any, Any], key: Any) -> list[StoredRow]:
        """The stored rows of this id (one per shard that holds it), oldest first."""
        return await self._repo(spec, "get").get(key)

    def repository(self, entity: str) -> Repo:
        """The opened repository of an entity type given to this client, by name (the job
        service's way to the rows: infinite_scheduler/management)."""
        self._open("repository")
        repo = self._repos.get(entity)
        if repo is None:
            raise _not_given([entity])
        return repo

    @property
    def repositories(self) -> Mapping[str, Repo]:
        """The opened repository of each entity type given, by name."""
        self._open("repositories")
        return dict(self._repos)

    @property
    def schedules(self) -> ScheduleBook:
        """Recurring schedules and blockouts of the client's entity types (create, get, list,
        update, pause, resume, delete, add_blockout, ...): infinite_scheduler/schedules/book.py.
        An engine node serving the type materialises them."""
        self._open("schedules")
        assert self._schedules is not None
        return self._schedules

    @property
    def categories(self) -> Categories:
        """Pause and resume categories on every engine node of the store (``await
        client.categories.pause("reports")``, ``.resume(...)``, ``.paused()``): each node
        honours it within about a heartbeat. infinite_scheduler/categories.py."""
        self._open("categories")
        assert self._categories is not None
        return self._categories

    @property
    def execution_history(self) -> ExecutionHistory:
        """The store's execution history (infinite_scheduler/history.py), for every entity
        type, this client's or not."""
        self._open("history")
        assert self._history is not None
        return self._history

    async def history(
        self, entity: str | EntitySpec[Any, Any], key: int | str, *, limit: int = 1000
    ) -> list[HistoryRow]:
        """Every attempt of one job, newest first: node, due, fired and finished times,
        outcome (ok, retry, failed, timeout, missed) and error. Kept [history] retention_days."""
        return await self.execution_history.of_job(entity, key, limit=limit)

    async def history_page(
        self, where: HistoryFilter | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> HistoryPage:
        """Attempts of an entity type, outcome and time range (HistoryFilter), newest first;
        pass the page's `cursor` for the next one."""
        return await self.execution_history.page(where, cursor=cursor, limit=limit)

    async def sla(
        self,
        *,
        entity: str | EntitySpec[Any, Any] | None = None,
        category: str | None = None,
        window_ms: int = 3_600_000,
    ) -> SlaReport:
        """Fired, late share (> [history] late_threshold_ms), failed share and lateness and
        duration percentiles of the attempts that ended in the last `window_ms`."""
        return await self.execution_history.sla(
            entity=entity, category=category, window_ms=window_ms
        )

    @property
    def engine_control(self) -> EngineControl:
        """Pause and resume claiming on every engine node of the store (``await
        client.engine_control.pause()``, ``.resume()``, ``.paused_since()``): each node stops
        claiming within about a heartbeat and drains what it holds.
        infinite_scheduler/engine_control.py."""
        self._open("engine_control")
        assert self._engine_control is not None
        return self._engine_control

    def _open(self, operation: str) -> None:
        if self._stack is None:
            raise ClientNotOpen(operation)

    def _repo(self, spec: EntitySpec[Any, Any], operation: str) -> Repo:
        self._open(operation)
        repo = self._repos.get(spec.name)
        if repo is None:
            raise _not_given([spec.name])
        return repo


def _not_given(names: list[str]) -> EntitySpecError:
    return EntitySpecError(
        None,
        f"entity type(s) {', '.join(map(repr, names))} not given to this SchedulerClient; "
        "pass their EntitySpec when making it",
    )
