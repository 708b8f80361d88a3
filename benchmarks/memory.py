"""W5 memory: n jobs held in the engine's wheel -> RSS over baseline and bytes per held job.

The engine starts on an empty store with a lookahead long enough (15 min) and caps high
enough (max_held = n) to hold every job; the jobs are due 10 min ahead, so none fires while
they are counted. Baseline is the engine's RSS once running and idle (its wheel's slot arrays
included); the figure is RSS once every job is held, minus that, per held job. Peak is the
kernel's high-water mark (VmHWM), which includes the claim batches in flight.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Options, bar, log, now_ms, result, sms
from benchmarks.loader import load, spread
from benchmarks.runner import EngineProcess, engine_running
from benchmarks.stats import Result
from benchmarks.store import bench_store, make_repo, opened

MIB = 1024 * 1024
DUE_AHEAD_MS = 600_000


async def w5(opts: Options) -> list[Result]:
    n = opts.pick(100_000, 1_000_000)
    settings = {
        "fetch_interval_s": 2,
        "lookahead_s": 900,
        "max_jobs_per_fetch": min(n, 100_000),
        "max_held": n,
    }
    async with bench_store(opts, "w5") as url, opened(make_repo(opts, url)) as repo:
        async with engine_running(opts, url, "w5", settings) as engine:
            await asyncio.sleep(1.0)  # past start-up: imports done, pools and wheel made
            baseline = engine.rss_bytes()
            jobs = sms(range(1, n + 1), spread(now_ms() + DUE_AHEAD_MS, 60_000, n))
            await load(repo, jobs, opts.batch_size, "W5 load")
            held = await _wait_held(engine, n, timeout_s=120 + n / 2000)
            await asyncio.sleep(1.0)  # claim batches in flight are garbage by now
            full, peak = engine.rss_bytes(), engine.peak_rss_bytes()
            engine.kill()  # releasing n claims is not what is measured; the store is dropped
    over = full - baseline
    line = result("w5", opts, n, rss_mib=round(over / MIB, 1), held=held)
    line.update(
        bytes_per_job=round(over / held) if held else None,
        baseline_mib=round(baseline / MIB, 1),
        peak_over_baseline_mib=round((peak - baseline) / MIB, 1),
        not_held=n - held,
    )
    return [line]


async def _wait_held(engine: EngineProcess, n: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    with bar(n, "W5 held") as progress:
        while engine.held < n and time.monotonic() < deadline and engine.alive():
            progress.n = engine.held
            progress.refresh()
            await asyncio.sleep(0.2)
    if engine.held < n:
        log(f"W5: only {engine.held} of {n} jobs held after {timeout_s:.0f} s")
    return engine.held
