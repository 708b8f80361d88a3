"""What both SQL adapters do alike around their statements: batches, the state of new rows,
the arguments of release(), mark_failed() and find_unknown_status(). The statements themselves
are in each dialect's sql module, which name their parameters alike."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

from repos.base import STATUS_RANGE, Failure, Status


class Sliceable(Protocol):
    """What chunks cut: a list, or an EncodedBatch (a slice of either is one of its kind)."""

    def __len__(self) -> int: ...

    def __getitem__(self: S, span: slice, /) -> S: ...


S = TypeVar("S", bound=Sliceable)

#: Characters of a handler's error kept in last_error.
MAX_ERROR_CHARS = 4000


def chunks(items: S, size: int) -> Iterator[S]:
    """Consecutive slices of at most `size` items (itertools.batched arrives only in 3.12)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def chunks_within(items: S, size: int, max_weight: int, weights: Sequence[int]) -> Iterator[S]:
    """Consecutive slices of at most `size` items and, where items allow, at most
    `max_weight` in total, given the items' `weights` in order (a single heavier item is a
    slice of its own)."""
    start = 0
    while start < len(items):
        end = min(start + size, len(items))
        if sum(weights[start:end]) <= max_weight:  # the usual batch: one C pass
            yield items[start:end]
            start = end
            continue
        total = 0
        for i in range(start, end):
            total += weights[i]
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


def check_release(node_id: str | None, refs: object, claimed_at_ms: int | None) -> None:
    """Refuse a release() narrowed to rows or to a claim instant without the node that claimed:
    those only mean something within one node's claims (ShardingRepository.release)."""
    if node_id is None and (refs is not None or claimed_at_ms is not None):
        raise ValueError("release(refs=..., claimed_at_ms=...) needs the node_id that claimed")


def failure_args(failure: Failure, node_id: str, now_ms: int) -> dict[str, Any]:
    """MARK_FAILED's values for one failure: PENDING again at its retry time, or its status."""
    status = failure.status if failure.retry_at_ms is None else Status.PENDING
    return {
        "status": int(status),
        "retry_at_ms": failure.retry_at_ms,
        "error": failure.error[:MAX_ERROR_CHARS],
        "now_ms": now_ms,
        "node_id": node_id,
        "key": failure.ref.key,
    }


def unknown_status_args(limit: int) -> dict[str, int]:
    """UNKNOWN_STATUS's values: the two index ranges outside STATUS_RANGE, and a row at least
    per shard, whose count column says how many there are."""
    first, last = STATUS_RANGE
    return {"first": first, "last": last, "limit": max(1, limit)}
