"""W1 ingest, W2 burst and W3 steady (RESULTS.md, "The workloads"), engine in its own process.

- W1: n jobs due over the next hour, stored through the repository in batch_size calls from
  --writers concurrent callers while the engine runs -> jobs/s, next to the bare multi-row
  INSERT ceiling on as many connections.
- W2: the engine runs (fetching every second); n jobs due now are stored in one transaction.
  Drain = from the first claim of those rows to the last ack, both read from the rows
  (claimed_at, fired_at) -> jobs/s, next to the bare select+claim+ack ceiling. CPU per job
  (server; client = the engine process) covers the drain and the wait for the last acks. Pick-up delay
  (waiting for the next fetch) is reported apart, as it measures fetch_interval_s, not speed.
- W3: R jobs/s evenly spaced for 30 s, stored before the engine starts (default settings) ->
  lateness p50/p99/max of every fire, missed and duplicated ids.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import ceiling
from benchmarks.common import Options, bar, log, now_ms, result, sms
from benchmarks.cpu import CpuUse, cpu_use
from benchmarks.loader import insert_all, load, make_shards, spread, stored_rows, wait_done
from benchmarks.records import Fires, Tail
from benchmarks.runner import engine_running, wait_fires
from benchmarks.stats import Result, accounting, lateness, rate, ratio
from benchmarks.store import bench_store, make_repo, opened

HOUR_MS = 3_600_000
#: W2's engine fetches every second, so a burst waits at most that long to be noticed.
W2_SETTINGS: dict[str, Any] = {
    "fetch_interval_s": 1,
    "lookahead_s": 2,
    # node_timeout_s may not exceed the lookahead
    "cluster": {"heartbeat_interval_s": 0.5, "node_timeout_s": 2},
}
W3_RATES = (1000, 5000)
W3_GRACE_S = 5.0


async def w1(opts: Options, n: int | None = None) -> list[Result]:
    n = n or opts.pick(20_000, 100_000)
    async with bench_store(opts, "w1") as url, engine_running(opts, url, "w1"):
        jobs = sms(range(1, n + 1), spread(now_ms() + 60_000, HOUR_MS, n))
        async with opened(make_repo(opts, url)) as repo:
            await make_shards(repo, jobs)  # as the engine makes them ahead: not timed
            with cpu_use(server=opts.is_mysql) as cpu:
                seconds = await insert_all(
                    repo, jobs, opts.batch_size, "W1 insert", writers=opts.writers
                )
    jobs_per_s = rate(n, seconds)
    line = result("w1", opts, n, jobs_per_s=jobs_per_s, **cpu.per_job_us(n))
    if opts.is_mysql:
        _beside_ceiling(line, n, jobs_per_s, *await ceiling.insert_ceiling(opts, n))
        same_table, same_cpu = await ceiling.insert_ceiling(opts, n, table="engine")
        line.update(
            engine_table_ceiling_jobs_per_s=same_table,
            ratio_to_engine_table_ceiling=ratio(jobs_per_s, same_table),
        )
        line.update({f"engine_table_ceiling_{k}": v for k, v in same_cpu.per_job_us(n).items()})
    line.update(batch_size=opts.batch_size, writers=opts.writers)
    return [line]


def _beside_ceiling(
    line: Result, n: int, jobs_per_s: float | None, top: float | None, cpu: CpuUse
) -> None:
    """The ceiling measured in the same run, its ratio, and the CPU per job it took."""
    line.update(ceiling_jobs_per_s=top, ratio_to_ceiling=ratio(jobs_per_s, top))
    line.update({f"ceiling_{k}": v for k, v in cpu.per_job_us(n).items()})


async def w2(opts: Options, n: int | None = None) -> list[Result]:
    n = n or opts.pick(5_000, 20_000)
    async with bench_store(opts, "w2") as url:
        async with engine_running(opts, url, "w2", W2_SETTINGS) as engine:
            async with opened(make_repo(opts, url)) as repo:
                t0 = now_ms()
                await repo.ensure_shards(t0, t0 + 1)
                await repo.insert(sms(range(1, n + 1), [t0] * n), now_ms=t0)
                committed_ms = now_ms()
                tail = Tail(engine.record)
                with (
                    bar(n, "W2 drain") as progress,
                    cpu_use(engine.pid, server=opts.is_mysql) as cpu,
                ):
                    deadline = time.monotonic() + 60 + n / 500
                    await wait_fires(tail, n, deadline_s=deadline, progress=progress)
                    done = await wait_done(repo, n, timeout_s=30)
                rows = await stored_rows(repo, t0, t0 + 1)
    tail.poll()  # anything flushed while the engine stopped (a late repeat would show here)
    fires = tail.fires
    first_claim = min((r.claimed_at_ms or 0 for r in rows), default=0)
    last_ack = max((r.fired_at_ms or 0 for r in rows), default=0)
    drain_s = (last_ack - first_claim) / 1000
    jobs_per_s = rate(n, drain_s) if done == n else None
    line = result("w2", opts, n, jobs_per_s=jobs_per_s, **cpu.per_job_us(n))
    if opts.is_mysql:
        _beside_ceiling(line, n, jobs_per_s, *await ceiling.claim_ceiling(opts, n))
    line.update(accounting(fires, range(1, n + 1)), not_done=n - done)
    line.update(
        drain_s=round(drain_s, 3),
        pickup_ms=first_claim - committed_ms,
        fire_span_ms=_fire_span_ms(fires),
        batch_size=opts.batch_size,
    )
    return [line]


async def w3(opts: Options) -> list[Result]:
    rates = [opts.rate] if opts.rate else list(W3_RATES)
    return [await w3_at(opts, r, w3_duration_s(opts)) for r in rates]


def w3_duration_s(opts: Options) -> int:
    return 5 if opts.quick else 30


async def w3_at(opts: Options, per_s: int, duration_s: int) -> Result:
    n = per_s * duration_s
    async with bench_store(opts, "w3") as url:
        # Stored before the engine starts: rows added to a window already fetched would only
        # be seen a fetch later, which is W2's business, not steady-state lateness.
        start_ms = now_ms() + int((6 + n / 10_000) * 1000)
        async with opened(make_repo(opts, url)) as repo:
            jobs = sms(range(1, n + 1), spread(start_ms, duration_s * 1000, n))
            await load(repo, jobs, opts.batch_size, f"W3 load R={per_s}")
        async with engine_running(opts, url, f"w3-r{per_s}") as engine:
            if engine.ready_ms > start_ms - 1000:
                log(f"W3 R={per_s}: the engine came up late, the first jobs will show it")
            tail = Tail(engine.record)
            with bar(n, f"W3 R={per_s}") as progress:
                deadline = time.monotonic() + (start_ms - now_ms()) / 1000 + duration_s
                await wait_fires(tail, n, deadline_s=deadline + W3_GRACE_S, progress=progress)
    tail.poll()
    keep = opts.out_dir / f"w3-engine-r{per_s}.rec"
    keep.write_bytes(engine.record.read_bytes())
    line = result("w3", opts, n, rate=per_s, duration_s=duration_s, records=str(keep))
    counts = accounting(tail.fires, range(1, n + 1))
    line.update(counts, missed=counts["lost"], **lateness(tail.fires.lateness_ms()))
    return line


def _fire_span_ms(fires: Fires) -> float | None:
    if not len(fires):
        return None
    return round((max(fires.fired_us) - min(fires.fired_us)) / 1000, 1)
