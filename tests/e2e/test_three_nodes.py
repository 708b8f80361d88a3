"""Three engine processes on one MariaDB database: a node killed, restarted, stalled or started
beside the others loses no job, and fires one twice only where a crash left a fire unacked.

Every process writes its own fires file, so each test knows which process fired what; the
store's rows and nodes table say who acked what and how each epoch ended. The cluster's
timings are short (``cluster_store``: heartbeat every 0.2 s, dead after 1 s, a 2 s window, a
fetch round a second, a near poll every 0.1 s): jobs due over a few seconds flow through every
scenario.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pytest

from repos.base import Status, status_label
from repos.cluster import NodeState

if TYPE_CHECKING:
    from conftest import EngineProcess, Engines, Fire, Store, WallClock

pytestmark = [pytest.mark.timeout(60), pytest.mark.mysql]

FIRST_DUE_MS = 1_000  #: after seeding: every node has claimed its first window by then
ALL_FIRED_TIMEOUT_S = 15
SETTLE_S = 0.2

Fires = dict[int, list[tuple["EngineProcess", "Fire"]]]


async def start_nodes(
    engines: Engines, store: Store, node_ids: Iterable[str], *, hold_ms: int = 0
) -> list[EngineProcess]:
    """Start one process per node id at once, then wait until every one is READY."""
    started = [
        engines.start(store.config_path, node_id=node_id, hold_ms=hold_ms) for node_id in node_ids
    ]
    for engine in started:
        await engine.wait_ready()
    return started


async def seed_spread(store: Store, wall: WallClock, jobs: int, spread_ms: int) -> dict[int, int]:
    """`jobs` jobs due evenly over `spread_ms`, the first FIRST_DUE_MS from now."""
    t0 = wall.now_ms()
    return await store.seed(t0 + FIRST_DUE_MS + i * spread_ms // jobs for i in range(jobs))


async def left_claimed(store: Store, seeded: dict[int, int], epoch: int) -> set[int]:
    """The seeded jobs a process just killed or frozen left CLAIMED under its `epoch`: read
    once a statement it sent just before the signal has completed (the server finishes an
    ack whatever became of its client), well before anyone may take its claims over."""
    await asyncio.sleep(SETTLE_S)
    return await claimed_by(store, seeded, epoch)


async def claimed_by(store: Store, seeded: dict[int, int], epoch: int) -> set[int]:
    """The seeded jobs the store has CLAIMED under `epoch` now."""
    start, end = window(seeded)
    rows = await store.rows(start, end, Status.CLAIMED)
    return {int(r.key) for r in rows if r.claim_epoch == epoch}


async def wait_all_fired(store: Store, engines: Engines, seeded: dict[int, int]) -> None:
    """Wait until every seeded job fired somewhere; else fail, saying where the rows of those
    that did not are: (status, claim epoch) -> how many."""
    missing = await engines.wait_fired(seeded, ALL_FIRED_TIMEOUT_S)
    if missing:
        rows = [r for r in await store.rows(*window(seeded)) if r.key in missing]
        where = Counter((status_label(r.status), r.claim_epoch) for r in rows)
        epochs = {e.epoch: e.name for e in engines.started}
        pytest.fail(
            f"{len(missing)} of {len(seeded)} never fired, e.g. {sorted(missing)[:10]}; their"
            f" rows (status, epoch): {dict(where)}; epochs {epochs}"
        )


async def busiest(store: Store, seeded: dict[int, int], among: Sequence[EngineProcess]) -> int:
    """The index in `among` of the process holding the most claims now. Which node claims
    what follows the phases of their fetch rounds, so any one node may hold little at a given
    moment: the scenarios strike the one that holds most."""
    start, end = window(seeded)
    held = Counter(r.claim_epoch for r in await store.rows(start, end, Status.CLAIMED))
    return max(range(len(among)), key=lambda i: held[among[i].epoch])


def window(seeded: dict[int, int]) -> tuple[int, int]:
    """[start, end) of the seeded jobs' due times: where store.rows finds them."""
    return min(seeded.values()), max(seeded.values()) + 1


async def stop_all(engines: Sequence[EngineProcess]) -> None:
    for engine in engines:
        if engine.alive():
            assert await engine.stop() == 0, engine.stderr()


def repeated(fires: Fires) -> dict[int, list[str]]:
    """The ids fired more than once, each with the processes that fired it, in firing order."""
    return {
        i: [e.name for e, _ in sorted(fs, key=lambda ef: ef[1].fired_ms)]
        for i, fs in fires.items()
        if len(fs) > 1
    }


