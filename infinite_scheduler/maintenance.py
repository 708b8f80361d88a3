"""The shard lifecycle: shards of the coming periods made ahead, expired shards dropped whole.

Each pass, for each entity type: drop every shard whose period ended at least its retention ago
(the repository's policy, the same horizon below which insert refuses rows), then make the
current shard and the next `create_ahead` ones. A drop is DROP TABLE or DROP PARTITION (SQLite:
DROP TABLE, then the file is truncated): storage stays bounded without a row-by-row DELETE
(invariant 5), and fetches never see the dropped shards (invariant 6).

Nothing goes silently: before a shard is dropped its rows are counted, and rows that never
finished are logged with the shard's name and added to
``infinite_scheduler_unfinished_rows_dropped_total``. Config validation keeps retention at least
misfire horizon + lookahead, so no shard the fetcher can still claim from is ever old enough.
Rows whose status this version does not know (``repos.base.read_status``) are never fired: each
pass logs those due by now, and those in the shards it drops, with shard and ids, and sets
``infinite_scheduler_rows_unknown_status``; dropped, they count as unfinished. A pass that fails
for one entity type, whatever the error, is logged and retried by the next pass: it never ends
maintenance, nor the engine.

One node of the store runs the passes: the one holding the lease ``maintenance``
(infinite_scheduler/lease.py), taken or renewed before each pass. A node that does not hold it
skips the pass (a debug line) and tries again an interval later; when the holder stops
gracefully it releases the lease, and another node takes it at its next try. Every step is
idempotent, so two passes at once (a holder whose lease lapsed mid-pass) only cost duplicate
work; the lease saves that work and the errors of two nodes dropping the same partition. Under
the lease, a pass also hands back claims left under finished epochs (``Takeover.sweep`` in
infinite_scheduler/takeover.py), then prunes the nodes table: LEFT and DEAD rows whose heartbeat
is older than ``nodes_retention_ms`` (the shards' retention) go, so that it does not grow by one
row per process start forever; and the revocations table: those of epochs no longer running
(posted to a node that stopped or died before it read them) go, as nothing reads them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from infinite_scheduler.clock import Clock
from infinite_scheduler.lease import Lease
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.takeover import Takeover
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import (
    Granularity,
    ShardInfo,
    ShardingRepository,
    ShardPolicy,
    StoreError,
    UnknownStatus,
    bucket_of,
    status_label,
)
from repos.history import HistoryStore

logger = logging.getLogger(__name__)

Repo = ShardingRepository[Any, Any]
#: First wait after a failed pass; it doubles up to the maintenance interval.
FIRST_BACKOFF_S = 1.0
#: Ids listed per shard in the warning about rows of unknown status.
UNKNOWN_IDS_SHOWN = 10
#: The key of MaintenanceReport.failures for the nodes table (entity names have no spaces).
NODES_PART = "nodes table"
#: The key of MaintenanceReport.failures for the revocations table.
REVOCATIONS_PART = "revocations table"
#: The key of MaintenanceReport.failures for the sweep of finished epochs' claims.
CLAIMS_PART = "finished claims"
#: The key of MaintenanceReport.failures for the execution history's day tables.
HISTORY_PART = "history"
#: History days made ahead of today (the acks make a missing one too, at a DDL's cost).
HISTORY_DAYS_AHEAD = 1


def ahead_window(now_ms: int, granularity: Granularity, create_ahead: int) -> tuple[int, int]:
    """[start, end) of the current period and the `create_ahead` periods after it."""
    start_ms = bucket_of(now_ms, granularity)
    return start_ms, start_ms + (create_ahead + 1) * granularity.span_ms


def periods_ahead(ready_until_ms: int, now_ms: int, granularity: Granularity) -> int:
    """Whole periods with a shard after the current one, when shards are made up to
    `ready_until_ms`: a pass with create_ahead = N leaves N, and it falls as time passes without
    a pass; -1 when even the current period has none."""
    current_end_ms = bucket_of(now_ms, granularity) + granularity.span_ms
    return max(-1, (ready_until_ms - current_end_ms) // granularity.span_ms)


def expiry_cutoff_ms(now_ms: int, policy: ShardPolicy) -> int:
    """Shards ending at or before this are expired: all their rows are beyond retention."""
    return now_ms - policy.retention_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceSettings:
    node_id: str
    create_ahead: int  #: periods made ahead of the current one
    interval_s: float
    #: LEFT and DEAD rows of the nodes table older than this go (the shards' retention).
    nodes_retention_ms: int = 7 * 86_400_000
    #: A history day's table goes this long after the day ended ([history] retention_days).
    history_retention_ms: int = 7 * 86_400_000


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityReport:
    """One entity type's part of a pass."""

    entity: str
    ensured: tuple[ShardInfo, ...]  #: current and ahead shards, made now or already there
    dropped: tuple[ShardInfo, ...]  #: with their row counts taken just before the drop
    live: int  #: shards left after the pass
    #: Shards holding rows of unknown status when the pass began (dropped ones included).
    unknown: tuple[UnknownStatus, ...] = ()

    @property
    def unfinished_dropped(self) -> int:
        return sum(s.unfinished for s in self.dropped)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceReport:
    now_ms: int
    entities: dict[str, EntityReport] = field(default_factory=dict)
    #: Entity types whose pass stopped on an error (NODES_PART: the pruning of the nodes
    #: table; REVOCATIONS_PART: the revocations table's; CLAIMS_PART: the sweep of finished
    #: epochs' claims); the next pass does it again.
    failures: dict[str, Exception] = field(default_factory=dict)
    #: Claims of finished epochs handed back by this pass.
    claims_swept: int = 0
    #: Rows of the nodes table deleted by this pass.
    nodes_pruned: int = 0
    #: Revocations of epochs no longer running deleted by this pass.
    revocations_pruned: int = 0
    #: History day tables dropped by this pass.
    history_dropped: tuple[str, ...] = ()


