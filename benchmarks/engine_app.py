"""The engine under test, in its own process, as a user's app would run it.

    python -m benchmarks.engine_app --config PATH --record PATH [--sync] [--status-s 0.5]

Reads its settings with the real loader (``load_config``), serves the example SMS entity with
a no-op handler that records each fire (see benchmarks/records.py), and runs until SIGTERM or
SIGINT. The handler appends to an in-memory array that is written out every FLUSH_S, so that
recording costs next to nothing; with ``--sync`` (W4, which kills the engine with ``kill -9``)
each fire is written before the handler returns, hence before its ack: a row the store shows
DONE always has its record. The file is never fsynced: a killed process loses nothing it
wrote, and W4 kills processes, not the machine.

Lines on stdout: ``READY <epoch ms>`` once the engine runs, then ``STATUS <held> <fired>
<acked>`` every ``--status-s``. Logs (JSON, WARNING and up) go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from array import array
from collections.abc import Sequence

from infinite_scheduler import logs
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.jobs import JobContext
from infinite_scheduler.serve import on_stop_signals, run_loop
from repos.examples import SMS, SmsEntity

FLUSH_S = 0.05


class Recorder:
    """The handler under test: records (id, scheduled ms, fired µs), the layout of
    benchmarks/records.py, and does nothing else."""

    def __init__(self, fd: int, *, sync: bool) -> None:
        self.fd = fd
        self.sync = sync
        self.buffer: array[int] = array("q")

    async def __call__(self, ctx: JobContext[SmsEntity]) -> None:
        record = (int(ctx.job_id), ctx.scheduled_ms, time.time_ns() // 1000)
        if self.sync:
            os.write(self.fd, array("q", record).tobytes())
        else:
            self.buffer.extend(record)

    def flush(self) -> None:
        if self.buffer:
            data, self.buffer = self.buffer.tobytes(), array("q")
            os.write(self.fd, data)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(FLUSH_S)
            self.flush()


async def serve(config: SchedulerConfig, recorder: Recorder, status_s: float) -> None:
    engine = InfiniteScheduler(config)  # inside the running loop, as the CLI builds it
    engine.register(SMS, recorder)
    async with engine:
        with on_stop_signals(engine.stop):
            _say(f"READY {time.time_ns() // 1_000_000}")
            side = [
                asyncio.create_task(recorder.run(engine.stopping), name="bench-recorder"),
                asyncio.create_task(_report(engine, status_s), name="bench-status"),
            ]
            try:
                await engine.run()
            finally:
                for task in side:
                    task.cancel()
                await asyncio.gather(*side, return_exceptions=True)
    recorder.flush()  # handlers that ran while the engine drained


async def _report(engine: InfiniteScheduler, every_s: float) -> None:
    while True:
        _say(f"STATUS {engine.held()} {engine.parts.dispatcher.fired} {engine.parts.acker.flushed}")
        await asyncio.sleep(every_s)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True, metavar="PATH")
    parser.add_argument("--record", required=True, metavar="PATH")
    parser.add_argument("--sync", action="store_true", help="write each fire before its ack")
    parser.add_argument("--status-s", type=float, default=0.5)
    args = parser.parse_args(argv)
    logs.configure("WARNING")
    config = load_config(args.config)
    fd = os.open(args.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        run_loop(serve(config, Recorder(fd, sync=args.sync), args.status_s))
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
