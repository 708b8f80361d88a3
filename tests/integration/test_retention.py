"""The shard lifecycle against every adapter: made ahead, dropped whole at the right instant,
nothing dropped silently, nothing live touched, disk space given back."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from infinite_scheduler.clock import FakeClock
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.maintenance import Maintenance, MaintenanceSettings
from infinite_scheduler.metrics import Metrics
from repos.base import Claimant, Failure, ShardingRepository, ShardPolicy, Status, StoreError
from repos.examples import SMS, SmsEntity
from repos.registry import make_repository
from repos.shards import Granularity

pytestmark = pytest.mark.timeout(30)
#: The claimant of the claims these tests make (a node id and its epoch).
NODE = Claimant("node-a", 1)

Repo = ShardingRepository[Any, Any]
DAY = Granularity.DAY.span_ms
HOUR = Granularity.HOUR.span_ms
#: Start of the first shard of every test: 2026-11-20T00:00:00Z.
B0 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)


def sms(i: int, at_ms: int) -> SmsEntity:
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return SmsEntity(id=i, scheduled_at=at, phone="+15550100", message=f"m{i}")


def maintenance(
    repos: Sequence[Any], *, create_ahead: int = 2, interval_s: float = 60
) -> Maintenance:
    settings = MaintenanceSettings(
        node_id="node-a", create_ahead=create_ahead, interval_s=interval_s
    )
    return Maintenance(list(repos), settings, clock=FakeClock(B0), metrics=Metrics())


def sample(m: Maintenance, metric: str) -> float | None:
    return m.metrics.registry.get_sample_value(f"infinite_scheduler_{metric}", {"entity": "sms"})


async def seed(repo: Repo, *, shards: int, span_ms: int, per_shard: int = 2) -> list[str]:
    """`per_shard` PENDING rows in each of `shards` periods from B0; returns the shard names."""
    rows = [
        sms(k * per_shard + j, B0 + k * span_ms + 1000 + j)
        for k in range(shards)
        for j in range(per_shard)
    ]
    await repo.insert(rows, now_ms=B0)
    return [s.name for s in await repo.list_shards()]


async def rows_by_shard(repo: Repo) -> dict[str, dict[Status | int, int]]:
    return {s.name: s.rows for s in await repo.list_shards(counts=True)}


def engine_config(
    store_url: str, *, create_ahead: int, maintenance_interval_s: float
) -> SchedulerConfig:
    """An engine's settings with a day's retention, fast fetches and no metrics endpoint."""
    return load_config(
        None,
        store={"url": store_url},
        metrics_port=0,
        fetch_interval_s=0.2,
        lookahead_s=0.6,
        misfire_horizon_s=3600,
        cluster={"heartbeat_interval_s": 0.1, "node_timeout_s": 0.5},
        shards={
            "retention_s": 86_400,
            "create_ahead": create_ahead,
            "maintenance_interval_s": maintenance_interval_s,
        },
    )


async def eventually(check: Callable[[], bool], timeout_s: float = 3) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


class FailingDrop:
    """A repository whose `fail_on`-th drop call fails, as when the connection dies mid-pass."""

    def __init__(self, repo: Repo, fail_on: int) -> None:
        self._repo = repo
        self._fail_on = fail_on
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    async def drop_shards_before(self, cutoff_ms: int) -> Any:
        self.calls += 1
        if self.calls == self._fail_on:
            raise StoreError("drop shard", ConnectionResetError("lost mid-drop"))
        return await self._repo.drop_shards_before(cutoff_ms)


@pytest.mark.parametrize("granularity", [Granularity.DAY, Granularity.HOUR])
async def test_a_shard_is_dropped_exactly_when_its_end_is_retention_ago(
    make_repo: Any, granularity: Granularity
) -> None:
    span = granularity.span_ms
    repo = await make_repo(policy=ShardPolicy(granularity=granularity, retention_ms=2 * span))
    names = await seed(repo, shards=4, span_ms=span)
    assert names[0].endswith("20261120" if granularity is Granularity.DAY else "2026112000")
    m = maintenance([repo])
    boundary = B0 + 2 * span + 2 * span  # shard 1 ends at B0 + 2 spans, kept 2 more
    for now_ms, expected in [
        (boundary - 1, names[:1]),  # shard 0 long expired; shard 1 still 1 ms inside retention
        (boundary, names[1:2]),  # exactly retention after its end
        (boundary + 1, []),  # shard 2 ends a whole span later
    ]:
        report = await m.run_once(now_ms)
        assert not report.failures
        assert [s.name for s in report.entities["sms"].dropped] == expected, now_ms
    live = await rows_by_shard(repo)
    assert live[names[2]] == live[names[3]] == {Status.PENDING: 2}  # untouched, rows and all
    assert names[0] not in live and names[1] not in live
    assert sample(m, "shards_dropped_total") == 2


async def test_the_current_shard_and_create_ahead_more_are_made(make_repo: Any) -> None:
    repo = await make_repo()
    m = maintenance([repo], create_ahead=3)

    async def starts() -> list[int]:
        return [(s.bounds.start_ms - B0) // DAY for s in await repo.list_shards()]

    report = await m.run_once(B0)
    assert await starts() == [0, 1, 2, 3]
    assert [(s.bounds.start_ms - B0) // DAY for s in report.entities["sms"].ensured] == [0, 1, 2, 3]
    assert report.entities["sms"].live == 4 and sample(m, "shards_live") == 4
    await m.run_once(B0 + DAY - 1)  # same period: nothing new, and making them again is fine
    assert await starts() == [0, 1, 2, 3]
    await m.run_once(B0 + DAY)
    assert await starts() == [0, 1, 2, 3, 4]
    assert sample(m, "shards_live") == 5


async def test_shards_ahead_says_what_the_last_pass_made_and_falls_while_none_runs(
    make_repo: Any,
) -> None:
    repo = await make_repo()
    m = maintenance([repo], create_ahead=3)
    clock = m.clock
    assert isinstance(clock, FakeClock)
    assert sample(m, "shards_ahead") is None  # no pass yet: no series, rather than a guess
    await m.run_once(B0)
    assert sample(m, "shards_ahead") == 3
    clock.advance(2 * DAY)  # no pass for two days: the alert on this series must see it
    assert sample(m, "shards_ahead") == 1
    clock.advance(2 * DAY)
    assert sample(m, "shards_ahead") == -1  # inserts due now would find no shard
    await m.run_once(clock.now_ms())
    assert sample(m, "shards_ahead") == 3


async def test_the_drop_counters_exist_at_zero_before_any_drop(make_repo: Any) -> None:
    """A counter first seen at 1 is no increase to Prometheus: the alert on unfinished rows
    dropped would miss the first drop."""
    m = maintenance([await make_repo()])
    assert sample(m, "unfinished_rows_dropped_total") == 0
    assert sample(m, "shards_dropped_total") == 0


async def test_unfinished_rows_of_a_dropped_shard_are_counted_logged_and_metered(
    make_repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    repo = await make_repo()
    await repo.insert([sms(i, B0 + 1000 + i) for i in range(1, 9)], now_ms=B0)
    await repo.insert([sms(100, B0 + DAY + 1000)], now_ms=B0)  # in the next, live shard
    claimed = await repo.claim_due(NODE, now_ms=B0, before_ms=B0 + DAY, since_ms=B0, limit=4)
    assert [job.key for job in claimed] == [1, 2, 3, 4]
    await repo.mark_done(NODE.epoch, [claimed[0].ref, claimed[1].ref], fired_at_ms=B0)
    failure = Failure(ref=claimed[2].ref, error="boom", retry_at_ms=None)
    await repo.mark_failed(NODE.epoch, [failure], now_ms=B0)
    await repo.cancel([5])
    m = maintenance([repo])
    with caplog.at_level(logging.INFO, logger="infinite_scheduler.maintenance"):
        report = await m.run_once(B0 + DAY + repo.policy.retention_ms)
    [dropped] = report.entities["sms"].dropped
    assert dropped.rows == {
        Status.DONE: 2,
        Status.FAILED: 1,
        Status.CANCELLED: 1,
        Status.CLAIMED: 1,
        Status.PENDING: 3,
    }
    assert dropped.unfinished == report.entities["sms"].unfinished_dropped == 4
    assert sample(m, "unfinished_rows_dropped_total") == 4
    assert sample(m, "shards_dropped_total") == 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "4 unfinished rows" in warning.getMessage() and dropped.name in warning.getMessage()
    assert (cast(Any, warning).entity, cast(Any, warning).shard) == ("sms", dropped.name)
    assert [r.status for r in await repo.get(100)] == [Status.PENDING]


async def test_a_drop_racing_with_claims_and_inserts_loses_no_live_row(make_repo: Any) -> None:
    policy = ShardPolicy(granularity=Granularity.HOUR, retention_ms=2 * HOUR)
    repo = await make_repo(policy=policy)
    other = await make_repo(policy=policy)  # another node, inserting
    now = B0 + 10 * HOUR
    names = await seed(repo, shards=9, span_ms=HOUR, per_shard=100)  # hours 0-8; 0-7 expired
    await repo.insert([sms(10_000 + i, now - HOUR + i) for i in range(500)], now_ms=now)
    claimed: list[Any] = []

    async def claim() -> None:
        for _ in range(10):
            claimed.extend(
                await repo.claim_due(
                    NODE, now_ms=now, before_ms=now + 60_000, since_ms=now - HOUR, limit=60
                )
            )
            await asyncio.sleep(0)

    async def insert() -> None:
        for batch in range(10):
            rows = [sms(20_000 + batch * 100 + i, now + HOUR + i) for i in range(100)]
            assert await other.insert(rows, now_ms=now) == 100

    report, _, _ = await asyncio.gather(maintenance([repo]).run_once(now), claim(), insert())
    assert not report.failures
    assert [s.name for s in report.entities["sms"].dropped] == names[:8]
    live = {name: rows for name, rows in (await rows_by_shard(repo)).items() if rows}
    assert live[names[8]] == {Status.PENDING: 100}  # inside retention, outside the window
    assert len({job.key for job in claimed}) == len(claimed) == 500
    due_shard, inserted_shard = sorted(set(live) - {names[8]})
    assert live[due_shard] == {Status.CLAIMED: 500}
    assert live[inserted_shard] == {Status.PENDING: 1000}


async def test_a_drop_failing_half_way_is_finished_by_the_next_pass(make_repo: Any) -> None:
    repo = await make_repo()
    names = await seed(repo, shards=5, span_ms=DAY)
    flaky = FailingDrop(repo, fail_on=2)
    m = maintenance([flaky])
    now = B0 + 3 * DAY + repo.policy.retention_ms  # shards 0-2 expired, 3-4 inside retention

    first = await m.run_once(now)
    assert "sms" in first.failures and "sms" not in first.entities
    assert sample(m, "shards_dropped_total") == 1  # the drop before the failure is counted
    assert sample(m, "unfinished_rows_dropped_total") == 2
    second = await m.run_once(now)
    assert not second.failures
    assert [s.name for s in second.entities["sms"].dropped] == names[1:3]
    assert sample(m, "shards_dropped_total") == 3
    assert sample(m, "unfinished_rows_dropped_total") == 6
    live = await rows_by_shard(repo)
    assert not set(names[:3]) & set(live)
    assert live[names[3]] == live[names[4]] == {Status.PENDING: 2}


async def test_names_that_are_not_shards_are_left_alone_and_warned_about_once(
    make_repo: Any, backend: Any, raw_sql: Any, caplog: pytest.LogCaptureFixture
) -> None:
    repo = await make_repo()
    names = await seed(repo, shards=2, span_ms=DAY)
    if backend.layout == "partitioned":  # a DBA split off a partition for old rows
        first = names[0]
        junk = {"pold"}
        await raw_sql(
            repo,
            f"ALTER TABLE sms REORGANIZE PARTITION {first} INTO (PARTITION pold VALUES LESS THAN"
            f" ({B0}), PARTITION {first} VALUES LESS THAN ({B0 + DAY}))",
        )
    else:
        junk = {"sms_backup", "sms_2026"}
        for table in junk:
            await raw_sql(repo, f"CREATE TABLE {table} (x INTEGER)")
    m = maintenance([repo])
    with caplog.at_level(logging.WARNING, logger="infinite_scheduler.maintenance"):
        for now_ms in (B0, B0 + DAY, B0 + 100 * DAY):  # the last pass drops every shard
            assert not (await m.run_once(now_ms)).failures
    warned = [cast(Any, r).shard for r in caplog.records if "not a shard name" in r.getMessage()]
    assert sorted(warned) == sorted(junk)
    assert not set(names) & set(await rows_by_shard(repo))
    assert repo.ignored_names == junk  # still there
    assert [s.bounds.start_ms for s in await repo.list_shards()] == [
        B0 + k * DAY for k in range(100, 103)
    ]


async def test_inserters_racing_to_make_a_missing_shard_both_store_their_rows(
    make_repo: Any,
) -> None:
    a, b = await make_repo(), await make_repo()
    for day in (5, 9):  # shards nobody made yet
        at = B0 + day * DAY
        stored = await asyncio.gather(
            a.insert([sms(i, at + i) for i in range(200)], now_ms=B0),
            b.insert([sms(i, at + i) for i in range(200, 400)], now_ms=B0),
        )
        assert list(stored) == [200, 200]
    counts = {
        (s.bounds.start_ms - B0) // DAY: s.rows for s in await a.list_shards(counts=True) if s.rows
    }
    assert counts == {5: {Status.PENDING: 400}, 9: {Status.PENDING: 400}}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_sqlite_gives_the_space_of_a_dropped_shard_back_to_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    repo = make_repository(f"sqlite:///{path}", SMS, ShardPolicy(), create_missing=True)
    await repo.open()
    try:
        await repo.insert([sms(i, B0 + i) for i in range(20_000)], now_ms=B0)
        await repo.insert([sms(1, B0 + 8 * DAY)], now_ms=B0)
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = disk_bytes(path)
        report = await maintenance([repo]).run_once(B0 + DAY + repo.policy.retention_ms)
        assert [sum(s.rows.values()) for s in report.entities["sms"].dropped] == [20_000]
        after = disk_bytes(path)
    finally:
        await repo.close()
    assert before > 1_000_000
    assert after < before // 5, (before, after)


async def test_run_retries_a_failed_pass_and_stops_on_stop(tmp_path: Path) -> None:
    repo = make_repository(
        f"sqlite:///{tmp_path / 'store.db'}", SMS, ShardPolicy(), create_missing=True
    )
    await repo.open()
    try:
        await seed(repo, shards=1, span_ms=DAY)
        flaky = FailingDrop(repo, fail_on=1)
        m = maintenance([flaky], interval_s=0.05)
        cast(FakeClock, m.clock).advance(DAY + repo.policy.retention_ms)
        stop = asyncio.Event()
        task = asyncio.create_task(m.run(stop))
        await eventually(lambda: sample(m, "shards_dropped_total") == 1)
        stop.set()
        async with asyncio.timeout(3):
            await task
    finally:
        await repo.close()
    assert flaky.calls == 2 and m.passes >= 2


async def test_the_engine_drops_expired_and_makes_ahead_shards_at_start_up(
    store_url: str,
) -> None:
    config = engine_config(store_url, create_ahead=2, maintenance_interval_s=600)
    clock = FakeClock(B0 + 10 * DAY + 3_600_000)
    seeder = make_repository(store_url, SMS, config.shard_policy)
    await seeder.open()
    try:
        await seeder.insert([sms(i, B0 + i) for i in range(3)], now_ms=B0)  # long expired
        engine = InfiniteScheduler(config, clock=clock)
        engine.register(SMS, lambda ctx: None)
        async with engine:
            await eventually(
                lambda: (
                    engine.metrics.registry.get_sample_value(
                        "infinite_scheduler_shards_live", {"entity": "sms"}
                    )
                    is not None
                )
            )
        starts = [(s.bounds.start_ms - B0) // DAY for s in await seeder.list_shards()]
    finally:
        await seeder.close()
    assert starts == [10, 11, 12]
    assert (
        engine.metrics.registry.get_sample_value(
            "infinite_scheduler_unfinished_rows_dropped_total", {"entity": "sms"}
        )
        == 3
    )
    assert engine.parts.maintenance.passes == 1


async def set_status(raw_sql: Any, repo: Repo, backend: Any, key: int, status: int) -> None:
    """What a hand-written UPDATE, a newer version or a bug leaves behind."""
    [row] = await repo.get(key)
    table = "sms" if backend.layout == "partitioned" else row.shard
    await raw_sql(repo, f"UPDATE {table} SET status = {status} WHERE id = {key}")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[tuple[str | None, str]]:
    return [
        (cast(Any, r).shard, r.getMessage())
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "infinite_scheduler.maintenance"
    ]


async def test_rows_of_an_unknown_status_are_reported_every_pass_and_dropped_as_unfinished(
    make_repo: Any, backend: Any, raw_sql: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass reads the rows due by its time (status is in no index: the claim index's
    PENDING range is where such rows are cheap to find) and every row of the shards it drops;
    a row not due yet is reported once it is."""
    repo = await make_repo()
    await repo.insert([sms(i, B0 + 1000 + i) for i in range(1, 5)], now_ms=B0)
    await repo.insert([sms(i, B0 + 7 * DAY + i) for i in (10, 11, 12)], now_ms=B0)
    await repo.insert([sms(13, B0 + 9 * DAY)], now_ms=B0)
    await set_status(raw_sql, repo, backend, 3, 12)  # in the shard that expires
    await set_status(raw_sql, repo, backend, 11, 9)  # in a live one
    await set_status(raw_sql, repo, backend, 10, -1)
    await set_status(raw_sql, repo, backend, 13, 9)  # not due yet
    [expired, live, later] = [(await repo.get(key))[0].shard for key in (3, 11, 13)]
    m = maintenance([repo])
    now = B0 + DAY + repo.policy.retention_ms  # the first shard has just expired

    with caplog.at_level(logging.INFO, logger="infinite_scheduler.maintenance"):
        report = await m.run_once(now)
    assert not report.failures
    [dropped] = report.entities["sms"].dropped
    assert dropped.name == expired
    assert dropped.rows == {Status.PENDING: 3, 12: 1} and dropped.unfinished == 4
    assert sample(m, "unfinished_rows_dropped_total") == 4
    assert sample(m, "rows_unknown_status") == 2  # the live shard's; the dropped one is gone
    assert warnings_of(caplog) == [
        (
            expired,
            f"sms: shard {expired} holds 1 row of a status this version does not know,"
            " never fired: ids 3 (status 12)",
        ),
        (
            live,
            f"sms: shard {live} holds 2 rows of a status this version does not know,"
            " never fired: ids 10 (status -1), 11 (status 9)",
        ),
        (
            expired,
            f"sms: dropped shard {expired} with 4 unfinished rows (of 4: PENDING=3 status 12=1)"
            " past retention",
        ),
    ]

    # get and page read such rows as they are, and the next pass names them again.
    assert [r.status for r in await repo.get(11)] == [9]
    page = await repo.page(start_ms=B0, end_ms=B0 + 9 * DAY)
    assert [(r.key, r.status) for r in page] == [(10, -1), (11, 9), (12, Status.PENDING)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="infinite_scheduler.maintenance"):
        assert not (await m.run_once(now + 1)).failures
    assert [shard for shard, _ in warnings_of(caplog)] == [live]
    assert sample(m, "rows_unknown_status") == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="infinite_scheduler.maintenance"):
        assert not (await m.run_once(B0 + 9 * DAY + 1)).failures  # 13 is due now
    assert [shard for shard, _ in warnings_of(caplog)] == [live, later]
    assert sample(m, "rows_unknown_status") == 3