class Maintenance:
    """Runs the shard lifecycle over some repositories; `maintain` and `run_once` take the time
    as argument, only `run` reads the clock. With a `lease` (an engine's), passes run only while
    this node holds it; without one (a command run by hand), `run_once` runs them regardless.
    With a `takeover` too, the holder sweeps claims left under finished epochs."""

    def __init__(
        self,
        repos: Sequence[Repo],
        settings: MaintenanceSettings,
        *,
        clock: Clock,
        metrics: Metrics,
        lease: Lease | None = None,
        takeover: Takeover | None = None,
        history: HistoryStore | None = None,
    ) -> None:
        self.repos = list(repos)
        self.history = history
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.lease = lease
        self.takeover = takeover
        self.passes = 0
        self.skipped = 0  #: passes left to the lease's holder
        self.dropped = 0
        self._warned: set[tuple[str, str]] = set()
        for repo in self.repos:  # at 0 from the start: increase() then sees the first drop too
            metrics.shards_dropped.labels(repo.spec.name)
            metrics.unfinished_dropped.labels(repo.spec.name)

    def __repr__(self) -> str:
        return f"<Maintenance passes={self.passes} skipped={self.skipped} dropped={self.dropped}>"

    async def run(self, stop: asyncio.Event) -> None:
        """A pass now, then one every interval; after a failed pass, retry sooner (backoff).
        A pass another node holds the lease for is skipped: the next try comes an interval
        later."""
        interval_s = self.settings.interval_s
        backoff = Backoff(min(FIRST_BACKOFF_S, interval_s), interval_s)
        while not stop.is_set():
            started = time.monotonic()
            report = await self.maintain(self.clock.now_ms())
            if report is not None and report.failures:
                await backoff.wait(stop)
                continue
            backoff.succeeded()
            delay_s = interval_s - (time.monotonic() - started)
            await wait_any(stop, timeout_s=max(0.0, delay_s))

    async def maintain(self, now_ms: int) -> MaintenanceReport | None:
        """A pass if this node holds the lease (taken or renewed now), the nodes table pruned
        too; None: another node holds it (or the store failed), and this node skips the pass."""
        lease = self.lease
        if lease is None:
            return await self.run_once(now_ms)
        if not await lease.acquire():
            self.skipped += 1
            logger.debug(
                "another node holds the lease %r: no shard maintenance here this time",
                lease.name,
                extra={"action": "maintenance", "node": self.settings.node_id},
            )
            return None
        report = await self.run_once(now_ms)
        swept = await self._sweep(lease, report)
        pruned = await self._prune_nodes(lease, report)
        return replace(
            report,
            claims_swept=swept,
            nodes_pruned=pruned,
            revocations_pruned=await self._prune_revocations(lease, report),
        )

    async def release(self) -> None:
        """A graceful stop: give the lease up, so that another node takes it at its next try."""
        if self.lease is not None:
            await self.lease.release()

    async def run_once(self, now_ms: int) -> MaintenanceReport:
        """One pass over every entity type; an error stops that type's pass only."""
        report = MaintenanceReport(now_ms=now_ms)
        for repo in self.repos:
            name = repo.spec.name
            try:
                report.entities[name] = await self._maintain(repo, now_ms)
            except Exception as exc:  # one type's surprise must not end maintenance, nor the engine
                report.failures[name] = exc
                self._log_failure(name, exc)
        self.passes += 1
        if self.history is None:
            return report
        return replace(report, history_dropped=await self._history(self.history, report))

    async def _history(self, history: HistoryStore, report: MaintenanceReport) -> tuple[str, ...]:
        """Drop the history days past their retention, make today's and the next; a failure
        goes into the report, the next pass retries."""
        now_ms = report.now_ms
        extra = {"action": "maintenance", "node": self.settings.node_id}
        try:
            dropped = await history.drop_days_before(now_ms - self.settings.history_retention_ms)
            start_ms, end_ms = ahead_window(now_ms, Granularity.DAY, HISTORY_DAYS_AHEAD)
            await history.ensure_days(start_ms, end_ms)
        except StoreError as exc:
            report.failures[HISTORY_PART] = exc
            logger.warning(
                "history maintenance failed, the next pass retries: %s", exc, extra=extra
            )
            return ()
        for table in dropped:
            logger.info("dropped history table %s past retention", table, extra=extra)
        return tuple(dropped)

    async def _sweep(self, lease: Lease, report: MaintenanceReport) -> int:
        """Claims left under finished epochs back to PENDING (Takeover.sweep); before the
        pruning, which forgets the epochs. A failure goes into the report, the next pass retries."""
        if self.takeover is None:
            return 0
        try:
            return await self.takeover.sweep(await lease.membership.list_nodes())
        except StoreError as exc:
            report.failures[CLAIMS_PART] = exc
            logger.warning(
                "sweeping the claims of finished nodes failed, the next pass retries: %s",
                exc,
                extra={"action": "maintenance", "node": self.settings.node_id},
            )
            return 0

    async def _prune_nodes(self, lease: Lease, report: MaintenanceReport) -> int:
        """Delete the nodes table's old LEFT and DEAD rows; a failure goes into the report."""
        retention_ms = self.settings.nodes_retention_ms
        return await self._prune(
            NODES_PART,
            "the nodes table",
            lease.membership.prune_nodes(retention_ms),
            report,
            "pruned %d rows of the nodes table (left or dead, heartbeat over %g s ago)",
            retention_ms / 1000,
        )

    async def _prune_revocations(self, lease: Lease, report: MaintenanceReport) -> int:
        """Delete the revocations of epochs no longer running; a failure goes into the report."""
        return await self._prune(
            REVOCATIONS_PART,
            "the revocations table",
            lease.membership.prune_revocations(),
            report,
            "pruned %d revocations of epochs no longer running",
        )

    async def _prune(
        self,
        part: str,
        table: str,
        pruning: Coroutine[Any, Any, int],
        report: MaintenanceReport,
        done: str,
        *args: object,
    ) -> int:
        """Await one table's pruning: how many rows went (logged as `done` % (n, *args)), or 0
        with the failure in the report, for the next pass to retry."""
        extra = {"action": "maintenance", "node": self.settings.node_id}
        try:
            pruned = await pruning
        except StoreError as exc:
            report.failures[part] = exc
            logger.warning("pruning %s failed, the next pass retries: %s", table, exc, extra=extra)
            return 0
        if pruned:
            logger.info(done, pruned, *args, extra=extra)
        return pruned

    async def expired(self, repo: Repo, now_ms: int, *, counts: bool = False) -> list[ShardInfo]:
        """The shards of `repo` a pass at now_ms would drop, oldest first (a dry run)."""
        cutoff_ms = expiry_cutoff_ms(now_ms, repo.policy)
        return [s for s in await repo.list_shards(counts=counts) if s.bounds.end_ms <= cutoff_ms]

    async def drop_expired(self, repo: Repo, now_ms: int) -> list[ShardInfo]:
        """Drop the expired shards of `repo`, one call per shard, oldest first: when a drop
        fails, every shard dropped before it has been counted and reported already."""
        dropped = []
        for shard in await self.expired(repo, now_ms):
            for info in await repo.drop_shards_before(shard.bounds.end_ms):
                self._record_drop(repo.spec.name, info)
                dropped.append(info)
        return dropped

    async def _maintain(self, repo: Repo, now_ms: int) -> EntityReport:
        name = repo.spec.name
        # Before the drop, so that the ids of such rows in expired shards are named too. Status
        # is in no index: a pass reads the rows due by now that no claim takes, and every row
        # of the shards it drops (which it counts anyway); `shards list` reads them all.
        unknown = await repo.find_unknown_status(
            limit=UNKNOWN_IDS_SHOWN,
            due_before_ms=now_ms,
            cutoff_ms=expiry_cutoff_ms(now_ms, repo.policy),
        )
        self._warn_unknown(name, unknown)
        # Drop first: after a long stop, the partitioned layout would otherwise make every
        # partition between its newest one and now, only to drop most of them.
        dropped = await self.drop_expired(repo, now_ms)
        gone = {s.name for s in dropped}
        self.metrics.unknown_status.labels(name).set(
            sum(u.count for u in unknown if u.shard not in gone)
        )
        window = ahead_window(now_ms, repo.policy.granularity, self.settings.create_ahead)
        ensured = await repo.ensure_shards(*window)
        live = len(await repo.list_shards())
        self.metrics.shards_live.labels(name).set(live)
        self._watch_ahead(name, window[1], repo)  # every shard of the window exists now
        self._warn_ignored(repo)
        return EntityReport(
            entity=name,
            ensured=tuple(ensured),
            dropped=tuple(dropped),
            live=live,
            unknown=tuple(unknown),
        )

    def _watch_ahead(self, entity: str, ready_until_ms: int, repo: Repo) -> None:
        """Set ``shards_ahead`` to what this pass made, counted against the clock when scraped,
        so that the series falls (and the alert fires) when passes stop, not only when they
        fail."""
        granularity, clock = repo.policy.granularity, self.clock
        self.metrics.shards_ahead.labels(entity).set_function(
            lambda: periods_ahead(ready_until_ms, clock.now_ms(), granularity)
        )

    def _record_drop(self, entity: str, info: ShardInfo) -> None:
        self.dropped += 1
        self.metrics.shards_dropped.labels(entity).inc()
        rows = sum(info.rows.values())
        if info.unfinished:
            self.metrics.unfinished_dropped.labels(entity).inc(info.unfinished)
            logger.warning(
                "%s: dropped shard %s with %d unfinished rows (of %d: %s) past retention",
                entity,
                info.name,
                info.unfinished,
                rows,
                describe_rows(info),
                extra=self._extra(entity, shard=info.name),
            )
        else:
            logger.info(
                "%s: dropped shard %s (%d rows)",
                entity,
                info.name,
                rows,
                extra=self._extra(entity, shard=info.name),
            )

    def _warn_unknown(self, entity: str, unknown: Sequence[UnknownStatus]) -> None:
        """Every pass, as long as they are there: such rows wait for a person, never fire."""
        for found in unknown:
            logger.warning(
                "%s: shard %s holds %s",
                entity,
                found.shard,
                describe_unknown(found),
                extra=self._extra(entity, shard=found.shard),
            )

    def _log_failure(self, entity: str, exc: Exception) -> None:
        if isinstance(exc, StoreError):
            logger.warning(
                "%s: shard maintenance failed, the next pass retries: %s",
                entity,
                exc,
                extra=self._extra(entity, shard=exc.shard),
            )
            return
        logger.error(  # not the store: a bug, so the traceback goes with it
            "%s: shard maintenance failed unexpectedly, the next pass retries: %r",
            entity,
            exc,
            exc_info=exc,
            extra=self._extra(entity, shard=getattr(exc, "shard", None)),
        )

    def _warn_ignored(self, repo: Repo) -> None:
        """Once per name and process: the catalogue is read every pass, the name stays."""
        entity = repo.spec.name
        for name in sorted(repo.ignored_names):
            if (entity, name) not in self._warned:
                self._warned.add((entity, name))
                logger.warning(
                    "%s: %s is not a shard name at %s granularity; left alone, never dropped",
                    entity,
                    name,
                    repo.policy.granularity,
                    extra=self._extra(entity, shard=name),
                )

    def _extra(self, entity: str, *, shard: str | None = None) -> dict[str, Any]:
        return {
            "action": "maintenance",
            "entity": entity,
            "shard": shard,
            "node": self.settings.node_id,
        }


def describe_rows(shard: ShardInfo) -> str:
    """Rows by status in status order, e.g. ``PENDING=2 DONE=1 status 12=1`` (``-``: none)."""
    return " ".join(f"{status_label(st)}={n}" for st, n in sorted(shard.rows.items())) or "-"


def describe_unknown(found: UnknownStatus) -> str:
    """The rows of unknown status in one shard, for the log and ``shards list``, e.g. ``6 rows
    of a status this version does not know, never fired: ids 3 (status 12), 9 (status 13) and 4
    more``."""
    rows = "1 row" if found.count == 1 else f"{found.count} rows"
    ids = ", ".join(f"{key} (status {status})" for key, status in found.sample)
    more = found.count - len(found.sample)
    listed = f"{ids} and {more} more" if more > 0 else ids
    return f"{rows} of a status this version does not know, never fired: ids {listed}"
