"""``infinite-scheduler history ENTITY ID`` (a job's attempts, newest first) and
``infinite-scheduler sla`` (fired, late and failed shares, lateness and duration percentiles of
a window), read from the configured store: tables for people, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

import orjson

from infinite_scheduler.clock import SystemClock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.history import ExecutionHistory, parse_window
from infinite_scheduler.stores import store_history
from repos.errors import utc_text
from repos.history import HistoryRow, SlaReport, SlaSummary, outcome_label

HISTORY_HEADER = (
    f"  {'attempt':>7}  {'outcome':<8} {'node':<24} {'due (UTC)':<24} {'late ms':>8}"
    f" {'took ms':>8}  error\n"
)
SLA_HEADER = (
    f"  {'entity':<16} {'category':<12} {'fired':>8} {'late':>7} {'failed':>7} {'missed':>7}"
    f" {'late p50/p99 ms':>16} {'took p50/p99 ms':>16}\n"
)


async def history_main(config: SchedulerConfig, args: argparse.Namespace, out: TextIO) -> None:
    """One ``history`` or ``sla`` command; a bad argument raises ValueError (exit 2), the
    store's errors propagate (exit 1)."""
    window_ms = parse_window(args.window) if args.command == "sla" else 0
    store = store_history(config)
    await store.open()
    try:
        reader = ExecutionHistory(
            store, clock=SystemClock(), late_threshold_ms=config.history.late_threshold_ms
        )
        if args.command == "history":
            rows = await reader.of_job(args.entity, args.id, limit=args.limit)
            out.write(_json([r.as_dict() for r in rows]) if args.json else render_attempts(rows))
        else:
            report = await reader.sla(
                entity=args.entity, category=args.category, window_ms=window_ms
            )
            out.write(_json(report.as_dict()) if args.json else render_sla(report))
    finally:
        await store.close()


def render_attempts(rows: Sequence[HistoryRow]) -> str:
    if not rows:
        return "no attempts recorded (none yet, history off, or past [history] retention_days)\n"
    lines = [
        f"  {r.attempt:>7}  {outcome_label(r.outcome):<8} {r.node:<24} {utc_text(r.due_ms):<24}"
        f" {_ms(r.lateness_ms):>8} {_ms(r.duration_ms):>8}  {_one_line(r.error)}\n"
        for r in rows
    ]
    return HISTORY_HEADER + "".join(lines)


def render_sla(report: SlaReport) -> str:
    head = (
        f"attempts ended {utc_text(report.start_ms)} .. {utc_text(report.end_ms)}"
        f" (late: fired > {report.late_threshold_ms} ms after due)\n"
    )
    if not report.groups:
        return head + "no attempts in this window\n"
    rows = [*report.groups, report.total] if len(report.groups) > 1 else list(report.groups)
    return head + SLA_HEADER + "".join(map(_sla_line, rows))


def _sla_line(s: SlaSummary) -> str:
    return (
        f"  {s.entity:<16} {s.category or '-':<12} {s.fired:>8} {s.late_share:>7.1%}"
        f" {s.failed_share:>7.1%} {s.missed:>7}"
        f" {_pair(s.lateness_p50_ms, s.lateness_p99_ms):>16}"
        f" {_pair(s.duration_p50_ms, s.duration_p99_ms):>16}\n"
    )


def _pair(p50: int | None, p99: int | None) -> str:
    return "-" if p50 is None else f"{p50}/{p99}"


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def _one_line(error: str | None) -> str:
    return "" if error is None else " ".join(error.split())[:120]


def _json(value: object) -> str:
    return orjson.dumps(value).decode() + "\n"


def add_history_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str
) -> None:
    """The ``history`` and ``sla`` subcommands of the CLI's parser."""
    history = commands.add_parser(
        "history", help="a job's attempts, newest first (outcome, node, lateness, error)"
    )
    history.add_argument("entity", help="the entity type's name, e.g. sms")
    history.add_argument("id", help="the job's id")
    history.add_argument("--limit", type=int, default=100, help="attempts shown at most")
    sla = commands.add_parser(
        "sla", help="fired, late and failed shares and percentiles of the attempts of a window"
    )
    sla.add_argument("--entity", help="one entity type only")
    sla.add_argument("--category", help="one category only")
    sla.add_argument(
        "--window", default="1h", help="how far back from now: 90s, 15m, 1h, 7d (default 1h)"
    )
    for cmd in (history, sla):
        cmd.add_argument("--config", metavar="PATH", help=config_help)
        cmd.add_argument("--json", action="store_true", help="JSON instead of a table")


def history_command(config: SchedulerConfig, args: argparse.Namespace) -> None:
    """Run it to the end, writing to stdout."""
    asyncio.run(history_main(config, args, sys.stdout))
