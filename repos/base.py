"""The storage contract the engine relies on, and the values that cross it.

Every adapter (SQLite, MySQL multi-table, MySQL partitioned) implements
:class:`ShardingRepository` and passes the one contract suite in ``tests/integration``. The
engine imports this module and nothing below it.

Row life cycle (engine columns in brackets)::

    PENDING --claim_due--> CLAIMED --mark_done--> DONE                       [fired_at]
                              |  \\--mark_failed(retry_at)--> PENDING         [due_at, last_error]
                              |  \\--mark_failed(None)-----> FAILED          [last_error]
                              \\--release--> PENDING (attempt handed back; fires once, now)
    PENDING/CLAIMED --cancel--> CANCELLED

Times are epoch milliseconds (UTC), always passed in by the caller: adapters never read a clock,
so that the engine's fake clock reaches the rows too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from repos.entity import EncodedBatch as EncodedBatch
from repos.entity import EncodedRow as EncodedRow
from repos.entity import EntitySpec as EntitySpec
from repos.errors import DuplicateJob as DuplicateJob
from repos.errors import EntitySpecError as EntitySpecError
from repos.errors import PayloadTooLarge as PayloadTooLarge
from repos.errors import SchedulerError as SchedulerError
from repos.errors import ShardExpired as ShardExpired
from repos.errors import StoreError as StoreError
from repos.errors import StoreMissing as StoreMissing
from repos.errors import StoreUnavailable as StoreUnavailable
from repos.shards import Granularity as Granularity
from repos.shards import ShardBounds as ShardBounds
from repos.shards import bucket_of as bucket_of

TEntity = TypeVar("TEntity")
TKey = TypeVar("TKey", bound=int | str)
OnDuplicate = Literal["error", "ignore"]


class Status(IntEnum):
    """A row's state, stored as a TINYINT in ``status``."""

    PENDING = 0  #: waiting for due_at; the only state claim_due picks up
    CLAIMED = 1  #: held in one node's wheel (claimed_by), not yet acknowledged
    DONE = 2  #: handler succeeded (fired_at set)
    FAILED = 3  #: handler failed with no attempts left (last_error kept)
    CANCELLED = 4  #: cancelled before it fired
    MISSED = 5  #: overdue under misfire policy do_nothing: never fired, on purpose


#: States a row never leaves: retention may drop them without loss.
FINISHED = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED, Status.MISSED})
#: The known values are contiguous, so "a value this version does not know" is two index
#: ranges: status < first or status > last (the adapters' unknown-status query binds these).
STATUS_RANGE = (min(Status).value, max(Status).value)
_BY_VALUE = {s.value: s for s in Status}


def read_status(value: int) -> Status | int:
    """The Status of a stored value; a value this version does not know (set by hand, by a
    newer version or by a bug) stays its raw int. Such a row is never claimed (claims take
    PENDING only), so it counts as unfinished and is reported, never a reason to crash."""
    return _BY_VALUE.get(value, value)


def status_label(status: Status | int) -> str:
    """``PENDING``, or ``status 7`` for a value this version does not know."""
    return status.name if isinstance(status, Status) else f"status {status}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardPolicy:
    """How an entity's rows are spread over shards and how long they are kept."""

    granularity: Granularity = Granularity.DAY
    retention_ms: int = 7 * 86_400_000


class RowRef(NamedTuple):
    """Names one stored row: its id and its sharding time (which picks the shard).

    A tuple, not a dataclass: one is made per fired job for its ack, and a frozen dataclass
    cost ten times as much to build and to hash. It equals the plain ``(key, at_ms)`` tuple.
    """

    key: int | str
    at_ms: int


#: A job as the wheel holds it: (key, at_ms, due_ms, attempts, payload). A plain tuple of ints,
#: str and bytes, which the garbage collector stops tracking after one look: a full collection
#: then skips the held jobs (150,000 ClaimedJob objects cost one 30 ms; these tuples ~7 ms).
HeldJob = tuple[int | str, int, int, int, bytes | None]


