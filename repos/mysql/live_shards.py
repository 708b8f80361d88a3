"""The shards a MySQL repository last saw in the catalogue, and where a row's statements go.

Listing the shards is a catalogue query, too slow for every claim, so the list is kept for up
to SHARD_CACHE_S. Another repository handle (another node, or the shards CLI) may drop a shard
inside that time: a statement naming it then fails with 1146/1735, and :meth:`again_if_dropped`
reads the list again and runs the statement once more without that shard.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from repos.base import RowRef, StoreError
from repos.mysql.driver import Executor, error_code
from repos.mysql.layouts import Layout, Partitioned, Shard
from repos.shards import Granularity, ShardBounds, bucket_of

T = TypeVar("T")

#: How long a read of the live shards is trusted before claims look again.
SHARD_CACHE_S = 1.0
#: Errors naming a table or partition that is not there: a shard dropped meanwhile.
SHARD_GONE = frozenset({1146, 1735})


class LiveShards:
    """The live shards by start (epoch ms), oldest first, as last read from the catalogue."""

    def __init__(self, layout: Layout, ex: Executor, granularity: Granularity) -> None:
        self._layout = layout
        self._ex = ex
        self._granularity = granularity
        self.by_start: dict[int, Shard] = {}
        self._read_at = float("-inf")

    def __len__(self) -> int:
        return len(self.by_start)

    async def refresh(self) -> list[Shard]:
        """Read the catalogue now (after making or dropping shards, and for rare operations)."""
        shards = await self._layout.discover(self._ex)
        self.by_start = {s.bounds.start_ms: s for s in shards}
        self._read_at = time.monotonic()
        return shards

    async def recent(self) -> list[Shard]:
        """Live shards, re-read at most every SHARD_CACHE_S (another node may have made some)."""
        if time.monotonic() - self._read_at > SHARD_CACHE_S:
            return await self.refresh()
        return list(self.by_start.values())

    async def window(self, start_ms: int, end_ms: int) -> list[Shard]:
        """The recent live shards holding rows of sharding time in [start_ms, end_ms)."""
        shards = await self.recent()
        # A partitioned table keeps rows older than its oldest partition in that partition, so
        # that one answers for every earlier time too (else such rows would fire late).
        oldest = shards[0] if shards and isinstance(self._layout, Partitioned) else None
        return [
            s
            for s in shards
            if s.bounds.end_ms > start_ms and (s.bounds.start_ms < end_ms or s is oldest)
        ]

    def covers(self, bounds: ShardBounds) -> bool:
        return self._layout.covers(self.by_start, bounds)

    def insert_target(self, bounds: ShardBounds) -> str:
        return self._layout.insert_target(self.by_start, bounds)

    def target_of(self, at_ms: int, *, fallback: bool = True) -> str | None:
        """The statement target of the shard holding at_ms; for a shard not in the live list,
        the layout's fallback (partitioned: the whole table) unless `fallback` is off."""
        shard = self.by_start.get(bucket_of(at_ms, self._granularity))
        if shard is not None:
            return shard.target
        return self._layout.fallback_target(at_ms) if fallback else None

    def keys_by_target(
        self, refs: Sequence[RowRef], *, fallback: bool = True
    ) -> dict[str, list[Any]]:
        """The refs' ids by the statement target of their shard (refs of no shard left out)."""
        by_target: dict[str, list[Any]] = defaultdict(list)
        for ref in refs:
            target = self.target_of(ref.at_ms, fallback=fallback)
            if target is not None:
                by_target[target].append(ref.key)
        return by_target

    async def again_if_dropped(self, attempt: Callable[[bool], Awaitable[T]]) -> T:
        """Run `attempt`; if a shard it named was dropped meanwhile (retention, maybe on
        another node, inside SHARD_CACHE_S), read the live shards and run it once more, this
        time leaving out the rows of shards no longer live: they went with their shard. (Not
        the partitioned layout's fallback to the whole table, where the same id may be
        another shard's row.) The argument tells `attempt` whether that fallback is allowed."""
        try:
            return await attempt(True)
        except StoreError as exc:
            if error_code(exc.cause) not in SHARD_GONE:
                raise
        await self.refresh()
        return await attempt(False)
