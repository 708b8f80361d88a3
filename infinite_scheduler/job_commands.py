"""``infinite-scheduler jobs list|show|cancel|pause|resume|run-now|reschedule``: the job
service (infinite_scheduler/management) from the command line, a table for people and
``--json`` for scripts. The entity types are the examples unless ``--app`` registers the
user's own. Times are ISO 8601 with their zone (``2026-11-22T12:00:00+00:00``), shown in UTC.
A change is written to the audit log with the job before and after, by ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api_commands import cli_actor
from infinite_scheduler.clock import SystemClock, epoch_ms
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import InvalidJobRequest
from infinite_scheduler.management import JobFilter, JobPage, JobService, JobView, PageRequest
from infinite_scheduler.shard_commands import served_repositories
from infinite_scheduler.stores import store_access
from repos.base import Status

CHANGES = ("cancel", "pause", "resume", "run-now", "reschedule")
COLUMNS = (
    ("id", 22),
    ("state", 9),
    ("scheduled (UTC)", 23),
    ("due (UTC)", 23),
    ("tries", 5),
    ("claimed by", 16),
    ("prio", 4),
    ("category", 12),
)


def jobs_main(
    config: SchedulerConfig,
    args: argparse.Namespace,
    *,
    setup: Callable[[InfiniteScheduler], None] | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run one jobs command; JobControlError and store errors propagate (cli.py maps them)."""
    specs = [repo.spec for repo in served_repositories(config, setup)]
    result = asyncio.run(_call(config, specs, args))
    if isinstance(result, JobPage):
        out.write(_json_page(result) if args.json else render_page(result))
    else:
        out.write(_json(result.as_dict()) if args.json else render_job(result))


async def _call(
    config: SchedulerConfig, specs: list[Any], args: argparse.Namespace
) -> JobView | JobPage:
    async with JobService(config, *specs) as jobs:
        if args.action == "list":
            return await jobs.list_jobs(job_filter(args), _page(args))
        before = await jobs.get_job(args.entity, args.id)
        if args.action == "show":
            return before
        if args.action == "reschedule":
            after = await jobs.reschedule(args.entity, args.id, parse_time("at", args.at))
        else:
            change = {
                "cancel": jobs.cancel,
                "pause": jobs.pause,
                "resume": jobs.resume,
                "run-now": jobs.run_now,
            }[args.action]
            after = await change(args.entity, args.id)
        await _audit(config, f"job.{args.action}", before, after)
        return after


async def _audit(config: SchedulerConfig, action: str, before: JobView, after: JobView) -> None:
    """The change in the audit log, as the API writes it, by ``cli:<user>``."""
    store = store_access(config)
    await store.open()
    try:
        auditor = Auditor(store, clock=SystemClock())
        target = f"job {after.entity} {after.id}"
        await auditor.record(cli_actor(), action, target, before.as_dict(), after.as_dict())
    finally:
        await store.close()


def job_filter(args: argparse.Namespace) -> JobFilter:
    states = frozenset(_state(name) for name in args.state or ())
    return JobFilter(
        entity=args.entity,
        states=states,
        from_ms=None if args.since is None else epoch_ms(parse_time("from", args.since)),
        before_ms=None if args.before is None else epoch_ms(parse_time("before", args.before)),
        category=args.category,
        schedule=args.schedule,
    )


def _page(args: argparse.Namespace) -> PageRequest:
    return PageRequest(
        size=args.size, cursor=args.cursor, order="newest" if args.newest else "oldest"
    )


def _state(name: str) -> Status:
    try:
        return Status[name.upper()]
    except KeyError:
        raise InvalidJobRequest(
            "state", name, f"one of {', '.join(s.name for s in Status)}"
        ) from None


def parse_time(field: str, text: str) -> datetime:
    """An ISO 8601 time with its zone; InvalidJobRequest naming `field` otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidJobRequest(
            field, text, "an ISO 8601 time, e.g. 2026-11-22T12:00:00+00:00"
        ) from None
    if at.tzinfo is None:
        raise InvalidJobRequest(field, text, "a time with its zone, e.g. +00:00 or Z")
    return at


def utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def render_page(page: JobPage) -> str:
    header = " ".join(f"{name:<{width}}" for name, width in COLUMNS).rstrip()
    lines = [header] + [_row(job) for job in page.jobs]
    lines.append(f"{len(page.jobs)} job(s)")
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    return "\n".join(lines) + "\n"


def _row(job: JobView) -> str:
    values = (
        job.id, job.state, utc(job.scheduled_ms), utc(job.due_ms), job.attempts,
        job.claimed_by or "-", job.priority, job.category or "-",
    )  # fmt: skip
    return " ".join(f"{v!s:<{w}}" for v, (_, w) in zip(values, COLUMNS, strict=True)).rstrip()


def render_job(job: JobView) -> str:
    fields = {
        "entity": job.entity,
        "id": job.id,
        "state": job.state,
        "scheduled": utc(job.scheduled_ms),
        "due": utc(job.due_ms),
        "attempts": job.attempts,
        "claimed by": job.claimed_by or "-",
        "fired": utc(job.fired_ms),
        "priority": job.priority,
        "category": job.category or "-",
        "schedule": "-" if job.schedule is None else job.schedule,
        "shard": job.shard,
        "last error": job.last_error or "-",
    }
    return "".join(f"{name + ':':<12} {value}\n" for name, value in fields.items())


def _json(value: Any) -> str:
    return orjson.dumps(value).decode() + "\n"


def _json_page(page: JobPage) -> str:
    return _json({"jobs": [job.as_dict() for job in page.jobs], "next_cursor": page.next_cursor})


def add_jobs_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``jobs`` command and its actions; `common` adds --config and --app to each."""
    jobs_cmd = commands.add_parser("jobs", help="list, show and change stored jobs")
    actions = jobs_cmd.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="jobs of one entity type, filtered, a page at a time")
    listing.add_argument("entity")
    listing.add_argument(
        "--state", action="append", help="PENDING, CLAIMED, PAUSED, ... (repeatable)"
    )
    listing.add_argument(
        "--from", dest="since", metavar="TIME", help="scheduled at or after (ISO 8601)"
    )
    listing.add_argument("--before", metavar="TIME", help="scheduled before (ISO 8601)")
    listing.add_argument("--category")
    listing.add_argument("--schedule", type=int, help="occurrences of this schedule id")
    listing.add_argument("--size", type=int, default=50, help="jobs per page (1-1000)")
    listing.add_argument("--cursor", help="the next page, as the last one printed it")
    listing.add_argument("--newest", action="store_true", help="newest first")
    show = actions.add_parser("show", help="one job: state, times, attempts, claim, last error")
    parsers = [listing, show]
    for name in CHANGES:
        parsers.append(actions.add_parser(name, help=f"{name} one job"))
    for parser in parsers[1:]:
        parser.add_argument("entity")
        parser.add_argument("id")
    parsers[-1].add_argument("at", metavar="TIME", help="the new time (ISO 8601 with zone)")
    for parser in parsers:
        parser.add_argument("--json", action="store_true", help="one JSON document")
        common(parser)