async def assert_every_job_done_once_acked(
    store: Store, engines: Engines, seeded: dict[int, int]
) -> Fires:
    """The accounting every scenario ends with; returns the fires by id.

    Every seeded job fired (none lost), on its first attempt (a takeover or a hand-back gives
    the next claim the same attempt number), and no process fired one twice. Every row is
    DONE with one attempt and acked under the epoch of a process that fired it: nothing is
    left CLAIMED, and no write of a process that did not fire a job reached its row."""
    fires = engines.fires_by_id()
    lost = set(seeded) - set(fires)
    assert not lost, f"lost {len(lost)} of {len(seeded)}: {sorted(lost)[:20]}"
    assert set(fires) == set(seeded)
    for engine in engines.started:
        twice = [i for i, n in Counter(f.job_id for f in engine.fires()).items() if n > 1]
        assert not twice, f"{engine.name} fired {twice[:10]} twice"
    retried = [(i, e.name, f.attempt) for i, fs in fires.items() for e, f in fs if f.attempt != 1]
    assert not retried, retried[:10]
    rows = await store.rows(*window(seeded))
    assert len(rows) == len(seeded) and {r.key for r in rows} == set(seeded)
    not_done = [
        (r.key, status_label(r.status), r.claim_epoch) for r in rows if r.status is not Status.DONE
    ]
    assert not not_done, f"{len(not_done)} rows not DONE: {not_done[:20]}"
    assert {r.attempts for r in rows} == {1}
    fired_by = {i: {e.epoch for e, _ in fs} for i, fs in fires.items()}
    foreign = [(r.key, r.claim_epoch) for r in rows if r.claim_epoch not in fired_by[int(r.key)]]
    assert not foreign, f"rows acked under an epoch that never fired them: {foreign[:10]}"
    return fires


def report(test: str, **figures: object) -> None:
    """One line on stderr (pytest -s shows it): what the scenario measured."""
    sys.stderr.write(f"\n[{test}] " + ", ".join(f"{k}={v}" for k, v in figures.items()) + "\n")


# -- 1. kill -9 -----------------------------------------------------------------------------


async def test_kill_9_of_one_of_three_loses_nothing_and_repeats_only_its_unacked_fires(
    cluster_store: Store, engines: Engines, wall: WallClock
) -> None:
    """Handlers hold on for a second after recording their fire: the killed node has fires
    in flight (recorded, never acked), and those, only those, fire again elsewhere."""
    store = cluster_store
    timeout_ms = int(store.config.cluster.node_timeout_s * 1000)
    nodes = await start_nodes(engines, store, ["n1", "n2", "n3"], hold_ms=1_000)
    seeded = await seed_spread(store, wall, jobs=1_200, spread_ms=5_000)

    await wall.sleep_until(wall.now_ms() + FIRST_DUE_MS + 2_000)
    victim = nodes.pop(await busiest(store, seeded, nodes))
    survivors = nodes
    victim.kill9()
    kill_ms = wall.now_ms()
    assert await victim.wait_exit() == -9
    held_at_kill = await left_claimed(store, seeded, victim.epoch)
    fired_by_victim = {f.job_id for f in victim.fires()}
    in_flight = fired_by_victim & held_at_kill

    await wait_all_fired(store, engines, seeded)
    await stop_all(survivors)
    fires = await assert_every_job_done_once_acked(store, engines, seeded)

    assert held_at_kill, "the killed node held no claim: the scenario did not happen"
    assert in_flight, "the killed node had no fire in flight: the scenario did not happen"
    # Every job it held CLAIMED fires on a survivor, within node_timeout_s + 2 s of the kill.
    deadline_ms = kill_ms + timeout_ms + 2_000
    taken_over = {i: [f for e, f in fires[i] if e in survivors] for i in held_at_kill}
    assert all(len(fs) == 1 for fs in taken_over.values()), "a held job fired on no survivor"
    late = {i: fs[0].fired_ms - kill_ms for i, fs in taken_over.items()}
    late = {i: ms for i, ms in late.items() if kill_ms + ms > deadline_ms}
    assert not late, f"fired later than {deadline_ms - kill_ms} ms after the kill: {late}"
    # Duplicates: exactly the fires in flight in the killed process, first there, then once
    # on a survivor. A fire it had acked never repeats.
    twice = repeated(fires)
    assert set(twice) == in_flight, sorted(set(twice) ^ in_flight)[:20]
    assert all(names[0] == victim.name and len(names) == 2 for names in twice.values())
    nodes_table = await store.nodes()
    assert nodes_table[victim.epoch].state == NodeState.DEAD
    assert {nodes_table[e.epoch].state for e in survivors} == {NodeState.LEFT}
    report(
        "kill -9",
        held_at_kill=len(held_at_kill),
        in_flight=len(in_flight),
        duplicates=len(twice),
        # Of the jobs it held and had not fired yet (a fire in flight was on time once).
        max_lateness_ms=max(
            (fs[0].fired_ms - fs[0].due_ms for i, fs in taken_over.items() if i not in in_flight),
            default=0,
        ),
    )


