"""W4 recovery: ``kill -9`` the engine mid-run, restart it, and check the store lost nothing.

n jobs due over 20 s; the engine is killed at 10 s and a new one started at 15 s (quick: 8 s,
4 s, 6 s). Both record each fire before its ack (``--sync``), so a DONE row without a record
would be a bug of the harness, reported as ``unrecorded``. Lost = ids whose row is not DONE at
the end, or that no record shows fired. Recovered = ids due before the restart that the first
engine never fired; their lateness is measured from the restart (spawn of the new process).

With ``--backlog N`` (:func:`w4_backlog`), W4 is the recovery after a longer downtime instead:
N jobs overdue by one to six minutes, the last BACKLOG_HIGH of them priority 1000, and one
engine started on them. It measures how long the drain takes, the server's and the engine's
CPU per job, and when the high-priority jobs fired: the claims of an old backlog rank
(infinite_scheduler/fetcher.py), so they should fire within the first claims, not last.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Options, bar, now_ms, result, sms
from benchmarks.cpu import cpu_use
from benchmarks.loader import (
    count_done,
    insert_all,
    load,
    make_shards,
    spread,
    stored_rows,
    wait_done,
)
from benchmarks.records import Fires, Tail, read
from benchmarks.runner import EngineProcess, engine_running, wait_fires
from benchmarks.stats import Result, accounting, first_fires, lateness, rate
from benchmarks.store import bench_store, make_repo, opened
from repos.base import ShardingRepository, Status, encode_for

FETCH_INTERVAL_S = 25  # the default the engines run with here; the bar allows this + 1 s
#: The restart reuses the killed engine's node id, which is free once its heartbeat timed out:
#: well before the restart, 2 s (quick) after the kill.
W4_SETTINGS = {"cluster": {"heartbeat_interval_s": 0.5, "node_timeout_s": 1.5}}


#: --backlog: how many of the backlog's jobs, the last due, are priority 1000 (the rest: 500).
BACKLOG_HIGH = 10
#: --backlog: the jobs are due over this span, ending BACKLOG_AGE_MS before the engine starts.
BACKLOG_SPAN_MS = 5 * 60_000
BACKLOG_AGE_MS = 60_000


async def w4(opts: Options) -> list[Result]:
    if opts.backlog:
        return await w4_backlog(opts, opts.backlog)
    n = opts.pick(2_000, 10_000)
    span_s, kill_s, restart_s = (8, 4, 6) if opts.quick else (20, 10, 15)
    ids = range(1, n + 1)
    async with bench_store(opts, "w4") as url, opened(make_repo(opts, url)) as repo:
        t0 = now_ms() + int((4 + n / 10_000) * 1000)
        await load(repo, sms(ids, spread(t0, span_s * 1000, n)), opts.batch_size, "W4 load")
        async with engine_running(opts, url, "w4-first", W4_SETTINGS, sync=True) as first:
            await _sleep_until(t0 + kill_s * 1000)
            first.kill()
        await _sleep_until(t0 + restart_s * 1000)
        async with engine_running(opts, url, "w4-second", W4_SETTINGS, sync=True) as second:
            await _wait_all_done(repo, n, until_ms=t0 + (span_s + FETCH_INTERVAL_S + 10) * 1000)
        rows = await stored_rows(repo, t0, t0 + span_s * 1000)
    fires_a, fires_b = read(first.record), read(second.record)
    done = {int(r.key) for r in rows if r.status is Status.DONE}
    line = result("w4", opts, n, span_s=span_s, kill_at_s=kill_s, restart_at_s=restart_s)
    line.update(accounting(fires_a.merged(fires_b), ids))
    fired = set(fires_a.ids) | set(fires_b.ids)
    line.update(
        lost=sum(1 for i in ids if i not in done or i not in fired),
        not_done=n - len(done),
        unrecorded=len(done - fired),
        fired_by_first=len(set(fires_a.ids)),
        fired_by_second=len(set(fires_b.ids)),
    )
    line.update(_recovered(fires_a, fires_b, second))
    return [line]


async def w4_backlog(opts: Options, n: int) -> list[Result]:
    """One engine started on n overdue jobs: how long the drain took (first fire to last),
    CPU per job (from the engine's READY: its first claims come before), and when the
    priority-1000 jobs, due last, fired (ms after the first fire, and places in fire order)."""
    ids = range(1, n + 1)
    async with bench_store(opts, "w4") as url, opened(make_repo(opts, url)) as repo:
        start_ms = now_ms() - BACKLOG_AGE_MS - BACKLOG_SPAN_MS
        jobs = sms(ids, spread(start_ms, BACKLOG_SPAN_MS, n))
        await make_shards(repo, jobs)
        await insert_all(repo, jobs[: n - BACKLOG_HIGH], opts.batch_size, "W4 backlog load")
        high = encode_for(repo, jobs[n - BACKLOG_HIGH :], now_ms=now_ms())
        await repo.insert_rows([r._replace(priority=1000) for r in high], now_ms=now_ms())
        async with engine_running(opts, url, "w4-backlog", W4_SETTINGS) as engine:
            tail = Tail(engine.record)
            with (
                bar(n, "W4 backlog drain") as progress,
                cpu_use(engine.pid, server=opts.is_mysql) as cpu,
            ):
                deadline_s = time.monotonic() + 120 + n / 200
                await wait_fires(tail, n, deadline_s=deadline_s, progress=progress)
            done = await wait_done(repo, n, timeout_s=30)
    tail.poll()
    fires = tail.fires
    first_us = min(fires.fired_us, default=0)
    drain_s = (max(fires.fired_us, default=0) - first_us) / 1e6
    line = result("w4", opts, n, jobs_per_s=rate(n, drain_s), **cpu.per_job_us(n))
    line.update(accounting(fires, ids), not_done=n - done, backlog=n, drain_s=round(drain_s, 2))
    line.update(_high_fired(fires, range(n - BACKLOG_HIGH + 1, n + 1), first_us))
    return [line]


def _high_fired(fires: Fires, high: range, first_us: int) -> dict[str, object]:
    """When the high-priority jobs fired: the last of them, ms after the first fire of all,
    and its place in the fire order (0: first)."""
    wanted = set(high)
    places = [k for k, i in enumerate(fires.ids) if i in wanted]
    return {
        "high": len(high),
        "high_fired": len(places),
        "high_last_fired_ms": round((fires.fired_us[max(places)] - first_us) / 1000)
        if places
        else None,
        "high_last_place": max(places) if places else None,
    }


def _recovered(fires_a: Fires, fires_b: Fires, second: EngineProcess) -> dict[str, object]:
    """Lateness, from the restart, of the jobs due before it that the first engine missed."""
    fired_by_a = set(fires_a.ids)
    restart_ms = second.spawned_ms
    late = [
        fired_us / 1000 - restart_ms
        for key, (due_ms, fired_us) in first_fires(fires_b).items()
        if due_ms < second.ready_ms and key not in fired_by_a
    ]
    figures = lateness(late)
    return {
        **figures,
        "recovered": len(late),
        "lateness_from": "restart",
        "restart_to_ready_ms": second.ready_ms - restart_ms,
        "bar_max_ms": (FETCH_INTERVAL_S + 1) * 1000,
    }


async def _wait_all_done(repo: ShardingRepository[object, int], n: int, until_ms: int) -> None:
    with bar(n, "W4 after restart") as progress:
        done = 0
        while done < n and now_ms() < until_ms:
            await asyncio.sleep(0.2)
            now_done = await count_done(repo)
            progress.update(now_done - done)
            done = now_done


async def _sleep_until(at_ms: int) -> None:
    await asyncio.sleep(max(0.0, (at_ms - now_ms()) / 1000))
