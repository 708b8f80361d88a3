"""``infinite-scheduler schedules list|show|pause|resume|trigger`` (over ScheduleBook) and
``infinite-scheduler engine pause|resume|status`` (over EngineControl): a table for people,
``--json`` for scripts. Each change is written to the audit log as the API writes it, with the
actor ``cli:<user>`` (api_commands.cli_actor), so the log holds every change, whichever face
made it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TextIO

import orjson

from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.models import ScheduleOut
from infinite_scheduler.api_commands import cli_actor
from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.job_commands import utc
from infinite_scheduler.shard_commands import served_repositories
from infinite_scheduler.stores import store_access

HEADER = f"{'id':<8} {'name':<24} {'entity':<12} {'state':<8} {'paused':<6} next (UTC)"


def schedules_main(
    config: SchedulerConfig,
    args: argparse.Namespace,
    *,
    setup: Callable[[InfiniteScheduler], None] | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """One schedules command; ScheduleError and store errors propagate (cli.py maps them)."""
    specs = [repo.spec for repo in served_repositories(config, setup)]
    out.write(asyncio.run(_schedules(config, specs, args)))


def engine_main(
    config: SchedulerConfig, args: argparse.Namespace, out: TextIO = sys.stdout
) -> None:
    """One engine command; store errors propagate."""
    specs = [repo.spec for repo in served_repositories(config, None)]
    out.write(asyncio.run(_engine(config, specs, args)))


async def _schedules(config: SchedulerConfig, specs: list[Any], args: argparse.Namespace) -> str:
    async with _opened(config, specs) as (client, auditor):
        book = client.schedules
        if args.action == "list":
            found = [ScheduleOut.of(s) for s in await book.list(entity=args.entity)]
            return _json([s.model_dump(mode="json") for s in found]) if args.json else _table(found)
        before = ScheduleOut.of(await book.get(_ref(args.schedule)))
        if args.action == "show":
            return _json(before.model_dump(mode="json")) if args.json else _fields(before)
        target = f"schedule {before.id}"
        if args.action == "trigger":
            run = await book.trigger(before.id)
            done = {"schedule": run.schedule, "entity": run.entity, "job_id": run.key,
                    "at": utc(run.at_ms), "stored": run.stored}  # fmt: skip
            await auditor.record(cli_actor(), "schedule.trigger", target, None, done)
            return (
                _json(done)
                if args.json
                else f"triggered {run.entity} {run.key!r} at {done['at']}\n"
            )
        change = book.pause if args.action == "pause" else book.resume
        after = ScheduleOut.of(await change(before.id))
        await auditor.record(
            cli_actor(),
            f"schedule.{args.action}",
            target,
            before.model_dump(mode="json"),
            after.model_dump(mode="json"),
        )
        return _json(after.model_dump(mode="json")) if args.json else _fields(after)


async def _engine(config: SchedulerConfig, specs: list[Any], args: argparse.Namespace) -> str:
    async with _opened(config, specs) as (client, auditor):
        control = client.engine_control
        before = await control.paused_since()
        if args.action != "status":
            await (control.pause() if args.action == "pause" else control.resume())
            after = await control.paused_since()
            await auditor.record(
                cli_actor(), f"engine.{args.action}", "engine", _state(before), _state(after)
            )
            before = after
        state = _state(before)
        if args.json:
            return _json(state)
        return f"engine paused since {state['paused_at']} (UTC)\n" if before else "engine running\n"


@asynccontextmanager
async def _opened(
    config: SchedulerConfig, specs: list[Any]
) -> AsyncIterator[tuple[SchedulerClient, Auditor]]:
    access = store_access(config)
    await access.open()
    try:
        async with SchedulerClient(config, *specs) as client:
            yield client, Auditor(access, clock=client.clock)
    finally:
        await access.close()


def _ref(text: str) -> int | str:
    """A schedule by id (digits) or by name."""
    return int(text) if text.isdigit() else text


def _state(paused_since: int | None) -> dict[str, Any]:
    return {"paused": paused_since is not None,
            "paused_at": None if paused_since is None else utc(paused_since)}  # fmt: skip


def _table(found: list[ScheduleOut]) -> str:
    lines = [HEADER] + [
        f"{s.id:<8} {s.name[:24]:<24} {s.entity[:12]:<12} {s.state:<8} {str(s.paused):<6}"
        f" {'-' if s.next_fire_at is None else s.next_fire_at.isoformat()[:19]}"
        for s in found
    ]
    return "\n".join([*lines, f"{len(found)} schedule(s)"]) + "\n"


def _fields(s: ScheduleOut) -> str:
    shown = {"id": s.id, "name": s.name, "entity": s.entity, "owner": s.owner or "-",
             "trigger": orjson.dumps(s.trigger).decode(), "state": s.state, "paused": s.paused,
             "runs": s.runs, "next": s.next_fire_at, "last": s.last_fire_at,
             "category": s.category or "-", "priority": s.priority}  # fmt: skip
    return "".join(f"{name + ':':<10} {value}\n" for name, value in shown.items())


def _json(value: Any) -> str:
    return orjson.dumps(value).decode() + "\n"


def add_control_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``schedules`` and ``engine`` commands; `common` adds --config and --app."""
    schedules = commands.add_parser("schedules", help="list, show, pause, resume, trigger")
    actions = schedules.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every schedule, by id")
    listing.add_argument("--entity", help="of this entity type only")
    parsers = [listing]
    for name, text in (("show", "one schedule"), ("pause", "make no occurrence until resumed"),
                       ("resume", "make occurrences again from now on"),
                       ("trigger", "one extra occurrence now (its next one stays)")):  # fmt: skip
        parser = actions.add_parser(name, help=text)
        parser.add_argument("schedule", help="its id or name")
        parsers.append(parser)
    engine = commands.add_parser(
        "engine", help="pause or resume claiming on every node of the store, or show which"
    )
    engine_actions = engine.add_subparsers(dest="action", required=True)
    for name, text in (("pause", "every node stops claiming and drains what it holds"),
                       ("resume", "every node claims again"),
                       ("status", "paused or running")):  # fmt: skip
        parsers.append(engine_actions.add_parser(name, help=text))
    for parser in parsers:
        parser.add_argument("--json", action="store_true", help="one JSON document")
        common(parser)
