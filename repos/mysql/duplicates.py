"""Which id broke a MySQL insert, and why: the server names only the key value that collided.

Pure functions of the error, the rows of the call and the rows stored under the id; the adapter
reads those (``get``) after the insert was rolled back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from repos.base import StoredRow
from repos.entity import EncodedRow
from repos.errors import DuplicateJob
from repos.shards import Granularity, ShardBounds, bounds_of, bucket_of

_DUPLICATE = re.compile(r"Duplicate entry '(.*)' for key")


def duplicate_entry(cause: BaseException) -> str:
    """The key value a duplicate-key error names, or ``?``."""
    found = _DUPLICATE.search(str(cause))
    return found.group(1) if found else "?"


def row_of_entry(
    entry: str, in_flight: Sequence[EncodedRow], granularity: Granularity
) -> tuple[EncodedRow, ShardBounds] | None:
    """The row of the failed statement whose primary key is `entry`, with its shard."""
    for row in in_flight:
        bounds = bounds_of(row.at_ms, granularity)
        # The entry is the primary key: `id` (multi-table) or `id-shard_at` (partitioned).
        if entry in (str(row.key), f"{row.key}-{bounds.start_ms}"):
            return row, bounds
    return None


def duplicate_of(
    entity: str,
    row: EncodedRow,
    shard: ShardBounds,
    shard_name: str,
    *,
    stored: Sequence[StoredRow],
    rows: Sequence[EncodedRow],
    granularity: Granularity,
) -> DuplicateJob:
    """The error for `row`, given the rows `stored` under its id and the `rows` of the call."""
    key = row.key
    for found in stored:
        if bucket_of(found.at_ms, granularity) == shard.start_ms:
            status = getattr(found.status, "name", str(found.status))
            return DuplicateJob(entity, key, shard_name, status=status)
    # Not stored: the earlier copy was this call's own, rolled back with it.
    twice = sum(
        1 for r in rows if r.key == key and bucket_of(r.at_ms, granularity) == shard.start_ms
    )
    return DuplicateJob(entity, key, shard_name, in_batch=twice > 1)
