"""The job service: every operator operation on stored jobs, one async method each, typed in
and out, with its rules in one place (rules.py). The CLI calls it, and the HTTP API will.

``async with JobService(config, SMS) as jobs: await jobs.cancel("sms", 42)``

It opens the stores as SchedulerClient does (it holds one), so it runs beside any number of
engine nodes; ``JobService.over(config, repos)`` works on repositories opened already (an
engine's, a client's: the HTTP API's way, which opens no second pool). A change is written only if the row is still in the state it was read in; a row
that moved on meanwhile is read again and decided again (CHANGE_ATTEMPTS times). Every refusal
is a JobControlError naming the job, its state and shard, or the input field; none changes
anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, cast

from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.clock import Clock, epoch_ms
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.errors import (
    InvalidJobRequest,
    JobNotFound,
    JobStateRefused,
)
from infinite_scheduler.management.rules import (
    ACCEPTS,
    Change,
    Move,
    Operation,
    Refusal,
    decide,
)
from infinite_scheduler.management.values import (
    MAX_PAGE,
    BulkResult,
    JobFilter,
    JobPage,
    JobView,
    PageRequest,
    decode_cursor,
    encode_cursor,
)
from infinite_scheduler.schedules.ids import occurrence_range, schedule_of
from repos.base import (
    FINISHED,
    EntitySpec,
    RowRef,
    ShardingRepository,
    StoredRow,
    bucket_of,
)
from repos.control import JobControl, JobQuery

logger = logging.getLogger(__name__)
#: Reads and decisions again when the row moved on between the read and the write.
CHANGE_ATTEMPTS = 3
#: Rows a bulk operation reads and writes at a time.
BULK_PAGE = 500


class JobService:
    """Operator operations on the stored jobs of the given entity types."""

    def __init__(
        self, config: SchedulerConfig, *specs: EntitySpec[Any, Any], clock: Clock | None = None
    ) -> None:
        self._client: SchedulerClient | None = SchedulerClient(config, *specs, clock=clock)
        self.config = config
        self.clock = self._client.clock
        self._specs = {spec.name: spec for spec in specs}
        self._repos: Mapping[str, ShardingRepository[Any, Any]] | None = None

    @classmethod
    def over(
        cls,
        config: SchedulerConfig,
        repos: Mapping[str, ShardingRepository[Any, Any]],
        *,
        clock: Clock,
    ) -> JobService:
        """A service on repositories their owner opened and closes (no ``async with``)."""
        service = cls.__new__(cls)
        service._client = None
        service.config = config
        service.clock = clock
        service._specs = {name: repo.spec for name, repo in repos.items()}
        service._repos = repos
        return service

    @property
    def entities(self) -> list[str]:
        """The entity types served, by name."""
        return sorted(self._specs)

    async def __aenter__(self) -> JobService:
        if self._client is not None:
            await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.__aexit__(exc_type, exc, tb)

    # -- reads --------------------------------------------------------------------------------

    async def get_job(self, entity: str, job_id: int | str) -> JobView:
        """The job of this id (of its rows, the unfinished one, else the latest)."""
        spec, key = self._spec(entity), self._key(entity, job_id)
        return self._view(spec, _pick(await self._rows(spec, key), spec.name, key))

    async def list_jobs(self, filter: JobFilter, page: PageRequest | None = None) -> JobPage:
        """One page of the jobs matching `filter`, in scheduled-time order (keyset paginated:
        stable under inserts; the cursor is opaque)."""
        page = page or PageRequest()
        spec = self._spec(filter.entity)
        if not 1 <= page.size <= MAX_PAGE:
            raise InvalidJobRequest("size", page.size, f"a page holds 1 to {MAX_PAGE} jobs")
        if page.order not in ("oldest", "newest"):
            raise InvalidJobRequest("order", page.order, "oldest or newest")
        after = None if page.cursor is None else decode_cursor(page.cursor, spec.key_type)
        query = self._query(spec, filter, descending=page.order == "newest")
        rows = await self._control(spec).find(query, after=after, limit=page.size + 1)
        more = len(rows) > page.size
        rows = rows[: page.size]
        cursor = encode_cursor(rows[-1]) if more else None
        return JobPage(jobs=[self._view(spec, row) for row in rows], next_cursor=cursor)

    # -- changes ------------------------------------------------------------------------------

    async def cancel(self, entity: str, job_id: int | str) -> JobView:
        """Cancel a PENDING, PAUSED, WAITING or CLAIMED job (a claimed one: its node drops it,
        if this lands at least rules.CLAIM_REACH_MS before it is due)."""
        return await self._change(Operation.CANCEL, entity, job_id)

    async def pause(self, entity: str, job_id: int | str) -> JobView:
        """Hold a PENDING or CLAIMED job back until resume(): no node claims it meanwhile."""
        return await self._change(Operation.PAUSE, entity, job_id)

    async def resume(self, entity: str, job_id: int | str) -> JobView:
        """A PAUSED job back to PENDING at its due time (overdue: it fires once, now)."""
        return await self._change(Operation.RESUME, entity, job_id)

    async def run_now(self, entity: str, job_id: int | str) -> JobView:
        """A PENDING or PAUSED job due now: the next poll of any node claims it. One whose
        shard the claims do not reach now (far ahead) is moved to now as well."""
        return await self._change(Operation.RUN_NOW, entity, job_id)

    async def reschedule(self, entity: str, job_id: int | str, at: datetime | int) -> JobView:
        """A PENDING or PAUSED job to a new time (not in the past), moved to that time's shard
        in one transaction, with the edges of the jobs waiting for it: they wait for it at its
        new time (refusing would leave a job in a chain no way to move but cancel)."""
        at_ms = self._new_time(at)
        return await self._change(Operation.RESCHEDULE, entity, job_id, at_ms=at_ms)

    async def bulk(
        self, operation: Operation | str, filter: JobFilter, *, dry_run: bool = False
    ) -> BulkResult:
        """cancel, pause, resume or run-now every job matching `filter` that is in a state the
        operation takes (the others are left alone and not counted); `dry_run`: count them,
        change nothing."""
        op = self._bulk_operation(operation)
        spec = self._spec(filter.entity)
        states = ACCEPTS[op] & filter.states if filter.states else ACCEPTS[op]
        query = self._query(spec, filter, descending=False, states=states)
        control, matched, changed = self._control(spec), 0, 0
        after: RowRef | None = None
        while rows := await control.find(query, after=after, limit=BULK_PAGE):
            after = RowRef(rows[-1].key, rows[-1].at_ms)
            decided = [self._decide(op, spec, row) for row in rows]
            changes = [c for found in decided if not isinstance(found, Refusal) for c in found]
            matched += sum(not isinstance(found, Refusal) for found in decided)
            if not dry_run:
                changed += await self._write_many(spec, changes)
        self._log(op, spec.name, f"bulk: {matched} matched, {changed} changed", dry_run=dry_run)
        return BulkResult(operation=op.value, matched=matched, changed=changed, dry_run=dry_run)

    # -- the rules applied --------------------------------------------------------------------

    async def _change(
        self, op: Operation, entity: str, job_id: int | str, *, at_ms: int | None = None
    ) -> JobView:
        spec, key = self._spec(entity), self._key(entity, job_id)
        for _ in range(CHANGE_ATTEMPTS):
            row = _target(op, await self._rows(spec, key), spec.name, key)
            decided = self._decide(op, spec, row, at_ms=at_ms)
            if isinstance(decided, Refusal):
                raise JobStateRefused(
                    spec.name, key, op.value, decided.state, decided.reason, row.shard
                )
            if await self._write(spec, decided):
                self._log(op, spec.name, "done", key=key)
                return await self.get_job(spec.name, key)
        raise JobStateRefused(
            spec.name, key, op.value, "changing", "it kept changing under this call", row.shard
        )

    def _decide(
        self, op: Operation, spec: EntitySpec[Any, Any], row: StoredRow, *, at_ms: int | None = None
    ) -> list[Change] | Refusal:
        now_ms = self.clock.now_ms()
        return decide(
            op, row, now_ms=now_ms, at_ms=at_ms, reachable=self._reachable(spec, row, now_ms)
        )

    def _reachable(self, spec: EntitySpec[Any, Any], row: StoredRow, now_ms: int) -> bool:
        """Whether the engines' claims look in the row's shard now: it overlaps [now - the
        misfire horizon, now + lookahead)."""
        granularity = self.config.shard_policy.granularity
        start_ms = bucket_of(row.at_ms, granularity)
        since_ms = now_ms - self.config.misfire_horizon_s * 1000
        until_ms = now_ms + int(self.config.lookahead_s * 1000)
        return bool(start_ms + granularity.span_ms > since_ms and start_ms < until_ms)

    async def _write(self, spec: EntitySpec[Any, Any], changes: Sequence[Change]) -> bool:
        """Each change in order, each conditional on the state it expects; False as soon as
        one finds the row moved on (those before it stay: each leaves a valid state)."""
        control = self._control(spec)
        for change in changes:
            if isinstance(change, Move):
                done = await control.move(
                    change.ref,
                    seen_status=change.seen_status,
                    seen_epoch=change.seen_epoch,
                    at_ms=change.at_ms,
                    due_ms=change.due_ms,
                )
            else:
                done = await control.transition([change]) == 1
            if not done:
                return False
        return True

    async def _write_many(self, spec: EntitySpec[Any, Any], changes: Sequence[Change]) -> int:
        """A bulk page's changes: the transitions in one call, the moves one by one."""
        transitions = [c for c in changes if not isinstance(c, Move)]
        changed = await self._control(spec).transition(transitions)
        for move in [c for c in changes if isinstance(c, Move)]:
            await self._write(spec, [move])
        return changed

    # -- inputs -------------------------------------------------------------------------------

    def _spec(self, entity: str) -> EntitySpec[Any, Any]:
        spec = self._specs.get(entity) if isinstance(entity, str) else None
        if spec is None:
            raise InvalidJobRequest("entity", entity, f"one of {sorted(self._specs)}")
        return spec

    def _key(self, entity: str, job_id: int | str) -> int | str:
        spec = self._spec(entity)
        if spec.key_type is int and isinstance(job_id, str):
            try:
                return int(job_id)
            except ValueError:
                raise InvalidJobRequest("id", job_id, f"{entity} ids are integers") from None
        if type(job_id) is not spec.key_type:
            raise InvalidJobRequest("id", job_id, f"{entity} ids are {spec.key_type.__name__}")
        return job_id

    def _new_time(self, at: datetime | int) -> int:
        if isinstance(at, datetime):
            if at.tzinfo is None:
                raise InvalidJobRequest("at", at.isoformat(), "a time with its time zone")
            at_ms = epoch_ms(at)
        elif type(at) is int:
            at_ms = at
        else:
            raise InvalidJobRequest("at", at, "an aware datetime or epoch milliseconds")
        now_ms = self.clock.now_ms()
        if at_ms < now_ms:
            raise InvalidJobRequest("at", at_ms, "in the past; run-now fires a job now")
        if at_ms >= 253_402_300_800_000:  # 10000-01-01
            raise InvalidJobRequest("at", at_ms, "beyond the year 9999")
        return at_ms

    def _query(
        self,
        spec: EntitySpec[Any, Any],
        filter: JobFilter,
        *,
        descending: bool,
        states: frozenset[Any] | None = None,
    ) -> JobQuery:
        if filter.from_ms is not None and filter.before_ms is not None:
            if filter.before_ms <= filter.from_ms:
                raise InvalidJobRequest("before", filter.before_ms, "not after from")
        key_from, key_before = (None, None)
        if filter.schedule is not None:
            key_from, key_before = occurrence_range(spec.key_type, filter.schedule)
        return JobQuery(
            statuses=frozenset(states if states is not None else filter.states),
            from_ms=filter.from_ms,
            before_ms=filter.before_ms,
            category=filter.category,
            key_from=key_from,
            key_before=key_before,
            descending=descending,
        )

    def _bulk_operation(self, operation: Operation | str) -> Operation:
        try:
            op = Operation(operation)
        except ValueError:
            op = None
        if op is None or op is Operation.RESCHEDULE:
            raise InvalidJobRequest("operation", operation, "cancel, pause, resume or run-now")
        return op

    # -- plumbing -----------------------------------------------------------------------------

    def _repository(self, spec: EntitySpec[Any, Any]) -> ShardingRepository[Any, Any]:
        if self._repos is not None:
            return self._repos[spec.name]
        assert self._client is not None
        return self._client.repository(spec.name)

    def _control(self, spec: EntitySpec[Any, Any]) -> JobControl:
        return cast(JobControl, self._repository(spec))

    async def _rows(self, spec: EntitySpec[Any, Any], key: int | str) -> list[StoredRow]:
        rows = await self._repository(spec).get(key)
        if not rows:
            raise JobNotFound(spec.name, key)
        return rows

    def _view(self, spec: EntitySpec[Any, Any], row: StoredRow) -> JobView:
        return JobView.of(spec.name, row, schedule_of(row.key))

    def _log(
        self, op: Operation, entity: str, what: str, *, key: object = None, dry_run: bool = False
    ) -> None:
        logger.info(
            "%s %s %s: %s%s",
            op.value,
            entity,
            "" if key is None else key,
            what,
            " (dry run)" if dry_run else "",
            extra={"action": op.value, "entity": entity, "job_id": key},
        )


def _pick(rows: list[StoredRow], entity: str, key: object) -> StoredRow:
    """Of an id's rows (one per shard holding it, oldest first), the unfinished one, else the
    latest."""
    unfinished = [row for row in rows if row.status not in FINISHED]
    return (unfinished or rows)[-1]


def _target(op: Operation, rows: list[StoredRow], entity: str, key: object) -> StoredRow:
    """The row of an id the operation applies to: the only one in a state it accepts (or the
    one _pick shows, for the refusal)."""
    taken = [row for row in rows if row.status in ACCEPTS[op]]
    if len(taken) > 1:
        shards = ", ".join(row.shard for row in taken)
        raise JobStateRefused(
            entity,
            key,
            op.value,
            "ambiguous",
            f"{len(taken)} rows of this id ({shards})",
            taken[0].shard,
        )
    return taken[0] if taken else _pick(rows, entity, key)


__all__ = ["JobService"]
