"""The peer: APScheduler 3.11 on the same store, W1, W2 and W3 at 1,000 jobs/s, beside the engine.

Each figure is measured for both systems in the same run and at the same job count, and the
peer's line carries the engine's figure and the ratio engine / APScheduler (for W3, the ratio of
the p99 lateness: below 1 means the engine fires closer to on time). APScheduler runs in its own
process (benchmarks/peer_app.py), as the engine does.

- W1: the time APScheduler takes to add n jobs due over the next hour (one INSERT each).
- W2: n jobs added while the scheduler is paused, all due at once; resumed -> from the resume
  to the last fire.
- W3: 1,000 jobs/s for 30 s (quick: 5 s), added before the first is due -> lateness.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from benchmarks import workloads
from benchmarks.common import ROOT, Options, log, now_ms, result
from benchmarks.records import Fires, read
from benchmarks.stats import Result, accounting, lateness, rate, ratio
from benchmarks.store import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, bench_store

HOUR_MS = 3_600_000
W3_RATE = 1000
SYSTEM = "apscheduler"


async def run(opts: Options) -> list[Result]:
    n1 = opts.pick(2_000, 10_000)
    n2 = opts.pick(1_000, 5_000)
    loaded = await peer_w1(opts, n1)
    engine_w1 = (await workloads.w1(opts, n1))[0]
    lines = [_versus(loaded, engine_w1, "jobs_per_s")]
    drained = await peer_w2(opts, n2)
    engine_w2 = (await workloads.w2(opts, n2))[0]
    lines.append(_versus(drained, engine_w2, "jobs_per_s"))
    duration_s = workloads.w3_duration_s(opts)
    add_rate = loaded["jobs_per_s"] or 1000.0
    steady = await peer_w3(opts, duration_s, add_rate)
    engine_w3 = await workloads.w3_at(opts, W3_RATE, duration_s)
    lines.append(_versus(steady, engine_w3, "p99_ms"))
    return lines


async def peer_w1(opts: Options, n: int) -> Result:
    async with peer_store(opts) as db:
        run_ = await _peer_process(opts, db, "peer-w1", n, now_ms() + 60_000, HOUR_MS, fire=False)
    return result("peer-w1", opts, n, system=SYSTEM, jobs_per_s=rate(n, run_.loaded_s))


async def peer_w2(opts: Options, n: int) -> Result:
    async with peer_store(opts) as db:
        run_ = await _peer_process(opts, db, "peer-w2", n, now_ms(), 0, fire=True)
    fires = run_.fires
    drain_s = (max(fires.fired_us) / 1000 - run_.resumed_ms) / 1000 if len(fires) else 0.0
    line = result("peer-w2", opts, n, system=SYSTEM, jobs_per_s=rate(n, drain_s))
    line.update(accounting(fires, range(1, n + 1)), drain_s=round(drain_s, 3))
    return line


async def peer_w3(opts: Options, duration_s: int, add_rate: float) -> Result:
    n = W3_RATE * duration_s
    lead_ms = int((3 + 1.5 * n / add_rate) * 1000)  # adding them all must end before the first
    async with peer_store(opts) as db:
        run_ = await _peer_process(
            opts, db, f"w3-peer-r{W3_RATE}", n, now_ms() + lead_ms, duration_s * 1000, fire=True
        )
    if run_.resumed_ms > run_.start_ms:
        log("peer W3: adding the jobs took longer than the lead; the first ones show it")
    keep = opts.out_dir / f"w3-peer-r{W3_RATE}.rec"
    keep.write_bytes(run_.record.read_bytes())
    line = result("peer-w3", opts, n, system=SYSTEM, rate=W3_RATE, duration_s=duration_s)
    fires = run_.fires
    counts = accounting(fires, range(1, n + 1))
    line.update(counts, missed=counts["lost"], records=str(keep))
    line.update(lateness(fires.lateness_ms()))
    return line


def _versus(peer: Result, engine: Result, key: str) -> Result:
    """The peer's line with the engine's figure beside it and the ratio engine / peer."""
    peer[f"engine_{key}"] = engine.get(key)
    peer["ratio_engine_to_peer"] = ratio(engine.get(key), peer.get(key))
    return peer


@asynccontextmanager
async def peer_store(opts: Options) -> AsyncIterator[str]:
    """A fresh database (or SQLite file) for APScheduler's job store; its SQLAlchemy URL."""
    async with bench_store(opts, "peer") as url:
        if opts.is_mysql:
            database = url.rsplit("/", 1)[1]
            yield f"mysql+pymysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{database}"
        else:
            yield url


class PeerRun:
    def __init__(self, record: Path, start_ms: int) -> None:
        self.record = record
        self.start_ms = start_ms
        self.loaded_s = 0.0
        self.resumed_ms = 0

    @property
    def fires(self) -> Fires:
        """Read from the record file each time: take it once, after the process exited."""
        return read(self.record)


async def _peer_process(
    opts: Options, db: str, name: str, n: int, start_ms: int, span_ms: int, *, fire: bool
) -> PeerRun:
    record = opts.workdir / f"{name}.rec"
    argv = [sys.executable, "-m", "benchmarks.peer_app", "--db", db, "--record", str(record)]
    argv += ["--n", str(n), "--start-ms", str(start_ms), "--span-ms", str(span_ms)]
    argv += ["--workers", str(opts.peer_workers)] + ([] if fire else ["--no-fire"])
    argv += ["--deadline-s", str(60 + span_ms / 1000 + n / 200)]
    run_ = PeerRun(record, start_ms)
    with (opts.workdir / f"{name}.log").open("ab") as errors:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=errors
        )
    assert proc.stdout is not None
    async for raw in proc.stdout:
        word, *values = raw.decode().split() or [""]
        if word == "LOADED":
            run_.loaded_s = float(values[0])
        elif word == "RESUMED":
            run_.resumed_ms = int(values[0])
    if await proc.wait() != 0:
        raise RuntimeError(f"APScheduler exited with {proc.returncode}; see {errors.name}")
    return run_
