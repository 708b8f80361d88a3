"""``infinite-scheduler shards list`` and ``shards drop-expired [--dry-run]``.

The entity types are the examples (``repos.examples``) unless ``--app`` registers the user's
own; their repositories come from the configured store exactly as the engine would make them.
Drops go through :class:`~infinite_scheduler.maintenance.Maintenance`, so they are counted and
logged the same way as the engine's own passes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from infinite_scheduler.clock import SystemClock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.maintenance import (
    UNKNOWN_IDS_SHOWN,
    Maintenance,
    MaintenanceSettings,
    describe_rows,
    describe_unknown,
    expiry_cutoff_ms,
)
from infinite_scheduler.metrics import Metrics
from repos.base import ShardInfo, ShardingRepository, UnknownStatus
from repos.examples import NOTIFICATIONS, ORDERS, SMS
from repos.registry import SqliteUrl

Repo = ShardingRepository[Any, Any]
EXAMPLES = (SMS, ORDERS, NOTIFICATIONS)
HEADER = f"  {'shard':<24} {'from (UTC)':<20}  {'to (UTC)':<20} {'rows':>10} {'unfinished':>10}  by status\n"


def shards_main(
    config: SchedulerConfig,
    action: str,
    *,
    dry_run: bool = False,
    setup: Callable[[InfiniteScheduler], None] | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run one shards subcommand; store errors propagate (the caller maps them to exit 1)."""
    target = config.store.target
    if isinstance(target, SqliteUrl) and not Path(target.path).exists():
        out.write(f"no store at {target.path}: no shards\n")  # and do not create one
        return
    engine = InfiniteScheduler(config)
    if setup is not None:
        setup(engine)
    else:
        for spec in EXAMPLES:
            engine.register(spec)
    repos = [lane.repo for lane in engine.lanes.values()]
    asyncio.run(_shards(config, repos, action, dry_run=dry_run, out=out))


async def _shards(
    config: SchedulerConfig, repos: Sequence[Repo], action: str, *, dry_run: bool, out: TextIO
) -> None:
    settings = MaintenanceSettings(
        node_id=config.resolved_node_id,
        create_ahead=config.shards.create_ahead,
        interval_s=config.shards.maintenance_interval_s,
    )
    clock = SystemClock()
    maintenance = Maintenance(repos, settings, clock=clock, metrics=Metrics())
    async with AsyncExitStack() as stack:
        for repo in repos:
            await repo.open()
            stack.push_async_callback(repo.close)
        for repo in repos:
            if action == "list":
                unknown = await repo.find_unknown_status(limit=UNKNOWN_IDS_SHOWN)
                _print_shards(repo, await repo.list_shards(counts=True), unknown, out)
            else:
                await _drop_expired(maintenance, repo, clock.now_ms(), dry_run=dry_run, out=out)


def _print_shards(
    repo: Repo, shards: list[ShardInfo], unknown: list[UnknownStatus], out: TextIO
) -> None:
    policy = repo.policy
    out.write(
        f"{repo.spec.name}: {_count(len(shards), 'shard')} ({policy.granularity}, "
        f"kept {policy.retention_ms // 1000} s after their end)\n"
    )
    if shards:
        out.write(HEADER)
        for shard in shards:
            out.write(_shard_line(shard, "  "))
        rows = sum(sum(s.rows.values()) for s in shards)
        out.write(f"  total {rows} rows, {sum(s.unfinished for s in shards)} unfinished\n")
    for found in unknown:
        out.write(
            f"  {found.shard}: {_count(found.count, 'row')} of a status this version does not"
            f" know, never fired: ids {describe_unknown(found)}\n"
        )
    _print_ignored(repo, out)


async def _drop_expired(
    maintenance: Maintenance, repo: Repo, now_ms: int, *, dry_run: bool, out: TextIO
) -> None:
    name, cutoff_ms = repo.spec.name, expiry_cutoff_ms(now_ms, repo.policy)
    if dry_run:
        shards, verb = await maintenance.expired(repo, now_ms, counts=True), "would drop"
    else:
        shards, verb = await maintenance.drop_expired(repo, now_ms), "dropped"
    ended = f"ending at or before {_utc(cutoff_ms)}"
    out.write(f"{name}: {verb} {_count(len(shards), 'shard')} {ended}\n")
    for shard in shards:
        out.write(_shard_line(shard, f"  {verb} "))
    _print_ignored(repo, out)


def _shard_line(shard: ShardInfo, lead: str) -> str:
    bounds = shard.bounds
    return (
        f"{lead}{shard.name:<24} {_utc(bounds.start_ms):<20}  {_utc(bounds.end_ms):<20} "
        f"{sum(shard.rows.values()):>10} {shard.unfinished:>10}  {describe_rows(shard)}\n"
    )


def _print_ignored(repo: Repo, out: TextIO) -> None:
    if repo.ignored_names:
        names = ", ".join(sorted(repo.ignored_names))
        out.write(f"  not shards (left alone): {names}\n")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