# -- 2. graceful restart --------------------------------------------------------------------


async def test_graceful_restart_of_one_node_loses_nothing_and_repeats_nothing(
    cluster_store: Store, engines: Engines, wall: WallClock
) -> None:
    """SIGTERM one of three while jobs flow (its handlers hold on, so it drains fires in
    flight), then start it again under the same node id: a new epoch of the same node."""
    store = cluster_store
    nodes = await start_nodes(engines, store, ["n1", "n2", "n3"], hold_ms=300)
    seeded = await seed_spread(store, wall, jobs=1_200, spread_ms=5_000)

    await wall.sleep_until(wall.now_ms() + FIRST_DUE_MS + 1_500)
    old = nodes.pop(await busiest(store, seeded, nodes))
    held_at_stop = await claimed_by(store, seeded, old.epoch)
    assert await old.stop() == 0, old.stderr()
    [new] = await start_nodes(engines, store, [old.node_id], hold_ms=300)

    await wait_all_fired(store, engines, seeded)
    await stop_all([*nodes, new])
    fires = await assert_every_job_done_once_acked(store, engines, seeded)

    assert held_at_stop, "the stopped node held no claim: the scenario did not happen"
    twice = repeated(fires)
    assert not twice, f"{len(twice)} fired twice: {sorted(twice.items())[:10]}"
    assert new.node_id == old.node_id and new.epoch > old.epoch
    nodes_table = await store.nodes()
    assert {nodes_table[e.epoch].state for e in engines.started} == {NodeState.LEFT}
    report(
        "graceful restart",
        held_at_stop=len(held_at_stop),
        fired_by_old=len(old.fires()),
        fired_by_new=len(new.fires()),
        max_lateness_ms=max(f.fired_ms - f.due_ms for fs in fires.values() for _, f in fs),
    )


# -- 3. SIGSTOP past the timeout, then SIGCONT ------------------------------------------------


async def test_a_node_stalled_past_the_timeout_fires_nothing_the_others_took_over(
    cluster_store: Store, engines: Engines, wall: WallClock
) -> None:
    """SIGSTOP one of three until the others declared it dead and took its claims over, then
    SIGCONT it. Resumed, it learns at its first heartbeat that it was declared dead, fires
    nothing more and stops (engine.run() raises NodeDeclaredDead; this app lets it end the
    process), handing back what it claimed meanwhile: the survivors fire every job."""
    store = cluster_store
    nodes = await start_nodes(engines, store, ["n1", "n2", "n3"], hold_ms=300)
    seeded = await seed_spread(store, wall, jobs=1_200, spread_ms=5_000)

    # Early enough that jobs stay due for seconds after the resume.
    await wall.sleep_until(wall.now_ms() + FIRST_DUE_MS + 500)
    stalled = nodes.pop(await busiest(store, seeded, nodes))
    survivors = nodes
    stalled.sigstop()
    held_at_stop = await left_claimed(store, seeded, stalled.epoch)
    await wait_state(store, stalled.epoch, NodeState.DEAD, timeout_s=5)
    await wall.sleep_until(wall.now_ms() + 500)  # the takeover, then a fetch, ran meanwhile
    fired_before_resume = {f.job_id for f in stalled.fires()}
    stalled.sigcont()

    assert await stalled.wait_exit() == 1, stalled.stderr()
    assert f"epoch {stalled.epoch} was declared dead by another node" in stalled.stderr()
    await wait_all_fired(store, engines, seeded)
    await stop_all(survivors)
    fires = await assert_every_job_done_once_acked(store, engines, seeded)

    assert held_at_stop, "the stalled node held no claim: the scenario did not happen"
    fired_after_resume = [f for f in stalled.fires() if f.job_id not in fired_before_resume]
    assert not fired_after_resume, f"fired after its resume: {fired_after_resume[:10]}"
    # What it held and had not fired, the survivors fired. What it had fired and not acked
    # either fired again there (taken over), or its ack, sent as it froze, landed at the resume.
    by_survivors = {i for i, fs in fires.items() if any(e in survivors for e, _ in fs)}
    assert held_at_stop - fired_before_resume <= by_survivors
    # Duplicates: only fires recorded before the stall and not acked (still CLAIMED then).
    twice = repeated(fires)
    assert set(twice) <= fired_before_resume & held_at_stop, sorted(twice.items())[:10]
    assert (await store.nodes())[stalled.epoch].state == NodeState.DEAD
    report(
        "SIGSTOP",
        held_at_stop=len(held_at_stop),
        duplicates=len(twice),
        fired_by_stalled=len(fired_before_resume),
    )


