"""Statement building shared by the SQL adapters."""

from __future__ import annotations

from repos.statements import chunks, chunks_within


def test_chunks_are_consecutive_slices_of_at_most_size() -> None:
    assert list(chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(chunks([], 3)) == []


def test_chunks_within_bound_count_and_weight_keeping_order() -> None:
    items = [5, 5, 5, 5, 5, 5, 5]
    assert list(chunks_within(items, 3, 100, items)) == [[5, 5, 5], [5, 5, 5], [5]]
    assert list(chunks_within(items, 10, 10, items)) == [[5, 5], [5, 5], [5, 5], [5]]
    heavy = [3, 40, 3, 3]
    assert list(chunks_within(heavy, 10, 10, heavy)) == [[3], [40], [3, 3]]  # heavy alone
    assert list(chunks_within(list("abcd"), 10, 10, heavy)) == [["a"], ["b"], ["c", "d"]]
    assert list(chunks_within([], 10, 10, [])) == []
