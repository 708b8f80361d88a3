"""The materialiser: turns recurring schedules' occurrences into one-shot rows, ahead of time.

One node of the store runs it at a time: the holder of the lease ``schedules``, taken or renewed
before each pass (infinite_scheduler/lease.py). A pass, at `now`:

1. WAITING fixed-delay schedules: each one's last occurrence row is looked up; once it
   finished (any final status), the schedule is ACTIVE again, due the delay after fired_at.
2. Due schedules (ACTIVE, unpaused, next occurrence before ``now + ahead``), a batch at a time,
   earliest first: :func:`plan` folds the missed occurrences (fire-once-now) and lists the rest
   up to ``now + ahead``; blockouts move or skip them; the rows are stored with deterministic
   ids (ids.py) and duplicates ignored; then each schedule's step is written, conditional on
   its version.

``ahead`` is the lookahead plus two pass intervals: a row is stored before the fetch whose
window first covers it, so occurrences are claimed like any one-shot job, on any node, on time.
Rows first, steps second: a pass cut short (a crash, the lease lost) leaves the schedule where
it was, and the next pass, here or on another node, makes the same rows again, ignored as
duplicates. A step that lost to a person's change is dropped: the change cancelled what it
knew of, and the next pass reads the changed row.

An occurrence is stored as :func:`occurrence_row` makes it: the template's payload as the
schedule stores it (encoded and checked once, when the schedule was made or changed:
infinite_scheduler/schedules/book.py), its own id and time, and its schedule's priority and
category in their columns, as ``Job(entity, priority=..., category=...)`` stores a one-shot job.
No entity is built per occurrence: decoding one and encoding it again cost most of a pass's
time between two awaits, and the late tail of W8 (benchmarks/RESULTS.md) was the event loop
waiting for that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from infinite_scheduler.clock import Clock
from infinite_scheduler.lease import Lease
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.schedules.blockouts import Blockout, Moved, Skipped, blocked
from infinite_scheduler.schedules.ids import occurrence_key
from infinite_scheduler.schedules.model import Plan, Schedule, after_finish, plan
from infinite_scheduler.waits import wait_any
from repos.base import (
    FINISHED,
    Claimant,
    EncodedBatch,
    EncodedRow,
    Failure,
    RowRef,
    ShardingRepository,
    Status,
    StoreError,
    check_for,
)
from repos.schedules import Advance, ScheduleStore

logger = logging.getLogger(__name__)
Repo = ShardingRepository[Any, Any]
#: The lease of the materialiser.
SCHEDULES_LEASE = "schedules"
#: Schedules planned between two yields to the event loop (each costs tens of microseconds).
YIELD_EVERY = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class MaterialiseSettings:
    node_id: str
    epoch: int
    interval_s: float
    ahead_ms: int  #: occurrences due before now + ahead_ms are made
    batch_size: int
    max_per_schedule: int
    horizon_ms: int  #: the fetcher's misfire horizon
    threshold_ms: int  #: misfire threshold (do_nothing keeps a late occurrence within it)


@dataclass(slots=True)
class PassReport:
    """What one pass did."""

    schedules: int = 0  #: schedules advanced
    occurrences: int = 0  #: rows stored (duplicates not counted)
    missed: int = 0  #: occurrences folded or dropped as missed
    moved: int = 0  #: occurrences a blockout delayed
    skipped: int = 0  #: occurrences a blockout skipped
    lost_races: int = 0  #: steps not written: the schedule changed meanwhile
    unknown: set[str] = field(default_factory=set)  #: entity types not served here


def occurrence_row(s: Schedule, key: int | str, at_ms: int, payload: bytes) -> EncodedRow:
    """What an occurrence is stored as: the template's payload (`payload`, encoded once per
    schedule), with its schedule's priority and category."""
    return EncodedRow(key, at_ms, payload, s.row.priority, s.row.category)


