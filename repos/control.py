"""The storage contract of job control (infinite_scheduler/management): find rows by filter,
move one row from the state it was seen in to another, and move one row to another time.

Kept apart from :class:`repos.base.ShardingRepository`, the engine's contract: an operator's
calls never run on the hot path, and the engine never needs them. Every adapter implements
both, and passes both contract suites.

Every write here is **conditional on what the caller saw**: the row's status and claim epoch.
The caller reads a row, decides (infinite_scheduler/management/rules.py), and writes "if it is
still so"; a row that moved on meanwhile (claimed, fired, taken over) is left alone and the
caller is told, so no decision is ever written over a state it was not made for.

A change to a CLAIMED row is also written, in the same transaction, to the store's
``revocations`` table (repos.cluster.REVOCATIONS_TABLE), naming the claim's epoch: the node holding
the row reads its epoch's revocations every near poll and drops the job from its wheel
(infinite_scheduler/revocations.py). Its payload read, its ack and its release are conditional
on the row still being CLAIMED under its epoch (repos/base.py) and change nothing either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from repos.base import RowRef, Status, StoredRow
from repos.shards import ShardBounds

S = TypeVar("S")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """Which rows find() returns. Every field narrows; None (or empty) narrows nothing.

    Rows come ordered by (sharding time, id), descending if asked: shard by shard, so a page
    reads the shards it needs in order and stops once full.
    """

    #: Status values (raw ints: an unknown one may be asked for too).
    statuses: frozenset[int] = frozenset()
    from_ms: int | None = None  #: sharding time at or after
    before_ms: int | None = None  #: sharding time before
    category: str | None = None  #: the category's name ('' for none)
    #: Ids in [key_from, key_before): a schedule's occurrences (schedules/ids.py) are a range.
    key_from: int | str | None = None
    key_before: int | str | None = None
    descending: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One row from the state it was seen in (`seen_status`, `seen_epoch`) to `status` with
    claim_epoch `epoch`. `due_ms` replaces due_at (None keeps it). `release` clears the claim
    (claimed_by, claimed_at) and hands its attempt back, as release() does: for a claimed row
    that goes back to waiting (PAUSED) rather than finished (CANCELLED)."""

    ref: RowRef
    seen_status: int
    seen_epoch: int
    status: Status
    epoch: int
    due_ms: int | None = None
    release: bool = False


class JobControl(Protocol):
    """Operator reads and writes of one entity type's rows (see the module docstring)."""

    async def find(
        self, query: JobQuery, *, after: RowRef | None = None, limit: int = 100
    ) -> list[StoredRow]:
        """Up to `limit` rows matching `query`, after the row `after` (keyset pagination, in
        the query's order), walking the live shards in order: each shard is asked for at
        most what the page still lacks, and no shard past a full page is read. Rows inserted
        meanwhile before the cursor are not seen; none is seen twice."""
        ...

    async def transition(self, changes: Sequence[Transition]) -> int:
        """Write each change if its row is still in its seen state, all in one transaction;
        return rows changed. Changes of CLAIMED rows are posted as revocations in the same
        transaction."""
        ...

    async def move(
        self, ref: RowRef, *, seen_status: int, seen_epoch: int, at_ms: int, due_ms: int
    ) -> bool:
        """Move a row, if still in its seen state, to sharding time `at_ms` and due_at
        `due_ms`, in one transaction: inserted into the target shard (made first if missing),
        deleted from its own; an update in place when both are one shard. The edges of jobs
        waiting for the row (repos/dependencies.py) move with it in the same transaction: they
        name it by id and time, and its dependents then wait for it at its new time. False: the
        row had moved on, nothing changed. An id already stored in the target shard raises
        DuplicateJob and changes nothing. Not for a CLAIMED row (ValueError)."""
        ...


def check_move(seen_status: int) -> None:
    """A claimed row is never moved: its node would fire it at the old time as well."""
    if seen_status == Status.CLAIMED:
        raise ValueError("a CLAIMED row is not moved: the node holding it would fire it too")


def shards_in_order(
    shards: Iterable[tuple[ShardBounds, S]], query: JobQuery, after: RowRef | None
) -> list[S]:
    """The shards (oldest first in) that can hold rows of `query` past the cursor `after`, in
    the query's order: the ones find() reads, one after the other, until its page is full."""
    low = query.from_ms if query.from_ms is not None else -(2**62)
    high = query.before_ms if query.before_ms is not None else 2**62
    if after is not None and query.descending:
        high = min(high, after.at_ms + 1)
    elif after is not None:
        low = max(low, after.at_ms)
    found = [shard for bounds, shard in shards if bounds.end_ms > low and bounds.start_ms < high]
    return found[::-1] if query.descending else found
