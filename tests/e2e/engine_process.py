"""An engine process for the end-to-end tests: a tiny user app around InfiniteScheduler.

    .venv/bin/python tests/e2e/engine_process.py --config PATH --fires PATH
        [--handler-sleep-ms N] [--hold-ms N] [--loop uvloop|asyncio]

It serves the example SMS entity with a handler that sleeps ``--handler-sleep-ms``, appends one
line ``"{job_id} {attempt} {due_ms} {fired_ms}"`` to the fires file (written and fsynced before
the handler returns, so a ``kill -9`` never loses a recorded fire), then sleeps ``--hold-ms``
(a handler whose side effect is done but which has not returned yet). SIGTERM/SIGINT stop the
engine gracefully; "READY <epoch ms> <epoch> <node id>" goes to stdout once the engine is
running (its epoch in the store's nodes table; its node id, the config's or the one ``node_id =
"AUTO"`` generated). Logs are the engine's JSON lines on stderr, at WARNING. The loop is uvloop,
as the console script runs the engine wherever uvloop is installed, unless ``--loop asyncio``.

Not a test module: the e2e tests start it as a subprocess, as a user would run their app.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import IO, Any

from infinite_scheduler import logs
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.jobs import JobContext
from infinite_scheduler.serve import on_stop_signals
from repos.examples import SMS, SmsEntity


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure("WARNING")
    config = load_config(args.config)
    with open(args.fires, "a", buffering=1) as fires:  # line-buffered: one write() per line
        _run(serve(config, Recorder(fires, args.handler_sleep_ms, args.hold_ms)), args.loop)
    return 0


class Recorder:
    """The handler: one durable line per completed fire."""

    def __init__(self, fires: IO[str], sleep_ms: int, hold_ms: int) -> None:
        self.fires = fires
        self.sleep_s = sleep_ms / 1000
        self.hold_s = hold_ms / 1000

    async def __call__(self, ctx: JobContext[SmsEntity]) -> None:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        self.fires.write(f"{ctx.job_id} {ctx.attempt} {_ms(ctx.due_at)} {_ms(ctx.fired_at)}\n")
        os.fsync(self.fires.fileno())
        if self.hold_s:
            await asyncio.sleep(self.hold_s)


async def serve(config: SchedulerConfig, handler: Recorder) -> None:
    engine = InfiniteScheduler(config)  # inside the running loop, as the CLI builds it
    engine.register(SMS, handler)
    async with engine:
        with on_stop_signals(engine.stop):
            ready_ms = time.time_ns() // 1_000_000
            sys.stdout.write(f"READY {ready_ms} {engine.epoch} {engine.node_id}\n")
            sys.stdout.flush()
            await engine.run()


def _ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """uvloop where installed (as infinite_scheduler.cli runs the engine), or plain asyncio."""
    try:
        import uvloop
    except ImportError:
        loop = "asyncio"
    if loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True, metavar="PATH")
    parser.add_argument("--fires", required=True, metavar="PATH")
    parser.add_argument("--handler-sleep-ms", type=int, default=0, metavar="N")
    parser.add_argument("--hold-ms", type=int, default=0, metavar="N")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    return parser


if __name__ == "__main__":
    sys.exit(main())