class Materialiser:
    """Makes the due occurrences of every schedule, on the node holding the lease."""

    def __init__(
        self,
        store: ScheduleStore,
        repos: Mapping[str, Repo],
        settings: MaterialiseSettings,
        *,
        clock: Clock,
        lease: Lease,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.repos = repos
        self.settings = settings
        self.clock = clock
        self.lease = lease
        self.metrics = metrics
        self.passes = 0

    def __repr__(self) -> str:
        return f"<Materialiser passes={self.passes} lease={self.lease.held}>"

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every interval until `stop`; a failed pass is logged and tried again."""
        while not stop.is_set():
            started = time.monotonic()
            await self.materialise_safely(self.clock.now_ms(), stop)
            elapsed = time.monotonic() - started
            await wait_any(stop, timeout_s=max(0.0, self.settings.interval_s - elapsed))

    async def materialise_safely(
        self, now_ms: int, stop: asyncio.Event | None = None
    ) -> PassReport | None:
        """materialise(), a store error logged (the next pass tries again) instead of raised."""
        try:
            return await self.materialise(now_ms, stop)
        except StoreError as exc:
            logger.warning("schedules: pass failed, next in %gs: %s", self.settings.interval_s,
                           exc, extra=self._extra())  # fmt: skip
            return None

    async def release(self) -> None:
        await self.lease.release()

    async def materialise(
        self, now_ms: int, stop: asyncio.Event | None = None
    ) -> PassReport | None:
        """One pass under the lease; None if another node holds it. A set `stop` ends the
        pass after the batch in hand (the rest is the next holder's)."""
        if not await self.lease.acquire():
            return None
        report = PassReport()
        blockouts = [Blockout.of(row) for row in await self.store.blockouts()]
        await self._finished_delays(now_ms, report)
        until_ms = now_ms + self.settings.ahead_ms
        while True:
            rows = await self.store.due(before_ms=until_ms, limit=self.settings.batch_size)
            advanced = await self._batch([Schedule.of(r) for r in rows], now_ms, blockouts, report)
            if len(rows) < self.settings.batch_size or advanced == 0:
                break
            if stop is not None and stop.is_set():
                break
        self.passes += 1
        if report.occurrences or report.missed or report.skipped:
            logger.info(
                "schedules: %d advanced, %d occurrences stored, %d missed, %d moved, %d skipped",
                report.schedules, report.occurrences, report.missed, report.moved, report.skipped,
                extra=self._extra(),
            )  # fmt: skip
        return report

    async def _batch(
        self, batch: Sequence[Schedule], now_ms: int, blockouts: list[Blockout], report: PassReport
    ) -> int:
        s = self.settings
        by_entity: dict[str, list[EncodedRow]] = {}
        skipped: dict[str, list[tuple[EncodedRow, str]]] = {}
        stale: dict[str, list[Any]] = {}
        steps: list[Advance] = []
        for i, sched in enumerate(batch):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a batch is CPU work: let the wheel fire meanwhile
            repo = self.repos.get(sched.row.entity)
            if repo is None:
                report.unknown.add(sched.row.entity)
                continue
            p = plan(sched, now_ms=now_ms, until_ms=now_ms + s.ahead_ms, limit=s.max_per_schedule,
                     horizon_ms=s.horizon_ms, threshold_ms=s.threshold_ms,
                     ahead_ms=s.ahead_ms)  # fmt: skip
            stale.setdefault(sched.row.entity, []).extend(
                occurrence_key(repo.spec.key_type, sched.id, sched.row.generation, at)
                for at in p.stale
            )
            applying = [b for b in blockouts if b.applies(
                entity=sched.row.entity, category=sched.row.category, schedule=sched.name)]  # fmt: skip
            made, skips, last = self._occurrences(sched, p, applying, repo, report)
            by_entity.setdefault(sched.row.entity, []).extend(made)
            skipped.setdefault(sched.row.entity, []).extend(skips)
            steps.append(replace(p.step, last_at_ms=last) if last is not None else p.step)
            report.missed += p.missed
        for name, keys in stale.items():
            if keys:  # before the inserts: a folded occurrence may be one made ahead
                await self.repos[name].cancel(keys)
        for name, rows in by_entity.items():
            if rows:
                repo = self.repos[name]
                check_for(repo, EncodedBatch.of_rows(rows), now_ms=now_ms)
                report.occurrences += await repo.insert_rows(
                    rows, now_ms=now_ms, on_duplicate="ignore"
                )
        for name, skips in skipped.items():
            if skips:
                await self._store_skipped(self.repos[name], skips, now_ms)
        changed = await self.store.advance(steps, now_ms=now_ms)
        report.schedules += changed
        report.lost_races += len(steps) - changed
        return len(steps)

    def _occurrences(
        self, s: Schedule, p: Plan, blockouts: list[Blockout], repo: Repo, report: PassReport
    ) -> tuple[list[EncodedRow], list[tuple[EncodedRow, str]], int | None]:
        """The rows to store, the rows a blockout skips (with its name), and the time of the
        last one made (moved by a blockout, maybe)."""
        key_type = repo.spec.key_type
        payload = s.row.template_json.encode()
        made: list[EncodedRow] = []
        skips: list[tuple[EncodedRow, str]] = []
        last: int | None = None
        for at_ms in p.occurrences:
            verdict = blocked(blockouts, at_ms) if blockouts else None
            if isinstance(verdict, Moved):
                at_ms = verdict.at_ms
                report.moved += 1
            row = occurrence_row(s, occurrence_key(key_type, s.id, s.row.generation, at_ms),
                                 at_ms, payload)  # fmt: skip
            if isinstance(verdict, Skipped):
                skips.append((row, verdict.blockout))
                report.skipped += 1
            else:
                made.append(row)
            last = at_ms
        return made, skips, last

    async def _store_skipped(
        self, repo: Repo, skipped: list[tuple[EncodedRow, str]], now_ms: int
    ) -> None:
        """Store skipped occurrences as rows MISSED with the blockout named in last_error: the
        skip is on record, and a repeated pass finds them (duplicates, ignored)."""
        epoch = self.settings.epoch
        claimant = Claimant(self.settings.node_id, epoch)
        rows = [row for row, _ in skipped]
        check_for(repo, EncodedBatch.of_rows(rows), now_ms=now_ms)
        await repo.insert_rows(rows, now_ms=now_ms, on_duplicate="ignore", claimed_by=claimant)
        failures = [
            Failure(
                ref=RowRef(row.key, row.at_ms),
                error=f"blockout {name!r}: skipped",
                retry_at_ms=None,
                status=Status.MISSED,
            )
            for row, name in skipped
        ]
        await repo.mark_failed(epoch, failures, now_ms=now_ms)

    async def _finished_delays(self, now_ms: int, report: PassReport) -> None:
        """Fixed-delay schedules whose last occurrence finished: ACTIVE again."""
        after = 0
        while True:
            rows = await self.store.waiting(after_id=after, limit=self.settings.batch_size)
            steps = [step for r in rows if (step := await self._delay_step(Schedule.of(r), now_ms))]
            report.schedules += await self.store.advance(steps, now_ms=now_ms)
            if len(rows) < self.settings.batch_size:
                return
            after = rows[-1].id

    async def _delay_step(self, s: Schedule, now_ms: int) -> Advance | None:
        repo = self.repos.get(s.row.entity)
        last = s.row.last_at_ms
        if repo is None or last is None:
            return None
        key = occurrence_key(repo.spec.key_type, s.id, s.row.generation, last)
        rows = [r for r in await repo.get(key) if r.at_ms == last]
        if rows and rows[0].status not in FINISHED:
            return None
        # Gone with its shard (or never stored): count it finished now rather than wait forever.
        finished = (rows[0].fired_at_ms if rows else None) or now_ms
        return after_finish(s, finished)

    def _extra(self) -> dict[str, object]:
        return {
            "action": "materialise",
            "node": self.settings.node_id,
            "epoch": self.settings.epoch,
        }
