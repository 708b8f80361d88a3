"""W6 and W7: several engine processes on one store.

- W6 cluster: W2's burst (n jobs due at once, stored while the engines run) drained by 1, 2 and
  3 engine processes: jobs/s from the first claim to the last ack, each node's share, lost,
  duplicates, and the CPU per job of mariadbd and of all the engines together. On a 2-core
  machine the database bounds the total: the bar is that 3 nodes drain at >= 0.9 x one node's
  rate, every node fires >= 20% of the jobs, nothing is lost and nothing fires twice.
- W7 failover: 3 nodes, a steady `rate` jobs/s, ``kill -9`` of one at 10 s. Lost (0),
  duplicates, and the lateness of the jobs the killed node held (its CLAIMED rows right after
  the kill), which the others take over once its heartbeat is `node_timeout_s` old: the bar is
  max <= node_timeout_s + 2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from benchmarks.common import Options, bar, now_ms, result, sms
from benchmarks.cpu import cpu_use
from benchmarks.loader import load, spread, stored_rows, wait_done
from benchmarks.records import Fires, Tail, read
from benchmarks.runner import EngineProcess, engine_running
from benchmarks.stats import Result, accounting, lateness, rate
from benchmarks.store import bench_store, make_repo, opened
from benchmarks.workloads import W2_SETTINGS
from repos.base import Status

W6_NODES = (1, 2, 3)
#: W2's engines, polling for new due rows every 0.1 s: all nodes see the burst within that.
W6_SETTINGS: dict[str, Any] = {**W2_SETTINGS, "near_poll_interval_s": 0.1}
#: W7's engines: a node is dead 3 s after its last heartbeat, so a run stays short.
W7_SETTINGS: dict[str, Any] = {
    "fetch_interval_s": 5,
    "lookahead_s": 10,
    "cluster": {"heartbeat_interval_s": 1, "node_timeout_s": 3},
}
W7_KILL_S = 10


@asynccontextmanager
async def nodes_running(
    opts: Options, url: str, name: str, count: int, settings: dict[str, Any], *, sync: bool = False
) -> AsyncIterator[list[EngineProcess]]:
    """`count` engine processes on one store, node ids ``{name}-1`` .. ``{name}-count``
    (`sync`: each records a fire before its ack, so a kill -9 loses no record of a DONE row)."""
    async with AsyncExitStack() as stack:
        engines = []
        for no in range(1, count + 1):
            node = {**settings, "node_id": f"{name}-{no}"}
            engines.append(
                await stack.enter_async_context(
                    engine_running(opts, url, f"{name}-{no}", node, sync=sync)
                )
            )
        yield engines


async def w6(opts: Options) -> list[Result]:
    n = opts.n or opts.pick(6_000, 20_000)
    return [await w6_at(opts, nodes, n) for nodes in W6_NODES]


async def w6_at(opts: Options, nodes: int, n: int) -> Result:
    ids = range(1, n + 1)
    async with (
        bench_store(opts, f"w6n{nodes}") as url,
        nodes_running(opts, url, f"w6n{nodes}", nodes, W6_SETTINGS) as engines,
        opened(make_repo(opts, url)) as repo,
    ):
        t0 = now_ms()
        await repo.ensure_shards(t0, t0 + 1)
        await repo.insert(sms(ids, [t0] * n), now_ms=t0)
        tails = [Tail(e.record) for e in engines]
        pids = [e.pid for e in engines]
        with (
            bar(n, f"W6 drain, {nodes} node(s)") as progress,
            cpu_use(pids, server=opts.is_mysql) as cpu,
        ):
            deadline = time.monotonic() + 60 + n / 500
            await _wait_all(tails, n, deadline, progress)
            done = await wait_done(repo, n, timeout_s=30)
        rows = await stored_rows(repo, t0, t0 + 1)
    fired = [read(e.record) for e in engines]
    first_claim = min((r.claimed_at_ms or 0 for r in rows), default=0)
    last_ack = max((r.fired_at_ms or 0 for r in rows), default=0)
    drain_s = (last_ack - first_claim) / 1000
    shares = [round(len(f) / n, 3) for f in fired]
    line = result("w6", opts, n, jobs_per_s=rate(n, drain_s) if done == n else None)
    line.update(accounting(_merged(fired), ids), not_done=n - done)
    line.update(nodes=nodes, node_shares=shares, min_node_share=min(shares), drain_s=drain_s)
    line.update(cpu.per_job_us(n))
    return line


async def _wait_all(tails: Sequence[Tail], n: int, deadline_s: float, progress: Any) -> None:
    """Until the nodes' records hold n fires between them, or the deadline."""
    total = 0
    while total < n and time.monotonic() < deadline_s:
        new = sum(t.poll() for t in tails)
        progress.update(new)
        total += new
        if total < n:
            await asyncio.sleep(0.05)


def _merged(fires: Sequence[Fires]) -> Fires:
    merged = Fires()
    for f in fires:
        merged = merged.merged(f)
    return merged


async def w7(opts: Options) -> list[Result]:
    per_s = opts.rate or 1000
    span_s = 20 if opts.quick else 30
    n = per_s * span_s
    ids = range(1, n + 1)
    timeout_s = W7_SETTINGS["cluster"]["node_timeout_s"]
    async with bench_store(opts, "w7") as url, opened(make_repo(opts, url)) as repo:
        t0 = now_ms() + int((4 + n / 10_000) * 1000)
        await load(repo, sms(ids, spread(t0, span_s * 1000, n)), opts.batch_size, "W7 load")
        async with nodes_running(opts, url, "w7", 3, W7_SETTINGS, sync=True) as engines:
            victim = engines[0]
            await _sleep_until(t0 + W7_KILL_S * 1000)
            victim.kill()
            await victim.stop()
            # What it held: its claims, which nobody takes over before its heartbeat times out.
            held = await _claimed_by(repo, "w7-1", t0, t0 + span_s * 1000)
            await wait_done(repo, n, timeout_s=span_s + timeout_s + 30)
        rows = await stored_rows(repo, t0, t0 + span_s * 1000)
    fired = [read(e.record) for e in engines]
    merged = _merged(fired)
    late = [
        fired_us / 1000 - due_ms
        for key, due_ms, fired_us in zip(
            merged.ids, merged.scheduled_ms, merged.fired_us, strict=True
        )
        if key in held
    ]
    line = result("w7", opts, n, rate=per_s, kill_at_s=W7_KILL_S, node_timeout_s=timeout_s)
    line.update(accounting(merged, ids))
    line.update(lateness(late))
    line.update(
        held_by_killed=len(held),
        not_done=sum(1 for r in rows if r.status is not Status.DONE),
        bar_max_ms=(timeout_s + 2) * 1000,
    )
    return [line]


async def _claimed_by(repo: Any, node_id: str, start_ms: int, end_ms: int) -> set[int]:
    """Ids of the rows CLAIMED by `node_id` now."""
    rows = await stored_rows(repo, start_ms, end_ms)
    return {int(r.key) for r in rows if r.status is Status.CLAIMED and r.claimed_by == node_id}


async def _sleep_until(at_ms: int) -> None:
    await asyncio.sleep(max(0.0, (at_ms - now_ms()) / 1000))
