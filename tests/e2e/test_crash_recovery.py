"""``kill -9`` in the middle of a run, then a restart (workload W4, small): nothing is lost, only
fires the dead engine never acknowledged repeat, and what fell due while it was down fires at
once when it is back. The engine is a real process (engine_process.py) on a real store.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from repos.base import Status, status_label

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import Engines, Store, WallClock

pytestmark = pytest.mark.timeout(60)

JOBS = 2_000
SPREAD_MS = 8_000  #: jobs due evenly over this span, starting FIRST_DUE_MS after seeding
FIRST_DUE_MS = 500
KILL_AT_MS = 4_000  #: after seeding
RESTART_AT_MS = 6_000
ALL_FIRED_TIMEOUT_S = 25


async def test_kill_9_and_restart_lose_nothing_and_repeat_only_unacked_fires(
    store: Store, engines: Engines, tmp_path: Path, wall: WallClock
) -> None:
    t0 = wall.now_ms()
    seeded = await store.seed(t0 + FIRST_DUE_MS + i * SPREAD_MS // JOBS for i in range(JOBS))
    fires_path = tmp_path / "fires.log"

    first = engines.start(store.config_path, fires_path)
    await first.wait_ready()
    await wall.sleep_until(t0 + KILL_AT_MS)
    first.kill9()
    kill_ms = wall.now_ms()
    assert await first.wait_exit() == -9
    # The dead engine's last word: what it recorded, and what it held claimed (not acked).
    before_kill = first.fires_by_id()
    start, end = t0, t0 + FIRST_DUE_MS + SPREAD_MS + 1
    claimed_at_kill = {r.key for r in await store.rows(start, end, Status.CLAIMED)}

    await wall.sleep_until(t0 + RESTART_AT_MS)
    second = engines.start(store.config_path, fires_path)
    ready_ms = await second.wait_ready()
    missing = await second.wait_fired(seeded, ALL_FIRED_TIMEOUT_S)
    assert second.alive(), second.stderr()
    assert await second.stop() == 0, second.stderr()

    fires = second.fires_by_id()
    after_restart = {i: fs[len(before_kill.get(i, [])) :] for i, fs in fires.items()}

    # 1. Nothing lost: every seeded id fired at least once.
    assert not missing and set(fires) == set(seeded), f"lost {sorted(missing)[:20]}"

    # 2. Within one run no id fires twice; across the crash only fires the dead engine
    #    recorded but never acked (its rows still CLAIMED at the kill) repeat, once.
    assert all(len(fs) == 1 for fs in before_kill.values())
    assert all(len(fs) <= 1 for fs in after_restart.values())
    repeated = {i for i, fs in fires.items() if len(fs) > 1}
    assert repeated <= set(before_kill), "an id fired twice without a crash in between"
    assert repeated <= claimed_at_kill, "a fire the dead engine had acked was repeated"
    sys.stderr.write(
        f"\n[{store.kind}] {len(repeated)} of {JOBS} ids fired twice across the kill -9 "
        f"({len(before_kill)} fired before it, {len(claimed_at_kill)} rows left CLAIMED)\n"
    )
    assert len(repeated) < 500  # bounded by the ack group-commit window, not by the backlog

    # 3. Every row ends DONE.
    rows = await store.rows(start, end)
    assert {r.key for r in rows} == set(seeded)
    assert {r.status for r in rows} == {Status.DONE}, sorted(
        (r.key, status_label(r.status)) for r in rows if r.status is not Status.DONE
    )[:20]

    # 4. Fire-once-now: jobs that fell due while no engine ran fired right after the restart;
    #    no job ever fired before its due time.
    recovered = {i for i, due in seeded.items() if kill_ms <= due < ready_ms} - set(before_kill)
    assert len(recovered) > JOBS // 10  # the scenario really had a downtime backlog
    deadline_ms = ready_ms + int((store.config.fetch_interval_s + 1) * 1000)
    late = {
        i: after_restart[i][0].fired_ms - ready_ms
        for i in recovered
        if after_restart[i][0].fired_ms > deadline_ms
    }
    assert not late, f"recovered jobs fired late (ms after READY): {sorted(late.items())[:10]}"
    early = [f for fs in fires.values() for f in fs if f.fired_ms < f.due_ms - 2]
    assert not early, early[:10]
    assert kill_ms < ready_ms


async def test_fire_repeated_after_kill_9_carries_the_same_idempotency_key(
    store: Store, engines: Engines, tmp_path: Path, wall: WallClock
) -> None:
    """JobContext.idempotency_key is ``entity:id:attempt``, documented (jobs.py, README
    "Exactly once in normal operation") as the handle a handler uses to spot the repeat a crash
    between its side effect and the ack causes. So the repeat must carry the attempt number of
    the fire it repeats. Handlers here record their fire, then hold for 5 s: every fire is done
    but unacked when the engine is killed, and every one repeats after the restart."""
    t0 = wall.now_ms()
    seeded = await store.seed(t0 + 1_500 + i * 10 for i in range(50))
    fires_path = tmp_path / "fires.log"
    first = engines.start(store.config_path, fires_path, hold_ms=5_000)
    await first.wait_ready()
    assert not await first.wait_fired(seeded, timeout_s=10), first.stderr()
    first.kill9()
    assert await first.wait_exit() == -9
    start, end = t0, t0 + 3_000
    assert {r.key for r in await store.rows(start, end, Status.CLAIMED)} == set(seeded)

    # At once: the killed process's heartbeat is fresh, but it ran on this host and its pid is
    # gone, so the restart declares it dead rather than waiting node_timeout_s (node.join).
    second = engines.start(store.config_path, fires_path)
    await second.wait_ready()
    await second.wait_fire_count(2 * len(seeded), timeout_s=10)
    assert await second.stop() == 0, second.stderr()

    fires = second.fires_by_id()
    assert {i: len(fs) for i, fs in fires.items()} == dict.fromkeys(seeded, 2)
    rows = await store.rows(start, end)
    assert {r.status for r in rows} == {Status.DONE}
    keys = {i: (fs[0].attempt, fs[1].attempt) for i, fs in fires.items()}
    changed = {i: pair for i, pair in keys.items() if pair[0] != pair[1]}
    assert not changed, (
        f"{len(changed)} of {len(seeded)} repeats carry another attempt, hence another "
        f"idempotency key, than the fire they repeat: (first, repeat) = "
        f"{sorted(changed.items())[:5]}"
    )