async def wait_state(store: Store, epoch: int, state: NodeState, *, timeout_s: float) -> None:
    """Wait until the nodes table shows `epoch` in `state`; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while (node := (await store.nodes())[epoch]).state != state:
        if time.monotonic() > deadline:
            pytest.fail(f"epoch {epoch} still {node.state!r} after {timeout_s} s, not {state!r}")
        await asyncio.sleep(0.05)


# -- 4. a node started beside a live one -------------------------------------------------------


async def test_a_node_started_beside_a_live_one_leaves_its_claims_alone(
    cluster_store: Store, engines: Engines, wall: WallClock
) -> None:
    """b starts while a holds a window of claims: b's start hands back none of them (they
    stay CLAIMED or DONE under a's epoch), and nothing fires twice."""
    store = cluster_store
    [a] = await start_nodes(engines, store, ["a"])
    seeded = await seed_spread(store, wall, jobs=800, spread_ms=4_000)
    await wall.sleep_until(wall.now_ms() + FIRST_DUE_MS // 2)
    held_by_a = await claimed_by(store, seeded, a.epoch)

    [b] = await start_nodes(engines, store, ["b"])
    start, end = window(seeded)
    after_start = {
        r.key: (r.claim_epoch, r.claimed_at_ms)
        for r in await store.rows(start, end)
        if r.key in held_by_a
    }

    await wait_all_fired(store, engines, seeded)
    await stop_all([a, b])
    fires = await assert_every_job_done_once_acked(store, engines, seeded)

    assert len(held_by_a) >= 100, "a held few claims: the scenario did not happen"
    moved = {i: v for i, v in after_start.items() if v[0] != a.epoch}
    assert not moved, f"b's start moved a's claims: {sorted(moved.items())[:10]}"
    assert not {f.job_id for f in b.fires()} & held_by_a
    assert not repeated(fires)
    assert b.fires(), "b fired nothing: it did not share the work"
    report("start beside", held_by_a=len(held_by_a), fired_by_b=len(b.fires()))


# -- 5. AUTO node ids through restarts --------------------------------------------------------


async def test_auto_node_ids_through_restarts_and_kills_leave_nothing_claimed(
    cluster_store: Store, engines: Engines, wall: WallClock
) -> None:
    """Three AUTO nodes; one killed, one stopped, another killed, each replaced by a new
    process (a new generated id): every job fires, nothing stays CLAIMED, and only fires the
    killed processes left unacked repeat."""
    store = cluster_store
    running = await start_nodes(engines, store, ["AUTO"] * 3, hold_ms=300)
    seeded = await seed_spread(store, wall, jobs=1_200, spread_ms=5_000)
    t0 = wall.now_ms()
    in_flight: set[int] = set()
    killed: set[str] = set()
    for at_ms, kill in [(1_500, True), (2_500, False), (3_500, True)]:
        await wall.sleep_until(t0 + at_ms)
        engine = running.pop(await busiest(store, seeded, running))
        if kill:
            killed.add(engine.name)
            engine.kill9()
            assert await engine.wait_exit() == -9
            held = await left_claimed(store, seeded, engine.epoch)
            in_flight |= held & {f.job_id for f in engine.fires()}
        else:
            assert await engine.stop() == 0, engine.stderr()
        running += await start_nodes(engines, store, ["AUTO"], hold_ms=300)

    await wait_all_fired(store, engines, seeded)
    await stop_all(running)
    fires = await assert_every_job_done_once_acked(store, engines, seeded)

    ids = [e.node_id for e in engines.started]
    assert len(set(ids)) == 6 and "AUTO" not in ids, ids
    twice = repeated(fires)
    unexplained = {
        i: [(e.name, e.epoch, f.fired_ms - seeded[i]) for e, f in fires[i]]
        for i in set(twice) - in_flight
    }
    assert not unexplained, f"fired twice, not in flight in a killed process: {unexplained}"
    states = {e.name: (await store.nodes())[e.epoch].state for e in engines.started}
    assert states == {n: NodeState.DEAD if n in killed else NodeState.LEFT for n in states}
    report("AUTO ids", duplicates=len(twice), in_flight=len(in_flight))
