"""``infinite-scheduler shards list`` and ``shards drop-expired [--dry-run] [--force]``.

The entity types are the examples (``repos.examples``) unless ``--app`` registers the user's
own; their repositories come from the configured store exactly as the engine would make them.
Drops go through :class:`~infinite_scheduler.maintenance.Maintenance`, so they are counted and
logged the same way as the engine's own passes. Unlike the engine's retention, a person running
``drop-expired`` by hand is shown the unfinished rows it would drop and asked first (without a
terminal to ask on: refused unless ``--force``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from infinite_scheduler.clock import SystemClock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import DropRefused
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
from repos.errors import utc_text
from repos.examples import NOTIFICATIONS, ORDERS, SMS
from repos.urls import SqliteUrl

Repo = ShardingRepository[Any, Any]
EXAMPLES = (SMS, ORDERS, NOTIFICATIONS)
HEADER = f"  {'shard':<24} {'from (UTC)':<20}  {'to (UTC)':<20} {'rows':>10} {'unfinished':>10}  by status\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class DropOptions:
    """How ``drop-expired`` treats shards holding unfinished rows."""

    dry_run: bool = False  #: show what would be dropped, drop nothing
    force: bool = False  #: drop them without asking
    #: Puts a question to a person and returns the answer line; None when nobody can be asked
    #: (stdin is not a terminal), and then unfinished rows are dropped only with `force`.
    ask: Callable[[str], str] | None = None


def confirmed(answer: str) -> bool:
    """Only an explicit yes drops: anything else, an empty line included, is no."""
    return answer.strip().lower() in ("y", "yes")


def shards_main(
    config: SchedulerConfig,
    action: str,
    *,
    options: DropOptions | None = None,
    setup: Callable[[InfiniteScheduler], None] | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run one shards subcommand; store errors propagate (the caller maps them to exit 1), and
    so does DropRefused (exit 3)."""
    if missing_sqlite_store(config, "shards", out):
        return
    repos = served_repositories(config, setup)
    asyncio.run(_shards(config, repos, action, options=options or DropOptions(), out=out))


def missing_sqlite_store(config: SchedulerConfig, what: str, out: TextIO) -> bool:
    """Say so, and return True, when the store is a SQLite file that does not exist: a command
    that only looks must not create one."""
    target = config.store.target
    if isinstance(target, SqliteUrl) and not Path(target.path).exists():
        out.write(f"no store at {target.path}: no {what}\n")
        return True
    return False


def served_repositories(
    config: SchedulerConfig, setup: Callable[[InfiniteScheduler], None] | None
) -> list[Repo]:
    """The repositories of the entity types `setup` registers (None: the examples), made as
    the engine would make them, not opened."""
    engine = InfiniteScheduler(config)
    if setup is not None:
        setup(engine)
    else:
        for spec in EXAMPLES:
            engine.register(spec)
    return list(engine.repositories.values())


async def _shards(
    config: SchedulerConfig,
    repos: Sequence[Repo],
    action: str,
    *,
    options: DropOptions,
    out: TextIO,
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
        if action == "list":
            for repo in repos:
                unknown = await repo.find_unknown_status(limit=UNKNOWN_IDS_SHOWN)
                _print_shards(repo, await repo.list_shards(counts=True), unknown, out)
        else:
            await _drop_expired(maintenance, repos, clock.now_ms(), options, out)


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
        out.write(f"  {found.shard}: {describe_unknown(found)}\n")
    _print_ignored(repo, out)


async def _drop_expired(
    maintenance: Maintenance, repos: Sequence[Repo], now_ms: int, options: DropOptions, out: TextIO
) -> None:
    """Show or drop the expired shards of every type; unfinished rows need a yes or --force.

    One `now_ms` for the look and the drop: a shard that expires while a person reads the
    question is not dropped with the ones they said yes to.
    """
    if options.dry_run:
        for repo in repos:
            shards = await maintenance.expired(repo, now_ms, counts=True)
            _print_drop(repo, shards, now_ms, "would drop", out)
        return
    if not options.force:
        await _confirm_unfinished(maintenance, repos, now_ms, options.ask, out)
    for repo in repos:
        _print_drop(repo, await maintenance.drop_expired(repo, now_ms), now_ms, "dropped", out)


async def _confirm_unfinished(
    maintenance: Maintenance,
    repos: Sequence[Repo],
    now_ms: int,
    ask: Callable[[str], str] | None,
    out: TextIO,
) -> None:
    """Return when the shards to drop hold no unfinished rows or a person said yes to dropping
    them (after seeing what would go); else raise DropRefused."""
    plans = [(repo, await maintenance.expired(repo, now_ms, counts=True)) for repo in repos]
    unfinished = sum(s.unfinished for _, shards in plans for s in shards)
    if not unfinished:
        return
    for repo, shards in plans:
        _print_drop(repo, shards, now_ms, "would drop", out)
    count = sum(len(shards) for _, shards in plans)
    held = f"{_count(count, 'shard')} holding {_count(unfinished, 'unfinished row')}"
    out.write(f"{held}: never fired, or never finished\n")
    out.flush()
    if ask is None:
        raise DropRefused(count, unfinished, asked=False)
    if not confirmed(ask(f"Drop {held}? [y/N] ")):
        raise DropRefused(count, unfinished, asked=True)


def _print_drop(repo: Repo, shards: list[ShardInfo], now_ms: int, verb: str, out: TextIO) -> None:
    ended = f"ending at or before {_utc(expiry_cutoff_ms(now_ms, repo.policy))}"
    out.write(f"{repo.spec.name}: {verb} {_count(len(shards), 'shard')} {ended}\n")
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
    """:func:`repos.errors.utc_text` to the second (the table's columns), e.g.
    ``2026-11-01T00:00:00Z``."""
    return utc_text(ms)[:19] + "Z"
