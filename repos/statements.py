"""What both SQL adapters do alike around their statements: batches, the state of new rows,
the claimant's check, the arguments of mark_failed() and find_unknown_status(). The statements themselves
are in each dialect's sql module, which name their parameters alike."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

from repos.base import STATUS_RANGE, WAITING_EPOCH, Claimant, Edge, Failure, OnDuplicate, Status


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


def check_claimant(claimant: Claimant) -> Claimant:
    """A claim's epoch must be positive: 0 means PENDING, so a claim under it would be one no
    write could tell from a row waiting to be claimed (the claim index's PENDING range)."""
    if claimant.epoch <= 0:
        raise ValueError(f"a claim needs a positive epoch, not {claimant.epoch}")
    return claimant


def insert_state(
    claimed_by: Claimant | None, now_ms: int, *, waiting: bool = False
) -> tuple[int, int, int, str | None, int | None]:
    """(status, attempts, claim_epoch, claimed_by, claimed_at) of newly inserted rows: PENDING,
    already CLAIMED by the inserting node when it will hold them itself (schedule()), or
    WAITING for their dependencies (out of the claim index's PENDING range)."""
    if waiting:
        return (Status.WAITING, 0, WAITING_EPOCH, None, None)
    if claimed_by is not None:
        node_id, epoch = check_claimant(claimed_by)
        return (Status.CLAIMED, 1, epoch, node_id, now_ms)
    return (Status.PENDING, 0, 0, None, None)


def check_edges(
    edges: Sequence[Edge], claimed_by: Claimant | None, on_duplicate: OnDuplicate
) -> bool:
    """Whether an insert stores its rows WAITING (it has edges); ValueError for edges with a
    claim (a waiting row is nobody's yet) or with on_duplicate="ignore" (a row stored already
    would be given edges that are not its own: the dependencies of another job)."""
    if not edges:
        return False
    if claimed_by is not None:
        raise ValueError("rows stored with dependencies are WAITING: they cannot be claimed too")
    if on_duplicate != "error":
        raise ValueError(
            "jobs with dependencies cannot be stored with on_duplicate='ignore': a job already"
            f" stored would take the dependencies of the new one (job {edges[0].job})"
        )
    return True


def failure_args(failure: Failure, epoch: int, now_ms: int) -> dict[str, Any]:
    """MARK_FAILED's values for one failure: PENDING again at its retry time (claim_epoch 0),
    or its status (keeping the epoch)."""
    retry = failure.retry_at_ms is not None
    return {
        "status": int(Status.PENDING if retry else failure.status),
        "retry_at_ms": failure.retry_at_ms,
        "error": failure.error[:MAX_ERROR_CHARS],
        "fired_at_ms": None if failure.hand_back else now_ms,
        "handed_back": int(failure.hand_back),
        "epoch": epoch,
        "new_epoch": 0 if retry else epoch,
        "key": failure.ref.key,
    }


def unknown_status_args(limit: int, due_before_ms: int | None = None) -> dict[str, int | None]:
    """UNKNOWN_STATUS's values: the status values outside STATUS_RANGE, the due time the rows
    waiting to be claimed are looked at before, and a row at least per shard, whose count
    column says how many there are."""
    first, last = STATUS_RANGE
    return {"first": first, "last": last, "limit": max(1, limit), "due_before_ms": due_before_ms}
