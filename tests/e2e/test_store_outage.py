"""The database going away and coming back during a run: the engine rides it out, loses
nothing and fires nothing twice. MariaDB itself keeps running (other tests share it); the
engine reaches it through a proxy in this process, and ``cut()`` severs every connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from repos.base import Status, status_label
from repos.registry import make_membership

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import EngineProcess, Engines, MariaDB, Store, StoreProxy, WallClock

pytestmark = [pytest.mark.timeout(60), pytest.mark.mysql]

ALL_FIRED_TIMEOUT_S = 25


def warnings_naming(stderr: str, address: str) -> list[dict[str, Any]]:
    """The engine's JSON log lines at WARNING or above whose message names `address`."""
    found = []
    for line in stderr.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("level") in ("WARNING", "ERROR", "CRITICAL") and address in entry["msg"]:
            found.append(entry)
    return found


@pytest.mark.parametrize("store_proxy", ["reset", "refuse"], indirect=True)
async def test_store_outage_mid_run_loses_nothing_and_fires_nothing_twice(
    proxied_store: tuple[Store, StoreProxy], engines: Engines, tmp_path: Path, wall: WallClock
) -> None:
    store, proxy = proxied_store
    t0 = wall.now_ms()
    seeded = await store.seed(t0 + 500 + i * 6 for i in range(1_000))  # due over 6 s
    engine = engines.start(store.config_path, tmp_path / "fires.log")
    await engine.wait_ready()

    await wall.sleep_until(t0 + 2_000)
    await proxy.cut()
    cut_ms = wall.now_ms()
    alive_during_outage = await watch_alive(engine, wall, until_ms=t0 + 5_000)
    await proxy.restore()
    restored_ms = wall.now_ms()

    missing = await engine.wait_fired(seeded, ALL_FIRED_TIMEOUT_S)
    assert alive_during_outage and engine.alive(), f"engine died:\n{engine.stderr()}"
    assert await engine.stop() == 0, engine.stderr()

    fires = engine.fires_by_id()
    assert not missing, f"lost {len(missing)}: {sorted(missing)[:20]}"
    repeated = {i: fs for i, fs in fires.items() if len(fs) > 1}
    assert not repeated, f"fired twice without any crash: {sorted(repeated.items())[:5]}"
    rows = await store.rows(t0, t0 + 10_000)
    assert {r.key for r in rows} == set(seeded)
    assert {r.status for r in rows} == {Status.DONE}, sorted(
        (r.key, status_label(r.status), r.claimed_by) for r in rows if r.status is not Status.DONE
    )[:20]

    # The outage was real for the engine: it tried to reconnect and was turned away, and it
    # said so, naming the address it could not reach.
    assert proxy.refused > 0 or proxy.mode == "refuse"
    assert warnings_naming(engine.stderr(), proxy.address), engine.stderr()[-3000:]
    # Jobs due during the outage that the wheel did not hold fired once the store was back.
    fired_during = [fs[0] for fs in fires.values() if cut_ms <= fs[0].fired_ms < restored_ms]
    assert fired_during, "the wheel should keep firing what it holds while the store is away"


async def watch_alive(engine: EngineProcess, wall: WallClock, *, until_ms: int) -> bool:
    """Poll the engine process until `until_ms`; False as soon as it has exited."""
    while wall.now_ms() < until_ms:
        if not engine.alive():
            return False
        await asyncio.sleep(0.1)
    return engine.alive()


async def test_claim_whose_commit_reply_is_lost_still_fires(
    proxied_store: tuple[Store, StoreProxy], engines: Engines, tmp_path: Path, wall: WallClock
) -> None:
    """An outage can cut the connection after MariaDB committed a claim but before the engine
    read the reply: the claim failed for the engine, yet its rows are CLAIMED by this node.
    Those rows must still fire (invariant 1), not wait for the engine's next restart."""
    store, proxy = proxied_store
    t0 = wall.now_ms()
    seeded = await store.seed(t0 + 4_000 + i * 5 for i in range(400))  # due in [4 s, 6 s)
    engine = engines.start(store.config_path, tmp_path / "fires.log")
    await engine.wait_ready()
    proxy.trap_next_claim_commit()  # the first claim that takes rows, at about 3 s

    missing = await engine.wait_fired(seeded, timeout_s=15)
    assert proxy.trap_fired, "no claim was trapped: the scenario did not happen"
    assert engine.alive(), engine.stderr()
    stuck = await store.rows(t0, t0 + 10_000, Status.CLAIMED)
    assert await engine.stop() == 0, engine.stderr()
    assert not missing, (
        f"{len(missing)} of {len(seeded)} jobs never fired; {len(stuck)} rows stayed CLAIMED "
        f"by {sorted({r.claimed_by or '' for r in stuck})} after their claim's reply was lost, "
        f"e.g. ids {sorted(missing)[:10]}"
    )
    assert len(engine.fires()) == len(seeded)
    assert {r.status for r in await store.rows(t0, t0 + 10_000)} == {Status.DONE}


#: Long enough for a backoff doubling from 0.1 s to reach a 5 s cap (0.1 + 0.2 + ... + 3.2).
LONG_OUTAGE_MS = 9_000
#: How soon after the store is back the jobs due meanwhile must have fired and been acked.
BACK_WITHIN_MS = 1_500


