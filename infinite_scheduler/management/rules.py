"""Which operation a job's state allows, and the write it makes: pure, on the row as read.

The service reads a row, asks :func:`decide`, and writes the answer conditionally on the state
it read (repos/control.py), so a row that moved on meanwhile is never written over. Refusals
name the state and why; the service raises them as JobStateRefused.

A CLAIMED row is held by a node that may fire it. A cancel or pause of it is posted to that
node (the revocations table, polled every near_poll_interval_s) and stops it when it lands at
least CLAIM_REACH_MS before the job is due; closer than that the job may be firing, and the
change is refused. A claimed row is never rescheduled or run now: its node would fire it at
the old time as well. Pause it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from repos.base import PAUSED_EPOCH, RowRef, Status, StoredRow, status_label
from repos.control import Transition

#: A cancel or pause reaches a claimed job if it lands this long before the job is due: the
#: node holding it reads its revocations every near poll (0.5 s by default).
CLAIM_REACH_MS = 1000


class Operation(StrEnum):
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RUN_NOW = "run-now"
    RESCHEDULE = "reschedule"


#: The states each operation takes a job from.
ACCEPTS: dict[Operation, frozenset[Status]] = {
    Operation.CANCEL: frozenset({Status.PENDING, Status.CLAIMED, Status.WAITING, Status.PAUSED}),
    Operation.PAUSE: frozenset({Status.PENDING, Status.CLAIMED}),
    Operation.RESUME: frozenset({Status.PAUSED}),
    Operation.RUN_NOW: frozenset({Status.PENDING, Status.PAUSED}),
    Operation.RESCHEDULE: frozenset({Status.PENDING, Status.PAUSED}),
}
_WHY_NOT: dict[Status | int, str] = {
    Status.DONE: "it fired already",
    Status.FAILED: "it failed after its last attempt",
    Status.CANCELLED: "it was cancelled",
    Status.MISSED: "it was dropped as missed (misfire policy)",
    Status.WAITING: "it waits for its dependencies; cancel it, or let them finish",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    state: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """The row to another sharding time (and due time), from the state it is seen in."""

    ref: RowRef
    seen_status: int
    seen_epoch: int
    at_ms: int
    due_ms: int


Change = Transition | Move


def decide(
    operation: Operation,
    row: StoredRow,
    *,
    now_ms: int,
    at_ms: int | None = None,
    reachable: bool = True,
) -> list[Change] | Refusal:
    """The writes `operation` makes on `row` at `now_ms`, in order, or why it may not.

    `at_ms`: the new time of a reschedule. `reachable`: whether the row's shard is one the
    engines' claims look in now (run-now of a job far ahead moves it to now)."""
    refusal = _refusal(operation, row, now_ms)
    if refusal is not None:
        return refusal
    if operation is Operation.CANCEL:
        # A claimed row keeps its epoch (as repos' cancel does); a waiting one stays out of
        # the PENDING range already; the rest leave it (-1).
        keep = row.status in (Status.CLAIMED, Status.WAITING)
        return [_to(row, Status.CANCELLED, row.claim_epoch if keep else -1)]
    if operation is Operation.PAUSE:
        return [_to(row, Status.PAUSED, PAUSED_EPOCH, release=row.status == Status.CLAIMED)]
    if operation is Operation.RESUME:
        return [_to(row, Status.PENDING, 0)]
    if operation is Operation.RUN_NOW:
        now = _to(row, Status.PENDING, 0, due_ms=now_ms)
        if reachable:
            return [now]
        ref = RowRef(row.key, row.at_ms)
        return [now, Move(ref=ref, seen_status=0, seen_epoch=0, at_ms=now_ms, due_ms=now_ms)]
    assert at_ms is not None, "a reschedule names its new time"
    ref = RowRef(row.key, row.at_ms)
    seen_status, seen_epoch = int(row.status), row.claim_epoch
    return [
        Move(ref=ref, seen_status=seen_status, seen_epoch=seen_epoch, at_ms=at_ms, due_ms=at_ms)
    ]


def _to(
    row: StoredRow, status: Status, epoch: int, *, due_ms: int | None = None, release: bool = False
) -> Transition:
    """The row, from the state it was read in, to `status` and claim_epoch `epoch`."""
    return Transition(
        ref=RowRef(row.key, row.at_ms),
        seen_status=int(row.status),
        seen_epoch=row.claim_epoch,
        status=status,
        epoch=epoch,
        due_ms=due_ms,
        release=release,
    )


def _refusal(operation: Operation, row: StoredRow, now_ms: int) -> Refusal | None:
    status, state = row.status, status_label(row.status)
    if status in ACCEPTS[operation]:
        if status == Status.CLAIMED and row.due_ms - now_ms < CLAIM_REACH_MS:
            return Refusal(
                state=state,
                reason=f"node {row.claimed_by} holds it and it is due in"
                f" {row.due_ms - now_ms} ms, under {CLAIM_REACH_MS} ms: it may be firing",
            )
        return None
    if status == Status.CLAIMED:
        reason = f"node {row.claimed_by} holds it (epoch {row.claim_epoch}); pause it first"
    elif status == operation_target(operation):
        reason = f"it is {state} already"
    elif operation is Operation.RESUME and status == Status.PENDING:
        reason = "it is not paused"
    else:
        reason = _WHY_NOT.get(status, "a status this version does not know")
    return Refusal(state=state, reason=reason)


def operation_target(operation: Operation) -> Status | None:
    """The state an operation leaves a job in, where it is one (pause: PAUSED)."""
    return {Operation.PAUSE: Status.PAUSED, Operation.CANCEL: Status.CANCELLED}.get(operation)