class Surprising:
    """A repository whose first drop raises what no store error covers (the ValueError an
    unknown status used to raise in the count before a drop)."""

    def __init__(self, repo: Repo) -> None:
        self._repo = repo
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    async def drop_shards_before(self, cutoff_ms: int) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("7 is not a valid Status")
        return await self._repo.drop_shards_before(cutoff_ms)


async def test_an_unexpected_error_fails_one_pass_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = make_repository(
        f"sqlite:///{tmp_path / 'store.db'}", SMS, ShardPolicy(), create_missing=True
    )
    await repo.open()
    try:
        await seed(repo, shards=1, span_ms=DAY)
        surprising = Surprising(repo)
        m = maintenance([surprising], interval_s=0.05)
        cast(FakeClock, m.clock).advance(DAY + repo.policy.retention_ms)
        stop = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="infinite_scheduler.maintenance"):
            task = asyncio.create_task(m.run(stop))
            await eventually(lambda: sample(m, "shards_dropped_total") == 1)
        assert not task.done(), "the maintenance loop died"
        stop.set()
        async with asyncio.timeout(3):
            await task
    finally:
        await repo.close()
    assert surprising.calls == 2
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == (
        "sms: shard maintenance failed unexpectedly, the next pass retries:"
        " ValueError('7 is not a valid Status')"
    )
    assert cast(Any, error).entity == "sms" and error.exc_info is not None


