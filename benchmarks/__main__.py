"""``python -m benchmarks WORKLOAD [options] [--json]``: the workloads of RESULTS.md.

    python -m benchmarks w2 --repeat 3 --json          # W2 three times, then the median line
    python -m benchmarks all --quick                   # what `make bench` runs
    python -m benchmarks scale --store mysql-partitioned
    python -m benchmarks w4 --backlog 200000 --json     # W4 as a recovery from a backlog

Each run prints one line per figure (a table, or JSON lines with --json) and appends the JSON
lines to OUT/results.jsonl. With --repeat K, every run's line is printed, then the median
line, marked ``"summary": "median"``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks import (
    ceiling,
    cluster,
    galera,
    ingest,
    listing,
    memory,
    peer,
    plot,
    recovery,
    schedules,
    storage,
    workloads,
)
from benchmarks.common import ROOT, Options, log
from benchmarks.stats import Result, median_of

Workload = Callable[[Options], Coroutine[Any, Any, list[Result]]]
WORKLOADS: dict[str, Workload] = {
    "w1": workloads.w1,
    "ingest": ingest.ingest,
    "w2": workloads.w2,
    "w3": workloads.w3,
    "w4": recovery.w4,
    "w5": memory.w5,
    "w6": cluster.w6,
    "w7": cluster.w7,
    "w8": schedules.w8,
    "w9": galera.w9,
    "ceiling": ceiling.run,
    "scale": storage.scale,
    "drop": storage.drop,
    "peer": peer.run,
    "list": listing.listing,
}
#: `all`: every workload once, in this order, then the W3 lateness plot.
ALL = ("ceiling", "ingest", "w1", "w2", "w3", "w4", "w5", "drop", "scale", "peer")
STORES = ("mysql-multi", "mysql-partitioned", "sqlite")
DRIVERS = ("asyncmy", "aiomysql")
#: Fields that tell two lines of one workload apart, so that --repeat takes medians per figure.
IDENTITY = ("workload", "store", "driver", "n", "rate", "system", "nodes", "history")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Server notes (DROP DATABASE IF EXISTS of a store that is not there, CREATE TABLE IF NOT
    # EXISTS losing a race): asyncmy logs them, aiomysql warns; neither is news here.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="aiomysql")
    opts = Options(
        store=args.store or "mysql-multi",
        store_given=args.store is not None,
        driver=args.driver,
        n=args.n,
        rate=args.rate,
        quick=args.quick,
        batch_size=args.batch_size,
        writers=args.writers,
        peer_workers=args.peer_workers,
        workdir=Path(tempfile.mkdtemp(prefix="ist-bench-")),
        out_dir=args.out,
        history=args.history == "on",
        backlog=args.backlog,
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    names = {"all": ALL, "plot": ()}.get(args.workload, (args.workload,))
    for name in names:
        runs: list[list[Result]] = []
        for k in range(args.repeat):
            if args.repeat > 1:
                log(f"{name}: run {k + 1} of {args.repeat}")
            lines = _run(WORKLOADS[name](opts))
            runs.append(lines)
            _emit(lines, opts, as_json=args.json)
        if args.repeat > 1:
            _emit(_medians(runs), opts, as_json=args.json)
    if args.workload in ("all", "w3", "peer", "plot"):
        made = plot.lateness_plot(opts.out_dir, ROOT / "benchmarks" / "lateness.png")
        if made is not None:
            log(f"lateness plot: {made}")
    return 0


def _medians(runs: list[list[Result]]) -> list[Result]:
    """The median line of each figure over the runs (lines matched by their IDENTITY)."""
    groups: dict[tuple[object, ...], list[Result]] = {}
    for lines in runs:
        for line in lines:
            groups.setdefault(tuple(line.get(k) for k in IDENTITY), []).append(line)
    return [median_of(group) for group in groups.values()]


def _run(workload: Coroutine[Any, Any, list[Result]]) -> list[Result]:
    """On uvloop where installed, as the engine runs: the loader and the bare-driver ceiling
    are clients like any user's producer."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(workload)
    return uvloop.run(workload)


def _emit(lines: list[Result], opts: Options, *, as_json: bool) -> None:
    with (opts.out_dir / "results.jsonl").open("ab") as kept:
        for line in lines:
            data = orjson.dumps(line)
            kept.write(data + b"\n")
            if as_json:
                sys.stdout.write(data.decode() + "\n")
            else:
                sys.stdout.write(_human(line) + "\n")
    sys.stdout.flush()


def _human(line: Result) -> str:
    skip = {"commit", "machine", "records"}
    shown = [f"{k}={v}" for k, v in line.items() if v is not None and k not in skip]
    return "  ".join(shown)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="infinite-scheduler benchmark workloads"
    )
    parser.add_argument("workload", choices=[*WORKLOADS, "all", "plot"])
    parser.add_argument(
        "--store", choices=STORES, default=None, help="default mysql-multi (MariaDB)"
    )
    parser.add_argument("--driver", choices=DRIVERS, default="asyncmy")
    parser.add_argument("--n", type=int, default=None, help="jobs (overrides the workload's)")
    parser.add_argument("--rate", type=int, default=None, help="W3: jobs per second")
    parser.add_argument("--quick", action="store_true", help="small counts (make bench)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; > 1 adds a median line")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--writers", type=int, default=2, help="W1's concurrent inserts (and the ceiling's)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=None,
        help="W4: start one engine on this many overdue jobs (a few of priority 1000, due last)",
    )
    parser.add_argument("--peer-workers", type=int, default=10, help="APScheduler's pool")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    parser.add_argument(
        "--history",
        choices=("on", "off"),
        default="on",
        help="the engines write execution history ([history] enabled; lines say history=false)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "out", help="records, results.jsonl"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
