"""insert() of the usual batch (one shard, the model's own entities): on MySQL it goes in as one
JSON document that JSON_TABLE turns into rows (repos/mysql/sql.py, INSERT_DOCUMENT). The rows
must be those every other way of storing gives, byte for byte, whatever the values hold; a
duplicate must be refused or ignored as ever; and the document must be what went in.

The first three run on every adapter (the contract's backends: SQLite stores the same rows its
own way); the last one asks MariaDB which statements it ran.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from repos.base import DuplicateJob, ShardingRepository, ShardPolicy, Status, StoredRow
from repos.entity import EntitySpec
from repos.examples import NOTIFICATIONS, ORDERS, SMS, NotificationEntity, OrderEntity, SmsEntity
from repos.registry import make_repository

Repo = ShardingRepository[Any, Any]
MakeRepo = Callable[..., Awaitable[Repo]]
#: tests/conftest.py's `inserts_run`.
InsertsRun = Callable[[], Awaitable[dict[str, int]]]

D22 = datetime(2026, 11, 22, tzinfo=UTC)
NOW = int((D22 + timedelta(hours=12)).timestamp() * 1000)
FAR = NOW + 365 * 86_400_000
#: Values that a literal, a JSON document or a JSON_TABLE column could alter or break on.
HOSTILE = [
    "it's",
    'say "hi"',
    "back\\slash \\' \\\" \\n",
    "100% %s",
    "ünï ✓ 日本 🎉",
    "a;DROP TABLE sms;--",
    "tab\tnew\nline \x00 nul \u2028",
    "],[",
    "",
]


def notes() -> list[NotificationEntity]:
    data: list[dict[str, Any]] = [
        {},
        {"n": [1, 2.5, -0.0, 1e-7, 1.7976931348623157e308, None, True]},
        {"deep": {"x": {"y": [HOSTILE]}}, "big": 2**63 - 1, "neg": -(2**63)},
        {text: text for text in HOSTILE},
    ]
    return [
        NotificationEntity(
            id=i,
            deliver_at=D22 + timedelta(hours=1, milliseconds=i),
            user_id=i,
            title=HOSTILE[i % len(HOSTILE)],
            body=HOSTILE[(i + 1) % len(HOSTILE)],
            data=data[i % len(data)],
        )
        for i in range(1, 41)
    ]


def orders() -> list[OrderEntity]:
    return [
        OrderEntity(
            order_id=key or "empty-key",
            expires_at=D22 + timedelta(hours=2, minutes=i),
            customer_id=i,
            amount_cents=i * 100,
            created_at=datetime(2026, 11, 20, 8, i, tzinfo=UTC),
        )
        for i, key in enumerate(HOSTILE)
    ]


async def every_row(repo: Repo) -> list[StoredRow]:
    return await repo.page(start_ms=0, end_ms=FAR, limit=100_000)


def sms(key: int, hours: int, message: str = "hello") -> SmsEntity:
    return SmsEntity(
        id=key, scheduled_at=D22 + timedelta(hours=hours), phone="+15550100", message=message
    )


@pytest.mark.parametrize(
    ("spec", "entities"),
    [(NOTIFICATIONS, notes()), (ORDERS, orders())],
    ids=["int-ids", "str-ids"],
)
async def test_insert_stores_each_row_as_its_entity_encodes_it(
    make_repo: MakeRepo, spec: EntitySpec[Any, Any], entities: list[Any]
) -> None:
    repo = await make_repo(spec)
    assert await repo.insert(entities, now_ms=NOW) == len(entities)
    stored = {row.key: row for row in await every_row(repo)}
    assert len(stored) == len(entities)
    for entity in entities:
        expected = spec.encode(entity)  # entity by entity: the oracle of every insert
        row = stored[expected.key]
        assert (row.key, row.at_ms, row.due_ms, row.payload) == (
            expected.key,
            expected.at_ms,
            expected.at_ms,
            expected.payload,
        )
        assert (row.status, row.attempts, row.claim_epoch) == (Status.PENDING, 0, 0)
        assert (row.priority, row.category) == (500, "")
        assert (row.claimed_by, row.claimed_at_ms, row.fired_at_ms) == (None, None, None)
        assert spec.decode(row.key, row.at_ms, row.payload) == entity


async def test_a_duplicate_in_a_one_shard_batch_is_named_and_nothing_is_stored(
    make_repo: MakeRepo,
) -> None:
    repo = await make_repo()
    assert await repo.insert([sms(1, 1, "original")], now_ms=NOW) == 1
    before = await every_row(repo)
    with pytest.raises(DuplicateJob) as stored_already:
        await repo.insert([sms(2, 2), sms(1, 3, "again"), sms(3, 4)], now_ms=NOW)
    assert (stored_already.value.job_id, stored_already.value.in_batch) == (1, False)
    with pytest.raises(DuplicateJob) as twice:
        await repo.insert([sms(5, 2), sms(6, 3), sms(5, 4, "again")], now_ms=NOW)
    assert (twice.value.job_id, twice.value.in_batch) == (5, True)
    assert await every_row(repo) == before


async def test_duplicates_ignored_in_a_one_shard_batch_leave_the_stored_rows(
    make_repo: MakeRepo,
) -> None:
    repo = await make_repo()
    assert await repo.insert([sms(1, 1, "original")], now_ms=NOW) == 1
    [original] = await repo.get(1)
    batch = [sms(2, 2), sms(1, 3, "again"), sms(3, 4)]
    assert await repo.insert(batch, now_ms=NOW, on_duplicate="ignore") == 2
    assert await repo.get(1) == [original]
    assert [SMS.decode(r.key, r.at_ms, r.payload) for r in await every_row(repo)] == [
        sms(1, 1, "original"),
        sms(2, 2),
        sms(3, 4),
    ]


@pytest.mark.mysql
@pytest.mark.parametrize("driver", ["asyncmy", "aiomysql"])
@pytest.mark.parametrize("layout", ["multi-table", "partitioned"])
async def test_the_usual_batch_goes_in_from_its_document_and_others_as_values(
    mysql_database: str, mariadb: Any, inserts_run: InsertsRun, layout: Any, driver: Any
) -> None:
    """One INSERT ... SELECT for a call of one shard's rows, batch_size at most; VALUES for rows
    of two shards, for a call larger than a batch (batch_size rows a statement), and for rows
    encoded already (insert_rows)."""
    repo = make_repository(
        mariadb.url(mysql_database), SMS, ShardPolicy(), layout=layout, driver=driver, batch_size=3
    )
    await repo.open()
    try:
        await repo.ensure_shards(NOW - 43_200_000, NOW + 2 * 86_400_000)

        async def counted(insert: Awaitable[int], rows: int) -> tuple[int, int]:
            before = await inserts_run()
            assert await insert == rows
            after = await inserts_run()
            return (
                after["Com_insert_select"] - before["Com_insert_select"],
                after["Com_insert"] - before["Com_insert"],
            )

        one_shard = [sms(1, 1), sms(2, 2), sms(3, 3)]
        assert await counted(repo.insert(one_shard, now_ms=NOW), 3) == (1, 0)
        two_shards = [sms(4, 1), sms(5, 2), sms(6, 25)]
        assert await counted(repo.insert(two_shards, now_ms=NOW), 3) == (0, 2)
        over_a_batch = [sms(k, 4) for k in range(7, 11)]
        assert await counted(repo.insert(over_a_batch, now_ms=NOW), 4) == (0, 2)
        rows = [SMS.encode(e) for e in (sms(11, 1), sms(12, 2), sms(13, 3))]
        assert await counted(repo.insert_rows(rows, now_ms=NOW), 3) == (0, 1)
        assert sorted(r.key for r in await every_row(repo)) == list(range(1, 14))
    finally:
        await repo.close()
