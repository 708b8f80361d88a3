"""Status values read from rows: the known ones, and those this version does not know."""

from __future__ import annotations

from repos.base import STATUS_RANGE, ShardInfo, Status, read_status, status_label
from repos.shards import Granularity, bounds_of


def test_known_values_are_contiguous_so_unknown_ones_are_two_index_ranges() -> None:
    # The adapters find unknown values as status < first or > last: a gap would hide some.
    first, last = STATUS_RANGE
    assert sorted(s.value for s in Status) == list(range(first, last + 1))


def test_an_unknown_value_stays_its_raw_int_and_counts_as_unfinished() -> None:
    assert read_status(2) is Status.DONE
    assert (read_status(12), type(read_status(12))) == (12, int)
    assert [status_label(s) for s in (Status.PENDING, 12, -1)] == [
        "PENDING",
        "status 12",
        "status -1",
    ]
    shard = ShardInfo(
        name="sms_20261120",
        bounds=bounds_of(1_795_000_000_000, Granularity.DAY),
        rows={Status.DONE: 5, Status.PENDING: 1, 12: 2},
    )
    assert shard.unfinished == 3
