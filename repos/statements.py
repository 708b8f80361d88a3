"""Statement building both SQL adapters share; they differ only in quoting and parameter marks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from repos.base import Status

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items (itertools.batched arrives only in 3.12)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def chunks_within(
    items: Sequence[T], size: int, max_weight: int, weight: Callable[[T], int]
) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items and, where items allow, at most
    `max_weight` in total (a single heavier item is a slice of its own)."""
    start = 0
    while start < len(items):
        end = min(start + size, len(items))
        if sum(map(weight, items[start:end])) <= max_weight:  # the usual batch: one C pass
            yield items[start:end]
            start = end
            continue
        total = 0
        for i in range(start, end):
            total += weight(items[i])
            if total > max_weight and i > start:
                end = i
                break
        yield items[start:end]
        start = end


def insert_state(claimed_by: str | None, now_ms: int) -> tuple[int, int, str | None, int | None]:
    """(status, attempts, claimed_by, claimed_at) of newly inserted rows: PENDING, or already
    CLAIMED by the inserting node when it will hold them itself (the engine's schedule())."""
    if claimed_by:
        return (Status.CLAIMED, 1, claimed_by, now_ms)
    return (Status.PENDING, 0, None, None)


def marks(n: int, mark: str) -> str:
    """`n` parameter marks for an ``IN (...)`` list."""
    return ", ".join([mark] * n)


def release_statement(
    template: str,
    node_id: str | None,
    refs: Sequence[Any] | None,
    claimed_at_ms: int | None,
    *,
    mark: str,
    id_filter: str,
) -> tuple[str, tuple[Any, ...]]:
    """The release UPDATE narrowed to what the caller named, and its leading arguments.

    `template` ends in ``{where}``; `id_filter` (``AND id IN ({keys})``) is appended when
    `refs` are given and keeps its ``{keys}`` for the caller to fill per shard.
    """
    if node_id is None and (refs is not None or claimed_at_ms is not None):
        raise ValueError("release(refs=..., claimed_at_ms=...) needs the node_id that claimed")
    where, args = "", list[Any]()
    if node_id is not None:
        where, args = f" AND claimed_by = {mark}", [node_id]
    if claimed_at_ms is not None:
        where += f" AND claimed_at = {mark}"
        args.append(claimed_at_ms)
    if refs is not None:
        where += id_filter
    return template.replace("{where}", where), tuple(args)