async def test_the_engine_keeps_running_over_rows_of_an_unknown_status(
    store_url: str, raw_sql: Any
) -> None:
    config = engine_config(store_url, create_ahead=1, maintenance_interval_s=0.1)
    now = B0 + 10 * DAY + 3_600_000
    seeder = make_repository(store_url, SMS, config.shard_policy)
    await seeder.open()
    try:
        await seeder.insert([sms(i, B0 + i) for i in range(3)], now_ms=B0)  # long expired
        await seeder.insert([sms(7, now - 1000)], now_ms=now)  # live, due: never claimed
        for key, day in ((1, 0), (7, 10)):
            table = f"sms_{datetime.fromtimestamp((B0 + day * DAY) / 1000, UTC):%Y%m%d}"
            await raw_sql(seeder, f"UPDATE {table} SET status = 12 WHERE id = {key}")
        engine = InfiniteScheduler(config, clock=FakeClock(now))
        engine.register(SMS, lambda ctx: None)

        def gauge(name: str) -> float | None:
            return engine.metrics.registry.get_sample_value(
                f"infinite_scheduler_{name}", {"entity": "sms"}
            )

        async with engine:
            await eventually(lambda: gauge("rows_unknown_status") == 1)
            await eventually(lambda: engine.parts.maintenance.passes > 2)
            assert not engine.stopping.is_set(), "the engine stopped"
    finally:
        await seeder.close()
    assert gauge("unfinished_rows_dropped_total") == 3
