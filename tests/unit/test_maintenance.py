"""The pure part of the shard lifecycle: which periods are made ahead, which shards expire, which
catalogue names are shards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infinite_scheduler.maintenance import ahead_window, expiry_cutoff_ms, periods_ahead
from repos.base import ShardPolicy
from repos.shards import Granularity, read_shard_names

DAY = Granularity.DAY
HOUR = Granularity.HOUR
B0 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("granularity", [DAY, HOUR])
@pytest.mark.parametrize("offset_ms", [0, 1, -1])
def test_ahead_window_is_the_current_period_and_create_ahead_more(
    granularity: Granularity, offset_ms: int
) -> None:
    span = granularity.span_ms
    now_ms = B0 + span + offset_ms  # at, just after and just before a period boundary
    start = B0 + span if offset_ms >= 0 else B0
    assert ahead_window(now_ms, granularity, 3) == (start, start + 4 * span)


@pytest.mark.parametrize("granularity", [DAY, HOUR])
def test_periods_ahead_counts_whole_periods_after_the_current_one_as_time_passes(
    granularity: Granularity,
) -> None:
    span = granularity.span_ms
    _, until_ms = ahead_window(B0, granularity, 3)  # what a pass at B0 made
    assert periods_ahead(until_ms, B0, granularity) == 3
    assert periods_ahead(until_ms, B0 + span - 1, granularity) == 3  # same period
    assert periods_ahead(until_ms, B0 + span, granularity) == 2  # no pass since
    assert periods_ahead(until_ms, B0 + 3 * span, granularity) == 0  # the current one only
    assert periods_ahead(until_ms, B0 + 4 * span, granularity) == -1  # not even that
    assert periods_ahead(until_ms, B0 + 40 * span, granularity) == -1


def test_expiry_cutoff_is_retention_before_now() -> None:
    policy = ShardPolicy(granularity=HOUR, retention_ms=7_200_000)
    assert expiry_cutoff_ms(B0, policy) == B0 - 7_200_000


def test_read_shard_names_keeps_ours_oldest_first_and_returns_the_rest() -> None:
    names = [
        "sms_20261121",
        "sms_backup",
        "sms_20261120",
        "sms_2026",
        "sms_2026112000",
        "SMS_20261122",
    ]
    shards, ignored = read_shard_names(names, "sms_", DAY)
    assert list(shards.values()) == ["sms_20261120", "sms_20261121"]
    assert [b.start_ms for b in shards] == [B0, B0 + DAY.span_ms]
    assert ignored == {"sms_backup", "sms_2026", "sms_2026112000", "SMS_20261122"}


def test_read_shard_names_reads_partitions_by_their_p_prefix() -> None:
    shards, ignored = read_shard_names(["p2026112000", "pold", "p20261120"], "p", HOUR)
    assert list(shards.values()) == ["p2026112000"]
    assert ignored == {"pold", "p20261120"}