@dataclass(slots=True)
class ClaimedJob:
    """A row claimed for one node: what the wheel holds until the job fires.

    The payload stays raw bytes; ``EntitySpec.decode`` rebuilds the entity at fire time. It is
    None for a job claimed well ahead of its time (``claim_due(payload_before_ms=...)``) until
    the engine reads it, shortly before the job is due: the only field ever filled in later.
    """

    key: int | str
    at_ms: int  #: sharding time, as written on the entity
    due_ms: int  #: when to fire: at_ms at first, later after a retry
    attempts: int  #: attempts so far, counting this claim
    payload: bytes | None

    @property
    def ref(self) -> RowRef:
        return RowRef(self.key, self.at_ms)

    def held(self) -> HeldJob:
        return (self.key, self.at_ms, self.due_ms, self.attempts, self.payload)

    @classmethod
    def from_held(cls, held: HeldJob) -> ClaimedJob:
        return cls(*held)

    @classmethod
    def from_claim(cls, r: Sequence[Any]) -> ClaimedJob:
        """From a claimed row (id, at_ms, due_ms, attempts before this claim, payload).

        Until a retry moves it, a job's due time is its sharding time: one int object then
        serves both, 32 bytes less for each job the wheel holds.
        """
        at_ms, due_ms = r[1], r[2]
        return cls(r[0], at_ms, at_ms if due_ms == at_ms else due_ms, r[3] + 1, r[4])


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRow:
    """A row as stored, for get/page (history and inspection, not the hot path)."""

    key: int | str
    at_ms: int
    status: Status | int  #: the raw int for a value this version does not know (read_status)
    due_ms: int
    attempts: int
    claimed_by: str | None
    claimed_at_ms: int | None
    fired_at_ms: int | None
    last_error: str | None
    payload: bytes
    shard: str

    @classmethod
    def from_row(cls, r: Sequence[Any], shard: str) -> StoredRow:
        """From the adapters' row tuple: id, at, status, due_at, attempts, claimed_by,
        claimed_at, fired_at, last_error, payload."""
        return cls(
            key=r[0],
            at_ms=r[1],
            status=read_status(r[2]),
            due_ms=r[3],
            attempts=r[4],
            claimed_by=r[5],
            claimed_at_ms=r[6],
            fired_at_ms=r[7],
            last_error=r[8],
            payload=bytes(r[9]),
            shard=shard,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A job that did not succeed: due again at retry_at_ms, or, when that is None, finished
    with `status` (FAILED after its last attempt; MISSED when misfire policy dropped it)."""

    ref: RowRef
    error: str
    retry_at_ms: int | None
    status: Status = Status.FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardInfo:
    """One live shard. `rows` counts rows by status when asked for, else it is empty; a status
    value this version does not know is counted under its raw int (read_status)."""

    name: str
    bounds: ShardBounds
    rows: dict[Status | int, int]

    @property
    def unfinished(self) -> int:
        """Rows not finished, an unknown status included: nothing says such a row is done."""
        return sum(n for status, n in self.rows.items() if status not in FINISHED)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownStatus:
    """The rows of one shard whose status this version does not know (read_status)."""

    shard: str
    count: int  #: all of them
    sample: tuple[tuple[int | str, int], ...]  #: (id, status) of the lowest ids, up to a limit

    @classmethod
    def of(cls, shard: str, rows: Sequence[Sequence[Any]], limit: int) -> UnknownStatus:
        """From the adapters' rows (id, status, count of them all), lowest ids first."""
        return cls(shard=shard, count=rows[0][2], sample=tuple((r[0], r[1]) for r in rows[:limit]))


class ShardingRepository(Protocol[TEntity, TKey]):
    """Date-sharded storage of one entity type.

    Every method is batched: one call moves many rows in a few statements. All writes of one
    call are atomic unless said otherwise. Driver errors surface as StoreError (or
    StoreUnavailable when the database cannot be reached); bad entities as EntitySpecError,
    raised before anything is written.
    """

    spec: EntitySpec[TEntity, TKey]
    policy: ShardPolicy
    #: Largest encoded payload insert takes: the configured cap, lowered by open to what the
    #: server accepts (MySQL's max_allowed_packet). Larger ones raise PayloadTooLarge.
    max_payload_bytes: int

    @property
    def ignored_names(self) -> frozenset[str]:
        """Names under this entity's prefix that the last look at the catalogue (any method
        listing shards) could not read as shards, such as ``sms_backup`` or ``sms_2026``: left
        alone, never dropped, so the caller can warn about them."""
        ...

    async def open(self) -> None:
        """Connect (pools are made here, inside the running loop) and create the schema.

        Idempotent. Raises StoreUnavailable naming host and port when the database is unreachable.
        The database (MySQL) or file (SQLite) itself must exist, else StoreMissing and nothing
        is created; unless the adapter was built with ``create_missing=True``.
        """

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def ensure_shards(self, start_ms: int, end_ms: int) -> list[ShardInfo]:
        """Make every shard overlapping [start_ms, end_ms) that does not exist yet.

        Safe when several nodes race to make the same shard. Returns those shards.
        """

    async def insert(
        self,
        entities: Sequence[TEntity],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: str | None = None,
    ) -> int:
        """Encode and check every entity, then store them as insert_rows does; return rows stored.

        Every entity is encoded and checked first (:func:`encode_for`): a bad one raises
        EntitySpecError and nothing is stored. A sharding time older than
        ``now_ms - retention`` raises ShardExpired; a payload over ``max_payload_bytes`` raises
        PayloadTooLarge.
        """
        ...

    async def insert_rows(
        self,
        rows: Sequence[EncodedRow],
        *,
        now_ms: int,
        on_duplicate: OnDuplicate = "error",
        claimed_by: str | None = None,
    ) -> int:
        """Store new rows as PENDING (due_at = sharding time, attempts 0); return rows stored.

        The rows come from :func:`encode_for` at ``now_ms``, not checked again: this is insert
        for a caller that needs the encoded rows first (the engine's schedule() splits them by
        due time).
        Missing shards are made on demand. Rows go in multi-row statements of the adapter's
        batch size, all in one transaction. An id already stored in its shard (whatever that
        row's status), or twice for one shard in the call, raises DuplicateJob saying which
        (its ``status``, or ``in_batch``) and rolls back the whole call (on_duplicate="error"),
        or is left as it was (on_duplicate="ignore"; it does not count). Ids are unique per
        shard: the same id with a sharding time in another shard is another row.

        With ``claimed_by`` the rows are stored already CLAIMED by that node (attempts 1,
        claimed_at = now_ms): the engine uses it for jobs due inside its current window.
        """
        ...

    async def claim_due(
        self,
        node_id: str,
        *,
        now_ms: int,
        before_ms: int,
        since_ms: int,
        limit: int,
        payload_before_ms: int | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` PENDING rows with due_at < before_ms for `node_id`, oldest first.

        Looks in the shards whose sharding time overlaps [since_ms, before_ms), so overdue rows
        back to `since_ms` are found too. Claimed rows become CLAIMED with claimed_by=node_id,
        claimed_at=now_ms and attempts+1, in the same transaction that selected them: two
        concurrent claimers never get the same row, and neither waits for the other's rows.
        Returned in due_at order. A shard missing from the window is empty, not an error.
        Rows due at or after `payload_before_ms` come without their payload (None): read it
        with read_payloads when they are nearly due.
        """
        ...

    async def read_payloads(self, node_id: str, refs: Sequence[RowRef]) -> dict[RowRef, bytes]:
        """The payloads of the rows named that are still CLAIMED by node_id. A row cancelled,
        handed back, taken over or gone with its shard meanwhile is absent from the answer: its
        job must not fire here."""
        ...

    async def mark_done(self, node_id: str, refs: Sequence[RowRef], *, fired_at_ms: int) -> int:
        """Set DONE and fired_at on those rows still CLAIMED by node_id; return rows changed.

        Rows another node has taken over (or that were cancelled) are left alone.
        """
        ...

    async def mark_failed(self, node_id: str, failures: Sequence[Failure], *, now_ms: int) -> int:
        """Record handler failures on rows still CLAIMED by node_id; return rows changed.

        With retry_at_ms the row goes back to PENDING with due_at = retry_at_ms; without, it
        takes the failure's status (FAILED, or MISSED). Either way last_error = error, fired_at = now_ms and the claim is
        cleared (claimed_by kept for the record).
        """
        ...

    async def release(
        self,
        node_id: str | None,
        refs: Sequence[RowRef] | None = None,
        *,
        claimed_at_ms: int | None = None,
    ) -> int:
        """Give CLAIMED rows of node_id back (PENDING, claimed_by NULL); return rows released.

        The claim's attempt is handed back (attempts-1), so the next claim fires the job with
        the attempt number, hence the idempotency key, it had: a repeat after a crash carries
        the key of the fire it may repeat. With `refs`, only those rows (claimed, never fired);
        without, every claim of the node in every live shard, as after a crash. node_id None
        means every node's claims (a single-node engine starting up); it cannot go with `refs`.
        With `claimed_at_ms`, only the node's claims made at that instant: the rows of one
        claim whose outcome the caller never learnt.
        """
        ...

    async def cancel(self, keys: Sequence[TKey]) -> int:
        """Set CANCELLED on PENDING or CLAIMED rows with these ids, in every live shard.

        An id not of the entity's id type raises EntitySpecError and cancels nothing."""
        ...

    async def get(self, key: TKey) -> list[StoredRow]:
        """Every stored row with this id, oldest sharding time first (usually one)."""
        ...

    async def page(
        self,
        *,
        start_ms: int,
        end_ms: int,
        status: Status | None = None,
        after: RowRef | None = None,
        limit: int = 1000,
    ) -> list[StoredRow]:
        """Rows with sharding time in [start_ms, end_ms), ordered by (at_ms, key).

        Keyset pagination: pass the last row's ref as `after` to get the next page. Spans
        shards in one statement.
        """
        ...

    async def list_shards(self, *, counts: bool = False) -> list[ShardInfo]:
        """Live shards, oldest first; with `counts`, rows by status in each."""
        ...

    async def find_unknown_status(self, *, limit: int) -> list[UnknownStatus]:
        """Rows whose status is none of Status, in every live shard.

        One UnknownStatus per shard holding any, oldest shard first: how many, and the id and
        status of up to `limit` of them, lowest ids first. Such rows are never claimed, fired
        or finished, so the caller reports them. Cheap enough for every maintenance pass: the
        adapters read two ranges of the (status, due_at) index (STATUS_RANGE), not the rows.
        """
        ...

    async def drop_shards_before(self, cutoff_ms: int) -> list[ShardInfo]:
        """Drop every shard whose end is at or before cutoff_ms, whole (never row by row).

        Returns the dropped shards with their row counts taken just before the drop, so the
        caller can report unfinished rows. Shards that end after cutoff_ms are never touched,
        nor are ignored_names. Oldest first: when a drop fails half-way, the shards already
        dropped are gone and the rest are left whole for the next call. The space of dropped
        shards goes back to the file system (SQLite: incremental vacuum and WAL truncation).
        """
        ...


def encode_for(
    repo: ShardingRepository[TEntity, Any], entities: Sequence[TEntity], *, now_ms: int
) -> list[EncodedRow]:
    """The rows insert() stores for `entities`: encoded and checked at `now_ms` against the
    repository's retention and ``max_payload_bytes`` (EntitySpec.encode_many)."""
    return repo.spec.encode_many(
        entities,
        now_ms=now_ms,
        retention_ms=repo.policy.retention_ms,
        max_payload_bytes=repo.max_payload_bytes,
    )


def encode_batch_for(
    repo: ShardingRepository[TEntity, Any], entities: Sequence[TEntity], *, now_ms: int
) -> EncodedBatch:
    """encode_for's rows a column at a time (EntitySpec.encode_batch): what insert() stores."""
    return repo.spec.encode_batch(
        entities,
        now_ms=now_ms,
        retention_ms=repo.policy.retention_ms,
        max_payload_bytes=repo.max_payload_bytes,
    )
