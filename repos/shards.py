"""Pure shard math: which bucket a timestamp falls in, its name, its bounds.

A shard is one period (a UTC day or hour) of sharding time. Its *bucket* is the start of that
period in epoch milliseconds; its *suffix* (``20261122`` or ``2026112213``) names the table
(``sms_20261122``) or the partition (``p20261122``). Everything here is a function of its
arguments: no clock, no I/O.

Identifiers that end up formatted into SQL pass through :func:`check_identifier` first, so a
prefix such as ``sms; DROP TABLE x`` never reaches a statement.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from repos.errors import InvalidIdentifier

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
#: MySQL's identifier limit; leaves room for the ``_YYYYMMDDHH`` suffix on table prefixes.
MAX_IDENTIFIER = 64
MAX_PREFIX = MAX_IDENTIFIER - 11

T = TypeVar("T")


class Granularity(StrEnum):
    """How much sharding time one shard covers."""

    DAY = "day"  #: one shard per UTC day, suffix YYYYMMDD
    HOUR = "hour"  #: one shard per UTC hour, suffix YYYYMMDDHH

    @property
    def span_ms(self) -> int:
        return 86_400_000 if self is Granularity.DAY else 3_600_000

    @property
    def _format(self) -> str:
        return "%Y%m%d" if self is Granularity.DAY else "%Y%m%d%H"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardBounds:
    """One shard: rows whose sharding time t satisfies start_ms <= t < end_ms."""

    suffix: str
    start_ms: int
    end_ms: int


def check_identifier(
    what: str, value: str, *, max_length: int = MAX_IDENTIFIER, entity: str | None = None
) -> str:
    """Return `value` if it is safe to format into SQL, else raise InvalidIdentifier."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value) or len(value) > max_length:
        raise InvalidIdentifier(
            what,
            value,
            "lowercase letters, digits and _, not starting with a digit, "
            f"at most {max_length} characters",
            entity=entity,
        )
    return value


def bucket_of(at_ms: int, granularity: Granularity) -> int:
    """Start (epoch ms) of the shard holding `at_ms`."""
    return at_ms - at_ms % granularity.span_ms


def bounds_of(at_ms: int, granularity: Granularity) -> ShardBounds:
    start = bucket_of(at_ms, granularity)
    stamp = datetime.fromtimestamp(start / 1000, UTC).strftime(granularity._format)
    return ShardBounds(suffix=stamp, start_ms=start, end_ms=start + granularity.span_ms)


def group_by_shard(
    items: Iterable[T], at_ms: Callable[[T], int], granularity: Granularity
) -> dict[ShardBounds, list[T]]:
    """Items grouped by the shard their time falls in, oldest shard first.

    The bounds (and their formatted suffix) are made once per shard, not once per item: on a
    1,000-row insert that was a fifth of the adapter's time. Pass a C-level `at_ms`
    (operator.itemgetter, attrgetter): the usual batch then costs no Python call per item.
    """
    span = granularity.span_ms
    items = list(items)
    if not items:
        return {}
    times = list(map(at_ms, items))
    first, last = min(times), max(times)
    if first - first % span == last - last % span:  # the usual batch: one shard, no grouping
        return {bounds_of(first, granularity): items}
    by_start: dict[int, list[T]] = {}
    for item, t in zip(items, times, strict=True):
        by_start.setdefault(t - t % span, []).append(item)
    return {bounds_of(start, granularity): by_start[start] for start in sorted(by_start)}


def parse_suffix(suffix: str, granularity: Granularity) -> ShardBounds | None:
    """Bounds of a shard named by `suffix`, or None if the suffix is not one of ours."""
    digits = 8 if granularity is Granularity.DAY else 10
    if len(suffix) != digits or not suffix.isdigit():
        return None
    try:
        start = datetime.strptime(suffix, granularity._format).replace(tzinfo=UTC)
    except ValueError:
        return None
    return bounds_of(int(start.timestamp() * 1000), granularity)


def read_shard_names(
    names: Iterable[str], head: str, granularity: Granularity
) -> tuple[dict[ShardBounds, str], frozenset[str]]:
    """Split catalogue names into our shards (bounds -> name, oldest first) and the rest.

    A shard name is `head` (``sms_``, or ``p`` for a partition) plus a suffix that parses at
    this granularity. Anything else (``sms_backup``, ``sms_2026``, a day shard under hour
    granularity) is returned as ignored: never read, written nor dropped.
    """
    shards: dict[ShardBounds, str] = {}
    ignored = set()
    for name in names:
        bounds = parse_suffix(name[len(head) :], granularity) if name.startswith(head) else None
        if bounds is None:
            ignored.add(name)
        else:
            shards[bounds] = name
    return dict(sorted(shards.items(), key=lambda item: item[0].start_ms)), frozenset(ignored)


def shards_between(start_ms: int, end_ms: int, granularity: Granularity) -> list[ShardBounds]:
    """Every shard overlapping [start_ms, end_ms), oldest first."""
    span = granularity.span_ms
    return [
        bounds_of(b, granularity) for b in range(bucket_of(start_ms, granularity), end_ms, span)
    ]
