"""The pure parts of the execution history: errors kept bounded, day tables, cursors, windows,
and the SLA arithmetic over a known set of rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infinite_scheduler.history import parse_window
from repos.history import (
    MAX_ERROR_CHARS,
    Attempt,
    BadCursor,
    HistoryCursor,
    Outcome,
    SlaCount,
    SlaSample,
    bounded_error,
    by_table,
    outcome_named,
    percentile,
    summarize,
)
from repos.mysql.history import text_literal

D22 = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 1000)


def attempt(finished_ms: int) -> Attempt:
    return Attempt(1, D22, 1, "n", "", D22, finished_ms, finished_ms, Outcome.OK, None)


def test_an_error_is_kept_whole_up_to_the_limit_and_cut_with_a_mark_beyond() -> None:
    assert bounded_error(None) is None
    assert bounded_error("x" * MAX_ERROR_CHARS) == "x" * MAX_ERROR_CHARS
    cut = bounded_error("y" * 10 * MAX_ERROR_CHARS)
    assert cut is not None and len(cut) == MAX_ERROR_CHARS and cut.endswith(" ...[truncated]")


def test_attempts_go_to_the_table_of_the_day_they_ended() -> None:
    late, early = attempt(D22 - 1), attempt(D22)
    assert by_table([early, late, early]) == {
        "history_20261122": [early, early],
        "history_20261121": [late],
    }


def test_attempts_of_one_day_go_to_its_table_whole() -> None:
    early, later = attempt(D22), attempt(D22 + 86_399_999)
    assert by_table([later, early]) == {"history_20261122": [later, early]}
    assert by_table([]) == {}


def test_short_texts_are_plain_literals_only_when_nothing_in_them_can_end_one() -> None:
    assert text_literal("node-1.a:b@c/d+e_F") == "'node-1.a:b@c/d+e_F'"
    assert text_literal("") == "''"
    for odd in ("n'1", "a\\b", "é", "a b", "x;--"):
        assert text_literal(odd) == f"_utf8mb4 X'{odd.encode().hex()}'"


def test_a_cursor_round_trips_and_anything_else_is_refused_clearly() -> None:
    cursor = HistoryCursor(D22, "orders", "ORD-'1\"é", D22 - 5, 3)
    assert HistoryCursor.decode(cursor.encode()) == cursor
    for bad in ("", "not a cursor", "W10", HistoryCursor(1, "a", "b", 2, 3).encode()[:-4]):
        with pytest.raises(BadCursor, match="is not a cursor a history page returned"):
            HistoryCursor.decode(bad)


def test_outcomes_are_named_in_any_case_and_an_unknown_one_lists_the_allowed() -> None:
    assert outcome_named("Timeout") is Outcome.TIMEOUT
    with pytest.raises(ValueError, match="outcome 'late' is not one of ok, failed, timeout"):
        outcome_named("late")


@pytest.mark.parametrize(
    ("text", "ms"), [("90s", 90_000), ("15m", 900_000), ("1h", 3_600_000), ("7d", 604_800_000),
                     ("30", 30_000), ("250ms", 250), ("1.5h", 5_400_000)]
)  # fmt: skip
def test_a_window_reads_as_a_duration(text: str, ms: int) -> None:
    assert parse_window(text) == ms


@pytest.mark.parametrize("text", ["", "0s", "-1h", "1w", "soon", "1 h h"])
def test_a_window_that_is_no_positive_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a positive duration"):
        parse_window(text)


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 99, 100)] == [50, 99, 100]
    assert percentile([7], 99) == 7
    assert percentile([], 50) is None


def test_the_sla_of_a_known_set_of_rows() -> None:
    """sms: 8 ok (2 late), 1 retry, 1 failed, 1 missed; orders/billing: 2 ok, 1 timeout."""
    counts = [
        SlaCount("sms", "", Outcome.OK, 8, 2),
        SlaCount("sms", "", Outcome.RETRY, 1, 0),
        SlaCount("sms", "", Outcome.FAILED, 1, 1),
        SlaCount("sms", "", Outcome.MISSED, 1, 0),
        SlaCount("orders", "billing", Outcome.OK, 2, 0),
        SlaCount("orders", "billing", Outcome.TIMEOUT, 1, 0),
    ]
    sample = [SlaSample("sms", "", late, 10 * i) for i, late in enumerate(range(0, 1000, 100))]
    sample += [SlaSample("orders", "billing", 5, 30_000), SlaSample("orders", "billing", -3, 1)]
    report = summarize(counts, sample, start_ms=0, end_ms=10, late_threshold_ms=500)
    sms, orders = report.groups[1], report.groups[0]
    assert (orders.entity, orders.category, sms.entity) == ("orders", "billing", "sms")
    assert (sms.fired, sms.ok, sms.retried, sms.failed, sms.missed, sms.late) == (10, 8, 1, 1, 1, 3)
    assert (sms.late_share, sms.failed_share) == (0.3, 0.2)
    assert (sms.lateness_p50_ms, sms.lateness_p99_ms) == (400, 900)
    assert (sms.duration_p50_ms, sms.duration_p99_ms, sms.sampled) == (40, 90, 10)
    assert (orders.fired, orders.timeout) == (3, 1)
    assert orders.failed_share == pytest.approx(1 / 3)
    assert orders.lateness_p50_ms == 0  # fired early (a clock ahead): no negative lateness
    total = report.total
    assert (total.entity, total.fired, total.late, total.missed, total.sampled) == (
        "*",
        13,
        3,
        1,
        12,
    )
    assert total.failed_share == pytest.approx(3 / 13)
    empty = summarize([], [], start_ms=0, end_ms=10, late_threshold_ms=500).total
    assert (empty.fired, empty.late_share, empty.lateness_p99_ms) == (0, 0.0, None)
