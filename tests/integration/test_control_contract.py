"""The JobControl contract (repos/control.py): find, transition, move, and the revocations a
change to a claimed row posts; on every store of tests/conftest.py's `repo` fixture."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from repos.base import (
    PAUSED_EPOCH,
    Claimant,
    DuplicateJob,
    RowRef,
    ShardingRepository,
    Status,
    StoredRow,
    encode_for,
)
from repos.cluster import Membership, Revocation
from repos.control import JobQuery, Transition
from repos.examples import ORDERS, OrderEntity, SmsEntity

Repo = ShardingRepository[Any, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = 3_600_000
DAY = 24 * HOUR
D22 = int((datetime(2026, 11, 22, tzinfo=UTC) - EPOCH).total_seconds()) * 1000
D23, D24 = D22 + DAY, D22 + 2 * DAY
NOW = D22 + 12 * HOUR
FAR = D22 + 365 * DAY
N1 = Claimant("n1", 11)


def sms(key: int, at_ms: int, message: str = "hello") -> SmsEntity:
    at = EPOCH + timedelta(milliseconds=at_ms)
    return SmsEntity(id=key, scheduled_at=at, phone="+15550100", message=message)


async def rows(repo: Repo) -> list[StoredRow]:
    return await repo.page(start_ms=0, end_ms=FAR, limit=100_000)


def keys(found: list[StoredRow]) -> list[Any]:
    return [r.key for r in found]


async def find_all(repo: Any, query: JobQuery, page: int) -> list[list[Any]]:
    """Every page of `query`, `page` rows at a time, following the cursor."""
    pages, after = [], None
    while found := await repo.find(query, after=after, limit=page):
        pages.append(keys(found))
        after = RowRef(found[-1].key, found[-1].at_ms)
    return pages


@pytest.fixture
async def seeded(repo: Repo) -> Repo:
    """Ids 1-6 over three day shards, one of them claimed (1) and one cancelled (5)."""
    entities = [sms(1, D22 + HOUR), sms(2, D22 + 2 * HOUR), sms(3, D22 + 13 * HOUR)]
    entities += [sms(4, D23 + HOUR), sms(5, D23 + 2 * HOUR), sms(6, D24 + HOUR)]
    await repo.insert(entities, now_ms=NOW)
    await repo.claim_due(N1, now_ms=NOW, before_ms=D22 + 14 * HOUR, since_ms=D22, limit=1)
    await repo.cancel([5])
    return repo


async def test_find_walks_the_shards_in_order_and_pages_by_cursor_either_way(
    seeded: Any,
) -> None:
    assert await find_all(seeded, JobQuery(), 4) == [[1, 2, 3, 4], [5, 6]]
    assert await find_all(seeded, JobQuery(), 2) == [[1, 2], [3, 4], [5, 6]]
    assert await find_all(seeded, JobQuery(descending=True), 4) == [[6, 5, 4, 3], [2, 1]]
    assert await seeded.find(JobQuery(), limit=0) == []


async def test_find_filters_by_status_time_range_and_id_range(seeded: Any) -> None:
    claimed = JobQuery(statuses=frozenset({Status.CLAIMED, Status.CANCELLED}))
    assert keys(await seeded.find(claimed)) == [1, 5]
    pending_23 = JobQuery(
        statuses=frozenset({Status.PENDING}), from_ms=D22 + 2 * HOUR, before_ms=D24
    )
    assert keys(await seeded.find(pending_23)) == [2, 3, 4]
    assert keys(await seeded.find(JobQuery(key_from=2, key_before=5))) == [2, 3, 4]
    [row] = await seeded.find(JobQuery(statuses=frozenset({Status.CLAIMED})))
    assert (row.claimed_by, row.claim_epoch, row.attempts) == ("n1", 11, 1)
    assert (row.priority, row.category) == (500, "")


async def test_find_filters_by_category_and_reports_priority(make_repo: Any) -> None:
    repo = await make_repo()
    plain = encode_for(repo, [sms(1, D22 + HOUR)], now_ms=NOW)
    [row] = encode_for(repo, [sms(2, D22 + HOUR)], now_ms=NOW)
    urgent = [row._replace(priority=900, category="alerts")]
    await repo.insert_rows(plain + urgent, now_ms=NOW)
    [row] = await repo.find(JobQuery(category="alerts"))
    assert (row.key, row.priority, row.category) == (2, 900, "alerts")
    assert keys(await repo.find(JobQuery(category=""))) == [1]


async def test_find_is_stable_under_inserts_before_and_after_the_cursor(seeded: Any) -> None:
    first = await seeded.find(JobQuery(), limit=3)
    await seeded.insert([sms(10, D22), sms(11, D24 + 2 * HOUR)], now_ms=NOW)
    after = RowRef(first[-1].key, first[-1].at_ms)
    assert keys(await seeded.find(JobQuery(), after=after, limit=10)) == [4, 5, 6, 11]


async def test_find_str_ids_by_prefix_range(make_repo: Any) -> None:
    repo = await make_repo(ORDERS)
    at = EPOCH + timedelta(milliseconds=D22 + HOUR)
    ids = ["~s1.0@1", "~s1.0@2", "~s12.0@1", "~s2.0@1", "plain"]
    await repo.insert(
        [OrderEntity(order_id=i, expires_at=at, customer_id=1, amount_cents=1) for i in ids],
        now_ms=NOW,
    )
    found = await repo.find(JobQuery(key_from="~s1.", key_before="~s1/"))
    assert keys(found) == ["~s1.0@1", "~s1.0@2"]


async def test_transition_writes_only_rows_still_in_the_state_seen(seeded: Any) -> None:
    [one] = await seeded.get(2)
    cancel = Transition(
        ref=RowRef(2, one.at_ms), seen_status=Status.CLAIMED, seen_epoch=11,
        status=Status.CANCELLED, epoch=-1,
    )  # fmt: skip
    before = await rows(seeded)
    assert await seeded.transition([cancel]) == 0
    assert await rows(seeded) == before
    pause = Transition(
        ref=RowRef(2, one.at_ms), seen_status=Status.PENDING, seen_epoch=0,
        status=Status.PAUSED, epoch=PAUSED_EPOCH, due_ms=D22 + 3 * HOUR,
    )  # fmt: skip
    assert await seeded.transition([pause]) == 1
    [paused] = await seeded.get(2)
    assert (paused.status, paused.claim_epoch, paused.due_ms) == (
        Status.PAUSED,
        PAUSED_EPOCH,
        D22 + 3 * HOUR,
    )
    claimed = await seeded.claim_due(N1, now_ms=NOW, before_ms=FAR, since_ms=D22, limit=100)
    assert 2 not in [job.key for job in claimed]


async def test_a_claimed_row_paused_is_released_and_revoked_for_its_node(
    seeded: Any, open_membership: Callable[[], Awaitable[Membership]]
) -> None:
    membership = await open_membership()
    [row] = await seeded.get(1)
    pause = Transition(
        ref=RowRef(1, row.at_ms), seen_status=Status.CLAIMED, seen_epoch=11,
        status=Status.PAUSED, epoch=PAUSED_EPOCH, release=True,
    )  # fmt: skip
    assert await seeded.transition([pause]) == 1
    [paused] = await seeded.get(1)
    assert (paused.status, paused.claimed_by, paused.claimed_at_ms, paused.attempts) == (
        Status.PAUSED,
        None,
        None,
        0,
    )
    assert await seeded.read_payloads(11, [RowRef(1, row.at_ms)]) == {}
    assert await membership.take_revocations(11) == [Revocation(11, "sms", "1", row.at_ms)]
    assert await membership.take_revocations(11) == []
    assert await membership.take_revocations(12) == []


async def test_move_to_another_shard_carries_the_row_and_leaves_none_behind(seeded: Any) -> None:
    [row] = await seeded.get(4)
    moved = await seeded.move(
        RowRef(4, row.at_ms), seen_status=Status.PENDING, seen_epoch=0,
        at_ms=D24 + 5 * HOUR, due_ms=D24 + 5 * HOUR,
    )  # fmt: skip
    assert moved
    [there] = await seeded.get(4)
    assert (there.at_ms, there.due_ms, there.payload, there.status) == (
        D24 + 5 * HOUR,
        D24 + 5 * HOUR,
        row.payload,
        Status.PENDING,
    )
    assert there.shard != row.shard
    claimed = await seeded.claim_due(
        N1, now_ms=NOW, before_ms=D24 + 6 * HOUR, since_ms=D24, limit=10
    )
    assert [job.key for job in claimed] == [6, 4]


async def test_move_within_a_shard_and_to_a_shard_not_made_yet(seeded: Any) -> None:
    [row] = await seeded.get(3)
    assert await seeded.move(
        RowRef(3, row.at_ms), seen_status=Status.PENDING, seen_epoch=0,
        at_ms=D22 + 20 * HOUR, due_ms=D22 + 20 * HOUR,
    )  # fmt: skip
    assert [(r.at_ms, r.shard) for r in await seeded.get(3)] == [(D22 + 20 * HOUR, row.shard)]
    far = D24 + 3 * DAY
    assert await seeded.move(
        RowRef(3, D22 + 20 * HOUR), seen_status=Status.PENDING, seen_epoch=0,
        at_ms=far, due_ms=far,
    )  # fmt: skip
    assert [r.at_ms for r in await seeded.get(3)] == [far]


async def test_move_refused_changes_nothing(seeded: Any) -> None:
    await seeded.insert([sms(2, D24 + 9 * HOUR, "twin")], now_ms=NOW)
    before = await rows(seeded)
    [row] = [r for r in await seeded.get(2) if r.at_ms < D23]
    stale = await seeded.move(
        RowRef(2, row.at_ms), seen_status=Status.PAUSED, seen_epoch=PAUSED_EPOCH,
        at_ms=D24, due_ms=D24,
    )  # fmt: skip
    assert not stale
    with pytest.raises(DuplicateJob, match="already stored"):
        await seeded.move(
            RowRef(2, row.at_ms), seen_status=Status.PENDING, seen_epoch=0,
            at_ms=D24 + HOUR, due_ms=D24 + HOUR,
        )  # fmt: skip
    with pytest.raises(ValueError, match="CLAIMED"):
        await seeded.move(
            RowRef(1, D22 + HOUR), seen_status=Status.CLAIMED, seen_epoch=11,
            at_ms=D24, due_ms=D24,
        )  # fmt: skip
    assert await rows(seeded) == before
