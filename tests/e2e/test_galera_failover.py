"""Engines on the local Galera cluster (scripts/galera.sh) through a multi-host URL.

- single-writer: both engines write through n1; n1 is killed (-9) mid-run; they move to the
  next node and carry on: nothing lost, nothing fired twice; n1 restarts and rejoins.
- multi-writer on purpose (declared: store.galera_multi_writer): each engine's URL names
  another node first, so two nodes take writes for the same rows; the certification conflicts
  (1213 at COMMIT) are run again and reported, and still nothing is lost or fired twice.
  Undeclared, the second engine is refused at start.

The gap a failover leaves is measured by benchmarks (W9), not asserted here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from repos.base import Status
from repos.examples import SMS
from repos.registry import make_repository

if TYPE_CHECKING:
    from conftest import EngineProcess, Engines, Galera, StoreFor, WallClock

pytestmark = [pytest.mark.galera, pytest.mark.timeout(180)]

ALL_FIRED_TIMEOUT_S = 30
#: Longer than a failover (Galera evicts the dead node after evs.suspect_timeout, 3 s here,
#: then the engine moves): shorter, and the first engine back declares the other dead.
TIMINGS = {"node_timeout_s": 8.0, "heartbeat_interval_s": 0.5, "lookahead_s": 8.0}


def url_from(galera: Galera, database: str, order: tuple[int, ...]) -> str:
    hosts = ",".join(f"{galera.host}:{galera.ports[n - 1]}" for n in order)
    return f"mysql://{galera.user}@{hosts}/{database}"


def duplicates(engines: Engines) -> dict[int, int]:
    return {i: len(f) for i, f in engines.fires_by_id().items() if len(f) > 1}


def writers(galera: Galera, database: str) -> set[str]:
    """The Galera nodes the live engines' nodes rows say they write through."""
    rows = galera.sql(2, f"SELECT writer FROM `{database}`.nodes WHERE state IN (0, 1)")
    return {str(writer) for (writer,) in rows}


async def writers_become(galera: Galera, database: str, expected: set[str]) -> bool:
    """Whether writers() turns `expected` within a few heartbeats."""
    for _ in range(50):
        if writers(galera, database) == expected:
            return True
        await asyncio.sleep(0.1)
    return False


def conflicts_retried(engine: EngineProcess) -> int:
    """Statements the engine ran again after a conflict, by its log (the same call counts
    infinite_scheduler_store_conflicts_total)."""
    return sum(
        "retrying (attempt" in line and "1213" in line for line in engine.stderr().splitlines()
    )


async def test_killing_the_writer_node_moves_the_engines_to_the_next_one(
    galera: Galera, galera_database: str, store_for: StoreFor, engines: Engines, wall: WallClock
) -> None:
    store = await store_for(
        url_from(galera, galera_database, (1, 2, 3)), galera.node_url(2, galera_database), **TIMINGS
    )
    t0 = wall.now_ms()
    seeded = await store.seed(t0 + 1_500 + i * 4 for i in range(2_000))  # 250 jobs/s for 8 s
    started = [engines.start(store.config_path, node_id=n) for n in ("a", "b")]
    for engine in started:
        await engine.wait_ready()
    try:
        await wall.sleep_until(t0 + 4_000)
        galera.kill(1)
        missing = await engines.wait_fired(seeded, ALL_FIRED_TIMEOUT_S)
        assert not missing, f"{len(missing)} never fired:\n{started[0].stderr()[-3000:]}"
        assert all(e.alive() for e in started), started[0].stderr()[-3000:]
        assert duplicates(engines) == {}
        for engine in started:
            assert "store writer moves from 127.0.0.1:3311 to 127.0.0.1:3312" in engine.stderr()
        # Their nodes rows name the Galera node they write through now (the heartbeat's).
        assert await writers_become(galera, galera_database, {"n2"}), started[0].stderr()[-3000:]
        rows = await store.rows(min(seeded.values()), max(seeded.values()) + 1)
        assert {r.status for r in rows} == {Status.DONE} and len(rows) == len(seeded)
        for engine in started:
            assert await engine.stop() == 0, engine.stderr()[-3000:]
    finally:
        galera.start(1)
    # Rejoined (IST) with what it missed: the rows acked while it was down read DONE on it.
    rejoined = make_repository(galera.node_url(1, galera_database), SMS, store.config.shard_policy)
    await rejoined.open()
    try:
        done = await rejoined.page(
            start_ms=min(seeded.values()), end_ms=max(seeded.values()) + 1, limit=5_000
        )
    finally:
        await rejoined.close()
    assert len(done) == len(seeded) and {r.status for r in done} == {Status.DONE}


async def test_an_engine_that_would_write_through_another_node_is_refused_at_start(
    galera: Galera, galera_database: str, store_for: StoreFor, engines: Engines
) -> None:
    direct = galera.node_url(1, galera_database)
    first = await store_for(url_from(galera, galera_database, (1, 2, 3)), direct, **TIMINGS)
    second = await store_for(url_from(galera, galera_database, (2, 3, 1)), direct, **TIMINGS)
    a = engines.start(first.config_path, node_id="a")
    await a.wait_ready()
    b = engines.start(second.config_path, node_id="b")
    assert await b.wait_exit() == 1
    assert (
        "is refused as a store: this engine would write through Galera node n2 while live engine"
        " nodes write through another: a (epoch "
    ) in b.stderr()
    assert writers(galera, galera_database) == {"n1"}
    assert a.alive()
    assert await a.stop() == 0, a.stderr()[-3000:]


async def test_two_writers_on_purpose_retry_their_conflicts_and_lose_nothing(
    galera: Galera, galera_database: str, store_for: StoreFor, engines: Engines, wall: WallClock
) -> None:
    # Both near-poll every 50 ms and claim 100 rows at a time: each starts claiming the burst
    # while the other still is, and both take the oldest rows their node shows, so their claims
    # of the same rows overlap many times over (with claims of 1,000 the burst was a dozen
    # claims, and a fast machine could run them all without one overlap).
    stores = [
        await store_for(
            url_from(galera, galera_database, order),
            galera.node_url(1, galera_database),
            **TIMINGS,
            near_poll_interval_s=0.05,
            batch_size=100,
            galera_multi_writer=True,
        )
        for order in ((2, 3, 1), (3, 2, 1))
    ]
    started = [
        engines.start(store.config_path, node_id=n) for store, n in zip(stores, "ab", strict=True)
    ]
    for engine in started:
        await engine.wait_ready()
    # Stored once both are polling: each claims the same rows through its own node.
    t0 = wall.now_ms()
    seeded = await stores[0].seed(t0 + 1_000 + i // 6 for i in range(12_000))  # over 2 s
    missing = await engines.wait_fired(seeded, ALL_FIRED_TIMEOUT_S)
    assert not missing, f"{len(missing)} never fired"
    assert duplicates(engines) == {}
    assert sum(conflicts_retried(e) for e in started) > 0, "no certification conflict was met"
    rows = await stores[0].rows(min(seeded.values()), max(seeded.values()) + 1)
    assert {r.status for r in rows} == {Status.DONE}
    for engine in started:
        assert await engine.stop() == 0, engine.stderr()[-3000:]
