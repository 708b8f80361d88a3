"""W9 store failover: one engine on the local Galera cluster (scripts/galera.sh) through the
multi-host URL, a steady `rate` jobs/s, ``kill -9`` of the writer node (n1) at 10 s.

Reported: lost (0), duplicates, ``gap_s`` (from the kill to the next job fired), ``resumed_s``
(from the kill to the first claim written through the next node: the failover itself, which
the wheel's lookahead hides from the fires), and the lateness p99/max of the jobs due from the
kill until a second after that first claim. The killed node is restarted (it rejoins by IST)
before the next run. The seeding and the checks go through n2 alone.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from benchmarks.common import ROOT, Options, log, now_ms, result, sms
from benchmarks.loader import load, spread, stored_rows, wait_done
from benchmarks.records import read
from benchmarks.runner import engine_running
from benchmarks.stats import Result, accounting, lateness
from benchmarks.store import POLICY, database_name
from repos.examples import SMS
from repos.registry import create_store, make_repository

NODES = ("127.0.0.1:3311", "127.0.0.1:3312", "127.0.0.1:3313")
SCRIPT = ROOT / "scripts" / "galera.sh"
W9_KILL_S = 10
#: A short window, so that claims (through the database) stay on the path of the fires; a node
#: timeout longer than a failover (Galera evicts a dead node after evs.suspect_timeout).
W9_SETTINGS: dict[str, Any] = {
    "fetch_interval_s": 1,
    "lookahead_s": 8,
    "near_poll_interval_s": 0.1,
    "cluster": {"heartbeat_interval_s": 1, "node_timeout_s": 8},
}


def galera(*args: str) -> None:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/galera.sh {' '.join(args)} failed:\n{done.stderr}")


async def w9(opts: Options) -> list[Result]:
    galera("up")
    per_s = opts.rate or 1000
    span_s = 20 if opts.quick else 30
    n = opts.n or per_s * span_s
    ids = range(1, n + 1)
    database = database_name("w9")
    url = f"mysql://root@{','.join(NODES)}/{database}"
    await create_store(url)
    repo = make_repository(f"mysql://root@{NODES[1]}/{database}", SMS, POLICY)
    await repo.open()
    try:
        t0 = now_ms() + int((4 + n / 10_000) * 1000)
        await load(repo, sms(ids, spread(t0, span_s * 1000, n)), opts.batch_size, "W9 load")
        async with engine_running(opts, url, "w9", W9_SETTINGS) as engine:
            await asyncio.sleep(max(0.0, (t0 + W9_KILL_S * 1000 - now_ms()) / 1000))
            killed_ms = now_ms()
            galera("kill", "1")
            await wait_done(repo, n, timeout_s=span_s + 60)
        rows = await stored_rows(repo, t0, t0 + span_s * 1000)
    finally:
        await repo.close()
        galera("start", "1")
        await _drop(database)
    fires = read(engine.record)
    resumed_ms = min(
        (r.claimed_at_ms or 0 for r in rows if (r.claimed_at_ms or 0) > killed_ms),
        default=killed_ms,
    )
    after = [f / 1000 for f in fires.fired_us if f / 1000 > killed_ms]
    late = [
        f / 1000 - s
        for s, f in zip(fires.scheduled_ms, fires.fired_us, strict=True)
        if killed_ms <= s <= resumed_ms + 1000
    ]
    line = result("w9", opts, n, rate=per_s, kill_at_s=W9_KILL_S)
    line.update(accounting(fires, ids))
    line.update(
        gap_s=round((min(after, default=killed_ms) - killed_ms) / 1000, 3),
        resumed_s=round((resumed_ms - killed_ms) / 1000, 3),
        due_in_gap=len(late),
    )
    line.update(lateness(late))
    return [line]


async def _drop(database: str) -> None:
    import asyncmy

    conn = await asyncmy.connect(host="127.0.0.1", port=3312, user="root")
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        conn.close()
    log(f"dropped {database}")
