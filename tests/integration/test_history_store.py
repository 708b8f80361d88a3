"""Execution history in the store: rows written with the acks, day tables, retention, reading.

Runs on each store of tests/conftest.py's ``backend`` (SQLite; MySQL multi-table and
partitioned on asyncmy and aiomysql). The history rows ride in the ack's own transaction: an
ack that changes a row stores its attempt, one that changes nothing (the row cancelled or taken
over) stores none, and one that fails stores nothing at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import pytest

from repos.base import Claimant, Failure, RowRef, ShardingRepository, Status
from repos.examples import ORDERS, OrderEntity, SmsEntity
from repos.history import (
    Attempt,
    HistoryCursor,
    HistoryFilter,
    HistoryRow,
    HistoryStore,
    Outcome,
    summarize,
)
from repos.registry import make_history_store

Repo = ShardingRepository[Any, Any]
MakeRepo = Callable[..., Awaitable[Repo]]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = 3_600_000
DAY = 24 * HOUR
D22 = int((datetime(2026, 11, 22, tzinfo=UTC) - EPOCH).total_seconds()) * 1000
D20, D21, D23 = D22 - 2 * DAY, D22 - DAY, D22 + DAY
NOW = D22 + 12 * HOUR
N1 = Claimant("n1", 11)


class Backend(Protocol):
    @property
    def driver(self) -> Any: ...


def sms(key: int, at_ms: int) -> SmsEntity:
    return SmsEntity(
        id=key, scheduled_at=EPOCH + timedelta(milliseconds=at_ms), phone="+1", message="m"
    )


def attempt(
    key: int | str,
    at_ms: int,
    *,
    finished_ms: int = NOW + 30,
    outcome: Outcome = Outcome.OK,
    error: str | None = None,
    number: int = 1,
    fired_ms: int | None = None,
    category: str = "",
) -> Attempt:
    fired = finished_ms - 20 if fired_ms is None else fired_ms
    return Attempt(key, at_ms, number, "n1", category, at_ms, fired, finished_ms, outcome, error)


@pytest.fixture
async def history(backend: Backend, backend_url: str) -> AsyncIterator[HistoryStore]:
    store = make_history_store(backend_url, driver=backend.driver)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def claimed(repo: Repo, keys: list[int], at_ms: int = NOW) -> list[RowRef]:
    await repo.insert([sms(k, at_ms) for k in keys], now_ms=NOW)
    jobs = await repo.claim_due(N1, now_ms=NOW, before_ms=at_ms + 1, since_ms=D20, limit=100)
    assert sorted(j.key for j in jobs) == sorted(keys)
    return [j.ref for j in jobs]


def rows_of(found: list[HistoryRow]) -> list[tuple[str, int, str]]:
    return [(r.job_id, r.attempt, r.outcome.name) for r in found]  # type: ignore[union-attr]


# -- written with the ack -------------------------------------------------------------------


async def test_an_ack_stores_one_history_row_per_attempt_with_every_column(
    repo: Repo, history: HistoryStore
) -> None:
    refs = await claimed(repo, [1, 2])
    attempts = [attempt(1, NOW, number=1), attempt(2, NOW, number=1, finished_ms=NOW + 40)]
    assert await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW + 50, history=attempts) == 2
    [row] = await history.attempts("sms", "2")
    assert row == HistoryRow(
        entity="sms",
        job_id="2",
        at_ms=NOW,
        attempt=1,
        node="n1",
        category="",
        due_ms=NOW,
        fired_ms=NOW + 20,
        finished_ms=NOW + 40,
        outcome=Outcome.OK,
        error=None,
    )
    assert (row.duration_ms, row.lateness_ms) == (20, 20)
    assert [name for _, name in await history.days()] == ["history_20261122"]


async def test_an_ack_without_history_writes_none_and_makes_no_table(
    repo: Repo, history: HistoryStore
) -> None:
    refs = await claimed(repo, [1])
    assert await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW) == 1
    assert await history.days() == []


async def test_an_ack_stores_the_attempts_of_the_rows_it_changed_only(
    repo: Repo, history: HistoryStore
) -> None:
    """Row 2 was cancelled while held: the ack leaves it alone, and stores no attempt of it."""
    refs = await claimed(repo, [1, 2, 3])
    assert await repo.cancel([2]) == 1
    attempts = [attempt(k, NOW) for k in (1, 2, 3)]
    assert await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW + 50, history=attempts) == 2
    page = await history.page(HistoryFilter(entity="sms"))
    assert sorted(r.job_id for r in page) == ["1", "3"]


async def test_an_ack_that_fails_stores_neither_its_rows_nor_its_history(
    repo: Repo, history: HistoryStore
) -> None:
    """The history INSERT fails (a value no store takes) after the UPDATE: both roll back."""
    refs = await claimed(repo, [1])
    bad = attempt(1, NOW)._replace(due_ms=cast(Any, object()))
    with pytest.raises(Exception):  # noqa: B017 - whatever the store says, it is not stored
        await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW + 50, history=[bad])
    [row] = await repo.get(1)
    assert row.status is Status.CLAIMED
    assert await history.page(HistoryFilter()) == []
    # The flush repeated with a good row goes through (the day's table made again if need be).
    assert await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW + 60, history=[attempt(1, NOW)])
    assert rows_of(await history.attempts("sms", "1")) == [("1", 1, "OK")]


async def test_a_repeated_ack_stores_its_attempt_once(repo: Repo, history: HistoryStore) -> None:
    """A flush whose reply was lost runs again: it changes nothing, and adds no row."""
    refs = await claimed(repo, [1])
    for _ in range(2):
        await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW + 50, history=[attempt(1, NOW)])
    assert len(await history.attempts("sms", "1")) == 1


async def test_failures_store_their_attempt_when_they_change_the_row(
    repo: Repo, history: HistoryStore
) -> None:
    refs = await claimed(repo, [1, 2, 3, 4])
    assert await repo.cancel([4]) == 1
    outcomes = {1: Outcome.RETRY, 2: Outcome.FAILED, 3: Outcome.MISSED, 4: Outcome.FAILED}
    failures = [
        Failure(
            ref=ref,
            error=f"boom {ref.key}" + "x" * 5000,
            retry_at_ms=NOW + 1000 if ref.key == 1 else None,
            status=Status.MISSED if ref.key == 3 else Status.FAILED,
            history=attempt(
                ref.key,
                NOW,
                outcome=outcomes[int(ref.key)],
                error=f"boom {ref.key}" + "x" * 5000,
                fired_ms=0 if ref.key == 3 else None,
            ),
        )
        for ref in refs
    ]
    assert await repo.mark_failed(N1.epoch, failures, now_ms=NOW + 40) == 3
    found = {r.job_id: r for r in await history.page(HistoryFilter())}
    assert {k: r.outcome for k, r in found.items()} == {
        "1": Outcome.RETRY,
        "2": Outcome.FAILED,
        "3": Outcome.MISSED,
    }
    assert found["3"].fired_ms is None and found["3"].duration_ms is None
    error = found["2"].error
    assert error is not None and error.startswith("boom 2xx") and len(error) == 1000
    assert error.endswith("...[truncated]")


async def test_str_ids_are_stored_as_they_are(make_repo: MakeRepo, history: HistoryStore) -> None:
    orders = await make_repo(ORDERS)
    key = "ORD-'1\"; DROP TABLE x;--é"
    at = EPOCH + timedelta(milliseconds=NOW)
    await orders.insert(
        [OrderEntity(order_id=key, expires_at=at, customer_id=1, amount_cents=5)], now_ms=NOW
    )
    jobs = await orders.claim_due(N1, now_ms=NOW, before_ms=NOW + 1, since_ms=D20, limit=10)
    hist = [attempt(key, NOW, category="billing")]
    assert await orders.mark_done(N1.epoch, [j.ref for j in jobs], fired_at_ms=NOW, history=hist)
    [row] = await history.attempts("orders", key)
    assert (row.job_id, row.category) == (key, "billing")
    assert await history.attempts("orders", key.upper()) == []


async def test_one_ack_mixing_default_and_other_columns_stores_each_row_as_given(
    make_repo: MakeRepo, history: HistoryStore
) -> None:
    """The MySQL writer leaves category and error out of an INSERT whose rows all have the
    defaults: one that mixes them must still store each row's own values; text of any bytes
    (a node id with a quote, a category with a backslash) comes back as it was."""
    repo, orders = await make_repo(), await make_repo(ORDERS)
    refs = await claimed(repo, [1, 2, 3])
    odd = Attempt(3, NOW, 2, "n'1;--", "a\\b", NOW, NOW + 1, NOW + 2, Outcome.OK, None)
    mixed = [attempt(1, NOW, category="billing", error="e'x"), attempt(2, NOW), odd]
    assert await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW, history=mixed) == 3
    found = {r.job_id: r for r in await history.page(HistoryFilter(entity="sms"))}
    assert {k: (r.node, r.category, r.error) for k, r in found.items()} == {
        "1": ("n1", "billing", "e'x"),
        "2": ("n1", "", None),
        "3": ("n'1;--", "a\\b", None),
    }
    keys = ["A-1", "b2", "ü"]
    at = EPOCH + timedelta(milliseconds=NOW)
    await orders.insert(
        [OrderEntity(order_id=k, expires_at=at, customer_id=1, amount_cents=5) for k in keys],
        now_ms=NOW,
    )
    jobs = await orders.claim_due(N1, now_ms=NOW, before_ms=NOW + 1, since_ms=D20, limit=10)
    hist = [attempt(k, NOW) for k in keys]
    assert await orders.mark_done(N1.epoch, [j.ref for j in jobs], fired_at_ms=NOW, history=hist)
    stored = await history.page(HistoryFilter(entity="orders"))
    assert sorted((r.job_id, r.category, r.error) for r in stored) == [
        ("A-1", "", None),
        ("b2", "", None),
        ("ü", "", None),
    ]


# -- days: made ahead, dropped with retention -------------------------------------------------


async def test_days_are_made_ahead_and_dropped_whole_past_retention(
    repo: Repo, history: HistoryStore
) -> None:
    made = await history.ensure_days(D21, D23 + 1)
    assert made == ["history_20261121", "history_20261122", "history_20261123"]
    assert await history.ensure_days(D21, D23 + 1) == made  # idempotent
    refs = await claimed(repo, [1, 2])
    old = attempt(1, NOW, finished_ms=D21 + 5)  # an attempt that ended the day before
    await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW, history=[old, attempt(2, NOW)])
    assert await history.drop_days_before(D22) == ["history_20261121"]
    assert [name for _, name in await history.days()] == ["history_20261122", "history_20261123"]
    assert await history.attempts("sms", "1") == []
    assert len(await history.attempts("sms", "2")) == 1
    assert await history.drop_days_before(D22) == []


# -- reading: a job's attempts, pages, the SLA ------------------------------------------------


async def seed_history(repo: Repo, orders: Repo) -> None:
    """Ten attempts over two days: sms 1-6 (1 retried twice, then ok), orders A and B."""
    refs = await claimed(repo, [1, 2, 3, 4, 5, 6])
    done = [attempt(k, NOW, finished_ms=NOW + 10 * k) for k in (2, 3, 4, 5, 6)]
    retry_1 = attempt(1, NOW, number=1, finished_ms=D21 + 5, outcome=Outcome.RETRY, error="e")
    retry_2 = attempt(1, NOW, number=2, finished_ms=D21 + 6, outcome=Outcome.RETRY, error="e")
    ok_3 = attempt(1, NOW, number=3, finished_ms=NOW + 5)
    await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW, history=[retry_1, retry_2, ok_3, *done])
    at = EPOCH + timedelta(milliseconds=NOW)
    await orders.insert(
        [OrderEntity(order_id=k, expires_at=at, customer_id=1, amount_cents=5) for k in "AB"],
        now_ms=NOW,
    )
    jobs = await orders.claim_due(N1, now_ms=NOW, before_ms=NOW + 1, since_ms=D20, limit=10)
    failed = attempt("A", NOW, finished_ms=NOW + 100, outcome=Outcome.FAILED, error="x")
    await orders.mark_done(
        N1.epoch, [j.ref for j in jobs], fired_at_ms=NOW, history=[failed, attempt("B", NOW)]
    )


async def test_a_jobs_attempts_come_newest_first_across_days(
    make_repo: MakeRepo, history: HistoryStore
) -> None:
    await seed_history(await make_repo(), await make_repo(ORDERS))
    assert rows_of(await history.attempts("sms", "1")) == [
        ("1", 3, "OK"),
        ("1", 2, "RETRY"),
        ("1", 1, "RETRY"),
    ]
    assert rows_of(await history.attempts("sms", "1", limit=2)) == [
        ("1", 3, "OK"),
        ("1", 2, "RETRY"),
    ]
    assert await history.attempts("sms", "99") == []


async def test_pages_follow_the_keyset_newest_first_and_filter(
    make_repo: MakeRepo, history: HistoryStore
) -> None:
    await seed_history(await make_repo(), await make_repo(ORDERS))
    every = await history.page(HistoryFilter(), limit=100)
    assert len(every) == 10
    keys = [(r.finished_ms, r.entity, r.job_id, r.at_ms, r.attempt) for r in every]
    assert keys == sorted(keys, reverse=True)
    paged: list[HistoryRow] = []
    after: HistoryCursor | None = None
    while True:
        page = await history.page(HistoryFilter(), after=after, limit=2)
        if not page:
            break
        paged += page
        after = HistoryCursor.decode(page[-1].cursor.encode())
    assert paged == every
    by_outcome = await history.page(HistoryFilter(outcome=Outcome.RETRY))
    assert rows_of(by_outcome) == [("1", 2, "RETRY"), ("1", 1, "RETRY")]
    orders = await history.page(HistoryFilter(entity="orders"))
    assert [r.job_id for r in orders] == ["A", "B"] or [r.job_id for r in orders] == ["B", "A"]
    window = await history.page(HistoryFilter(start_ms=NOW + 20, end_ms=NOW + 61))
    assert sorted(r.job_id for r in window) == ["2", "3", "4", "5", "6", "B"]
    assert await history.page(HistoryFilter(entity="sms", start_ms=D23)) == []


async def test_sla_counts_in_the_store_and_samples_for_percentiles(
    make_repo: MakeRepo, history: HistoryStore
) -> None:
    repo = await make_repo()
    refs = await claimed(repo, list(range(10)))
    # Lateness 0, 100, ..., 900 ms (fired_ms - due); duration 5 ms each; one failed, one missed.
    rows = [
        attempt(k, NOW, finished_ms=NOW + 100 * k + 5, fired_ms=NOW + 100 * k) for k in range(8)
    ]
    rows.append(attempt(8, NOW, finished_ms=NOW + 900, fired_ms=NOW + 895, outcome=Outcome.FAILED))
    rows.append(attempt(9, NOW, finished_ms=NOW + 950, fired_ms=0, outcome=Outcome.MISSED))
    await repo.mark_done(N1.epoch, refs, fired_at_ms=NOW, history=rows)
    window: dict[str, Any] = {"start_ms": NOW - HOUR, "end_ms": NOW + HOUR}
    counts = await history.sla_counts(late_threshold_ms=450, **window)
    sample = await history.sla_sample(limit=100, **window)
    report = summarize(counts, sample, late_threshold_ms=450, **window)
    total = report.total
    assert (total.fired, total.ok, total.failed, total.missed) == (9, 8, 1, 0 + 1)
    assert total.late == 4  # 500, 600, 700 and the failed one's 895
    assert total.late_share == pytest.approx(4 / 9)
    assert total.failed_share == pytest.approx(1 / 9)
    assert (total.lateness_p50_ms, total.lateness_p99_ms) == (400, 895)
    assert (total.duration_p50_ms, total.duration_p99_ms) == (5, 5)
    assert [(g.entity, g.category) for g in report.groups] == [("sms", "")]
    assert await history.sla_counts(late_threshold_ms=450, entity="orders", **window) == []
    assert len(await history.sla_sample(limit=3, **window)) == 3
