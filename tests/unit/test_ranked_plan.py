"""repos/ranked.py's plan of a backlog's claim: the window bound, what to pick, when to claim
again. The stores' side is tests/integration/test_ranked_claims.py."""

from __future__ import annotations

import pytest

from repos import ranked
from repos.ranked import Candidate, RankedClaim, window_ms


def test_the_window_is_999_points_of_boost() -> None:
    assert window_ms(999) == 60_000  # a minute
    assert window_ms(10) == 5_994_000
    assert window_ms(7) == 8_562_858  # rounded up: the bound may only read more
    assert window_ms(0) is None


def test_step_1_reads_to_the_window_past_the_earliest_shards_nth_oldest() -> None:
    plan = RankedClaim(limit=5, boost_per_minute=999)
    assert plan.nth_offset() == 4
    assert plan.scan_before(10_000_000, [1_000_000, 2_000_000]) == 1_060_001
    assert plan.scan_before(1_030_000, [1_000_000]) == 1_030_000  # before_ms comes first
    assert plan.scan_before(10_000_000, []) == 10_000_000  # no shard has 5 due rows


def test_without_a_boost_there_is_no_window() -> None:
    plan = RankedClaim(limit=5, boost_per_minute=0)
    assert plan.nth_offset() is None
    assert plan.scan_before(10_000_000, [1_000_000]) == 10_000_000


def test_rows_tried_count_in_the_offset_the_rows_picked_and_the_rows_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ranked, "RANKED_SCAN_ROWS", 4)
    plan = RankedClaim(limit=3, boost_per_minute=10)
    assert (plan.pick_rows(), plan.scan_rows()) == (4, 4)
    picked = plan.pick([Candidate(k, 100 + k, 500, 0) for k in range(4)])
    assert [c.key for c in picked] == [0, 1, 2] and not plan.drained
    assert plan.took(1, 3)  # two were taken by others meanwhile: again
    assert (plan.need(), plan.nth_offset(), plan.pick_rows(), plan.scan_rows()) == (2, 4, 6, 6)
    again = plan.pick([Candidate(k, 100 + k, 500, 0) for k in range(5)])
    assert [c.key for c in again] == [3, 4] and plan.drained  # 0, 1, 2 tried already


def test_a_claim_stops_when_full_drained_or_out_of_rounds() -> None:
    full = RankedClaim(limit=3, boost_per_minute=10)
    full.pick([Candidate(k, k, 500, 0) for k in range(4)])
    assert not full.took(3, 3)
    drained = RankedClaim(limit=3, boost_per_minute=10)
    drained.pick([Candidate(k, k, 500, 0) for k in range(2)])
    assert drained.drained and not drained.took(1, 2)
    raced = RankedClaim(limit=3, boost_per_minute=10)
    for _ in range(ranked.CLAIM_ROUNDS - 1):
        raced.pick([Candidate(k, k, 500, 0) for k in range(100)])
        assert raced.took(0, 3)
    raced.pick([Candidate(k, k, 500, 0) for k in range(100)])
    assert not raced.took(0, 3)


def test_the_same_id_in_two_shards_is_two_rows() -> None:
    plan = RankedClaim(limit=2, boost_per_minute=10)
    picked = plan.pick([Candidate(7, 1, 500, 0), Candidate(7, 2, 500, 1), Candidate(8, 3, 500, 0)])
    assert [(c.key, c.shard) for c in picked] == [(7, 0), (7, 1)]