async def test_after_a_long_outage_work_moves_within_a_second_of_the_store_coming_back(
    proxied_store: tuple[Store, StoreProxy], engines: Engines, tmp_path: Path, wall: WallClock
) -> None:
    """Every loop that waits on the store (fetch, payload reads, acks) retries it often enough
    that jobs due during a long outage fire, and their outcomes land, right after it ends, not
    a growing backoff later."""
    store, proxy = proxied_store
    # Claims (every 1 s) take jobs due 2-3 s ahead, without their payload (read 0.5 s before
    # they are due): the last claim before the cut is still unread when it comes, so its jobs
    # come due waiting for their read, besides the jobs not claimed yet and the acks.
    text = store.config_path.read_text()
    assert "lookahead_s = 2\n" in text
    lookahead = "lookahead_s = 3\npayload_ahead_s = 0.5\n"
    store.config_path.write_text(text.replace("lookahead_s = 2\n", lookahead))
    t0 = wall.now_ms()
    cut_at, restore_at = t0 + 3_000, t0 + 3_000 + LONG_OUTAGE_MS
    seeded = await store.seed(range(cut_at - 1_000, restore_at + 500, 10))
    engine = engines.start(store.config_path, tmp_path / "fires.log")
    await engine.wait_ready()

    await wall.sleep_until(cut_at)
    await proxy.cut()
    await wall.sleep_until(restore_at)
    await proxy.restore()
    restored_ms = wall.now_ms()
    due_meanwhile = {i for i, due in seeded.items() if due < restored_ms}
    span = (t0, restore_at + 1_000)
    acked_ms = await all_done(
        store, due_meanwhile, wall, span=span, deadline_ms=restored_ms + 6_000
    )

    missing = await engine.wait_fired(seeded, timeout_s=5)
    assert engine.alive(), engine.stderr()[-3000:]
    assert await engine.stop() == 0, engine.stderr()[-3000:]
    assert not missing, f"lost {len(missing)}: {sorted(missing)[:20]}"
    # The scenario happened: each of the three loops met the outage and waited it out.
    said = {entry["msg"].split(",")[0] for entry in warnings_naming(engine.stderr(), proxy.address)}
    assert {"fetch failed", "payload read failed", "ack flush failed"} <= said, said
    fired = {i: fs[0].fired_ms for i, fs in engine.fires_by_id().items()}
    fired_late_ms = max(fired[i] for i in due_meanwhile) - restored_ms
    acked_late_ms = acked_ms - restored_ms
    assert max(fired_late_ms, acked_late_ms) <= BACK_WITHIN_MS, (
        f"after the store came back, jobs due meanwhile fired up to {fired_late_ms} ms and"
        f" their acks landed {acked_late_ms} ms later"
    )


async def all_done(
    store: Store, ids: set[int], wall: WallClock, *, span: tuple[int, int], deadline_ms: int
) -> int:
    """Poll the store (directly, not through the proxy) until every row of `ids` (sharding time
    in `span`) is DONE; return when that was seen, or the deadline."""
    while True:
        now = wall.now_ms()
        done = {r.key for r in await store.rows(*span, Status.DONE)}
        if ids <= done or now >= deadline_ms:
            return now
        await asyncio.sleep(0.05)


async def test_a_node_cut_off_right_after_its_heartbeat_can_be_declared_dead_at_once(
    store_proxy: StoreProxy, mariadb: MariaDB, mysql_database: str
) -> None:
    """A node cut off (a silent partition; or frozen, SIGSTOP) right after its heartbeat's
    UPDATE reached MariaDB: MariaDB keeps its connection, and any transaction open on it, until
    it notices the node is gone (for a silent partition, hours). Were a COMMIT to follow the
    renewal, its nodes row would stay locked all that time: no node could declare it dead,
    nor take its claims over. A renewal is one statement, committed as it runs."""
    timeout_ms = 300
    cut_off = make_membership(mariadb.url(mysql_database, store_proxy.port))
    others = make_membership(mariadb.url(mysql_database))
    await cut_off.open()
    await others.open()
    try:
        joined = await cut_off.join("c", host="h", pid=1, version="v", node_timeout_ms=timeout_ms)
        store_proxy.freeze_after(b"UPDATE nodes SET heartbeat_at_ms")
        beat = asyncio.create_task(cut_off.heartbeat(joined.epoch, 0))
        try:
            await asyncio.wait_for(store_proxy.froze.wait(), timeout=2)
            await asyncio.sleep(2 * timeout_ms / 1000)  # its last heartbeat times out
            declaring = asyncio.create_task(others.declare_dead(joined.epoch, timeout_ms))
            declared, _ = await asyncio.wait({declaring}, timeout=2)
        finally:
            await store_proxy.cut()  # the cut ends: MariaDB drops the node's connections
            await store_proxy.restore()
            await asyncio.gather(beat, return_exceptions=True)
        assert declared, "declaring it dead waited for a lock its renewal's transaction held"
        assert declaring.result()
        assert await cut_off.heartbeat(joined.epoch, 0) is False  # back, it learns it is dead
    finally:
        await cut_off.close()
        await others.close()
