"""The storage contract the engine relies on, and the values that cross it.

Every adapter (SQLite, MySQL multi-table, MySQL partitioned) implements
:class:`ShardingRepository` and passes the one contract suite in ``tests/integration``. The
engine imports this module and nothing below it.

Row life cycle (engine columns in brackets)::

    PENDING --claim_due--> CLAIMED --mark_done--> DONE                       [fired_at]
                              |  \\--mark_failed(retry_at)--> PENDING         [due_at, last_error]
                              |  \\--mark_failed(None)-----> FAILED          [last_error]
                              \\--release/take_over--> PENDING (attempt handed back; fires once, now)
    PENDING/CLAIMED --cancel--> CANCELLED
    PENDING/CLAIMED --pause--> PAUSED --resume--> PENDING      (repos/control.py, operators)
    WAITING --end_waits--> PENDING (its dependencies done) or FAILED (a must-succeed one not)
    WAITING --cancel--> CANCELLED

A row stored with dependencies (``insert(..., edges=...)``) is WAITING, with claim_epoch -2
(WAITING_EPOCH): outside the claim index's PENDING range, so no claim ever looks at it, until
the dependency release (infinite_scheduler/dependency_release.py) moves it on.

Claims carry the claiming process's **epoch** (``claim_epoch``), the fencing token: positive,
unique per engine start. ``claim_epoch = 0`` exactly when the row is PENDING (insert, release,
retry and take_over set 0; a claim sets the epoch; a cancel of a PENDING row sets -1; a claimed
row that finishes keeps its epoch). Every write about a claim (mark_done, mark_failed,
read_payloads, release) is conditional on the caller's epoch: once a row was taken over, a
stale process's writes change nothing, and it can tell (:meth:`ShardingRepository.fenced`).
The claim index is ``(claim_epoch, due_at)``: an ack (status 1 -> 2) moves no index entry.

Times are epoch milliseconds (UTC), always passed in by the caller: adapters never read a clock,
so that the engine's fake clock reaches the rows too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from repos.dependencies import Edge as Edge
from repos.entity import EncodedBatch as EncodedBatch
from repos.entity import EncodedRow as EncodedRow
from repos.entity import EntitySpec as EntitySpec
from repos.errors import ClaimsLocked as ClaimsLocked
from repos.errors import DuplicateJob as DuplicateJob
from repos.errors import EntitySpecError as EntitySpecError
from repos.errors import PayloadTooLarge as PayloadTooLarge
from repos.errors import SchedulerError as SchedulerError
from repos.errors import ShardExpired as ShardExpired
from repos.errors import StoreError as StoreError
from repos.errors import StoreMissing as StoreMissing
from repos.errors import StoreUnavailable as StoreUnavailable
from repos.events import NO_EVENTS as NO_EVENTS
from repos.events import StoreEvents as StoreEvents
from repos.history import Attempt as Attempt
from repos.options import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from repos.options import MAX_CATEGORY as MAX_CATEGORY
from repos.options import MAX_PRIORITY as MAX_PRIORITY
from repos.options import MIN_PRIORITY as MIN_PRIORITY
from repos.options import category_code as category_code
from repos.options import category_name as category_name
from repos.options import code_of as code_of
from repos.options import pack as pack
from repos.options import priority_of as priority_of
from repos.options import rank as rank
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
    WAITING = 6  #: stored with dependencies not yet done (claim_epoch WAITING_EPOCH)
    PAUSED = 7  #: held back by an operator until resumed (claim_epoch PAUSED_EPOCH)


#: A WAITING row's claim_epoch: below the PENDING range (0), apart from a cancel's -1.
WAITING_EPOCH = -2
#: A PAUSED row's claim_epoch: out of the PENDING range too, so no claim looks at it.
PAUSED_EPOCH = -3
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
    """``PENDING``, or ``status 12`` for a value this version does not know."""
    return status.name if isinstance(status, Status) else f"status {status}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardPolicy:
    """How an entity's rows are spread over shards and how long they are kept."""

    granularity: Granularity = Granularity.DAY
    retention_ms: int = 7 * 86_400_000


class Claimant(NamedTuple):
    """Who claims: the node id (``claimed_by``, for people) and its epoch (``claim_epoch``,
    positive: the fencing token every later write about the claim is conditional on)."""

    node_id: str
    epoch: int


class RowRef(NamedTuple):
    """Names one stored row: its id and its sharding time (which picks the shard).

    A tuple, not a dataclass: one is made per fired job for its ack, and a frozen dataclass
    cost ten times as much to build and to hash. It equals the plain ``(key, at_ms)`` tuple.
    """

    key: int | str
    at_ms: int


#: A job as the wheel holds it: (key, at_ms, due_ms, attempts | options << 32, payload). A plain
#: tuple of ints, str and bytes, which the garbage collector stops tracking after one look: a
#: full collection then skips the held jobs (150,000 ClaimedJob objects cost one 30 ms; these
#: tuples ~7 ms). Priority and category (`options`, repos/options.py) share the attempts' slot:
#: a sixth slot took the tuple to the next 16-byte size class, 16 bytes more per held job (W5
#: 252 -> 268), while for the usual job (options 0) the shared int is still the small int of
#: its attempts, cached, and costs nothing.
HeldJob = tuple[int | str, int, int, int, bytes | None]
_ATTEMPT_BITS = 32
_ATTEMPT_MASK = (1 << _ATTEMPT_BITS) - 1


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
    #: Priority and category packed (repos/options.py): 0 for the defaults.
    options: int = 0

    @property
    def ref(self) -> RowRef:
        return RowRef(self.key, self.at_ms)

    def held(self) -> HeldJob:
        shared = self.attempts | self.options << _ATTEMPT_BITS
        return (self.key, self.at_ms, self.due_ms, shared, self.payload)

    @classmethod
    def from_held(cls, held: HeldJob) -> ClaimedJob:
        key, at_ms, due_ms, shared, payload = held
        return cls(key, at_ms, due_ms, shared & _ATTEMPT_MASK, payload, shared >> _ATTEMPT_BITS)

    @classmethod
    def from_claim(cls, r: Sequence[Any]) -> ClaimedJob:
        """From a claimed row (id, at_ms, due_ms, attempts before this claim, payload,
        priority, category).

        Until a retry moves it, a job's due time is its sharding time: one int object then
        serves both, 32 bytes less for each job the wheel holds.
        """
        at_ms, due_ms, priority, category = r[1], r[2], r[5], r[6]
        options = 0 if priority == DEFAULT_PRIORITY and not category else pack(priority, category)
        return cls(r[0], at_ms, at_ms if due_ms == at_ms else due_ms, r[3] + 1, r[4], options)


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
    #: The epoch of the row's claim: 0 while PENDING, -1 if cancelled while PENDING.
    claim_epoch: int = 0
    priority: int = DEFAULT_PRIORITY
    category: str = ""  #: its name; '' for none

    @classmethod
    def from_row(cls, r: Sequence[Any], shard: str) -> StoredRow:
        """From the adapters' row tuple: id, at, status, due_at, attempts, claimed_by,
        claimed_at, fired_at, last_error, payload, claim_epoch, priority, category."""
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
            claim_epoch=r[10],
            priority=r[11],
            category=r[12],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A job that did not succeed: due again at retry_at_ms, or, when that is None, finished
    with `status` (FAILED after its last attempt; MISSED when misfire policy or a blockout
    dropped it). `hand_back`: the job did not run at all (a blockout postponed it), so the
    claim's attempt is handed back and fired_at stays as it was. `history`: the attempt's
    history row (repos/history.py), written with the failure if it changes the row."""

    ref: RowRef
    error: str
    retry_at_ms: int | None
    status: Status = Status.FAILED
    hand_back: bool = False
    history: Attempt | None = None


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
        claimed_by: Claimant | None = None,
        edges: Sequence[Edge] = (),
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
        claimed_by: Claimant | None = None,
        edges: Sequence[Edge] = (),
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

        With ``claimed_by`` the rows are stored already CLAIMED by that claimant (its node id
        and epoch, attempts 1, claimed_at = now_ms): the engine uses it for jobs due inside its
        current window. An epoch that is not positive raises ValueError, storing nothing.

        With ``edges`` (repos/dependencies.py), every row is stored WAITING (claim_epoch
        WAITING_EPOCH, attempts 0) and the edges go into the store's dependencies table in the
        same transaction; each edge's job is one of the rows. Not with ``claimed_by``, nor with
        on_duplicate="ignore" (a row already there would take edges not its own): ValueError,
        storing nothing.
        """
        ...

    async def claim_due(
        self,
        claimant: Claimant,
        *,
        now_ms: int,
        before_ms: int,
        since_ms: int,
        limit: int,
        payload_before_ms: int | None = None,
        boost_per_minute: float | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` PENDING rows with due_at < before_ms for `claimant`, oldest first.

        Looks in the shards whose sharding time overlaps [since_ms, before_ms), so overdue rows
        back to `since_ms` are found too. Claimed rows become CLAIMED with the claimant's node
        id (claimed_by) and epoch (claim_epoch), claimed_at=now_ms and attempts+1, in the same
        transaction that selected them (an epoch that is not positive raises ValueError): two
        concurrent claimers never get the same row, and neither waits for the other's rows.
        Returned in due_at order. A shard missing from the window is empty, not an error.
        Rows due at or after `payload_before_ms` come without their payload (None): read it
        with read_payloads when they are nearly due.

        With `boost_per_minute`, the rows come by effective priority at now_ms instead, the
        highest first (:func:`rank`, lowest first), ties by due time: the claim of a backlog of
        rows due already (infinite_scheduler/fetcher.py). No index holds that order: the best
        of the due rows within the age boost's window bound (repos/ranked.py; the oldest
        RANKED_SCAN_ROWS per shard at most) are claimed, and only they are locked. Such a claim returns fewer than `limit` rows only when fewer are due
        and unclaimed (or other claims took the rows it picked CLAIM_ROUNDS times over).
        """
        ...

    async def read_payloads(self, epoch: int, refs: Sequence[RowRef]) -> dict[RowRef, bytes]:
        """The payloads of the rows named that are still CLAIMED under `epoch`. A row
        cancelled, handed back, taken over or gone with its shard meanwhile is absent from the
        answer: its job must not fire here."""
        ...

    async def mark_done(
        self,
        epoch: int,
        refs: Sequence[RowRef],
        *,
        fired_at_ms: int,
        history: Sequence[Attempt] = (),
    ) -> int:
        """Set DONE and fired_at on those rows still CLAIMED under `epoch`; return rows changed.

        Rows taken over (or cancelled) meanwhile are left alone: fewer rows changed than named.
        `history`: attempts of these rows (repos/history.py), stored in the same transaction,
        one multi-row INSERT per history day; those of rows left alone are not stored. The
        day's history table is made first if missing.
        """
        ...

    async def mark_failed(self, epoch: int, failures: Sequence[Failure], *, now_ms: int) -> int:
        """Record handler failures on rows still CLAIMED under `epoch`; return rows changed.

        With retry_at_ms the row goes back to PENDING (claim_epoch 0) with due_at =
        retry_at_ms; without, it takes the failure's status (FAILED, or MISSED) and keeps its
        epoch. Either way last_error = error and fired_at = now_ms (claimed_by kept for the
        record), but for a failure with hand_back (a postponement: the job never ran), which
        leaves fired_at alone and hands the claim's attempt back (attempts - 1), as release()
        does: the fire at the new time carries the attempt number, hence the idempotency key,
        the postponed one would have. A failure's ``history`` row is stored in the same
        transaction if its row changed, as mark_done's.
        """
        ...

    async def release(self, epoch: int, refs: Sequence[RowRef]) -> int:
        """Give those rows back if still CLAIMED under `epoch` (PENDING, claim_epoch 0,
        claimed_by NULL); return rows released.

        The claim's attempt is handed back (attempts-1), so the next claim fires the job with
        the attempt number, hence the idempotency key, it had: a repeat after a crash carries
        the key of the fire it may repeat.
        """
        ...

    async def take_over(
        self,
        epoch: int,
        *,
        from_ms: int,
        before_ms: int | None = None,
        claimed_at_ms: int | None = None,
    ) -> int:
        """Give back every row CLAIMED under `epoch` due at or after from_ms (and before
        before_ms, if given), in every live shard that can hold one, as release() does (attempt
        handed back); return rows moved.

        Reads the claim index from (epoch, from_ms) on, per shard: from_ms bounds the scan to
        the rows the epoch may still hold (its rows that finished keep their epoch, and stay in
        the index). With `claimed_at_ms`, only the rows of the claim made at that instant: a
        claim whose outcome the caller never learnt. Rows another transaction holds locked (the
        epoch's own, frozen mid-ack) are skipped, not waited for: the rest move, and
        ClaimsLocked says how many wait, for the caller to try again later.
        """
        ...

    async def take_over_earlier(self, epoch: int, *, keep: Collection[int], from_ms: int) -> int:
        """take_over() of every epoch below `epoch` holding claims but those in `keep`, due at
        or after from_ms: a node starting up (`epoch`, newer than any node joined before it)
        keeps the running nodes' epochs and hands back the rest, leftovers of runs that ended
        without handing back. Epochs above its own joined after it: never touched.

        The epochs holding claims are read from the claim index first (one entry per epoch),
        then each one's range from from_ms on, as take_over() does.
        """
        ...

    async def fenced(self, epoch: int, refs: Sequence[RowRef]) -> list[StoredRow]:
        """The rows named whose claim is no longer `epoch`'s, as stored now: taken over (and
        maybe claimed elsewhere since). A write of `epoch` about them was fenced. Rows
        cancelled, finished or gone with their shard are not among them."""
        ...

    async def cancel(self, keys: Sequence[TKey]) -> int:
        """Set CANCELLED on PENDING, CLAIMED or WAITING rows with these ids, in every live
        shard (a PENDING row's claim_epoch becomes -1: out of the claim index's PENDING range;
        a WAITING row's stays WAITING_EPOCH, out of it already).

        An id not of the entity's id type raises EntitySpecError and cancels nothing."""
        ...

    async def locate(self, keys: Sequence[TKey]) -> dict[RowRef, Status | int]:
        """Every stored row with one of these ids, in every live shard, and its status: the
        rows a dependency named by id stands for (when a job is stored), and how far they got
        (when the dependency release looks). An id not of the entity's id type raises
        EntitySpecError."""
        ...

    async def end_waits(self, ready: Sequence[RowRef], failed: Sequence[Failure]) -> int:
        """Move WAITING rows on, in one transaction: the `ready` ones to PENDING (claim_epoch
        0: the next claim takes them when due), the `failed` ones to their failure's status
        with its error in last_error (they never fired: fired_at stays unset). Rows no longer
        WAITING (cancelled meanwhile) or gone with their shard are left alone; returns rows
        moved."""
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

    async def find_unknown_status(
        self, *, limit: int, due_before_ms: int | None = None, cutoff_ms: int | None = None
    ) -> list[UnknownStatus]:
        """Rows whose status is none of Status.

        One UnknownStatus per shard holding any, oldest shard first: how many, and the id and
        status of up to `limit` of them, lowest ids first. Such rows are never claimed, fired
        or finished, so the caller reports them.

        Status is in no index (an ack must move no index entry), so finding them all scans
        every row. Without `due_before_ms`, it does (the shards CLI, which counts every row
        anyway). With it, cheap enough for every maintenance pass: only the rows waiting to be
        claimed (claim_epoch 0, the claim index) due before due_before_ms, and every row of
        the shards ending at or before `cutoff_ms` (about to be dropped, counted anyway).
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


def check_for(repo: ShardingRepository[TEntity, Any], batch: EncodedBatch, *, now_ms: int) -> None:
    """encode_for's checks of rows encoded already (EntitySpec.check_batch)."""
    repo.spec.check_batch(
        batch,
        now_ms=now_ms,
        retention_ms=repo.policy.retention_ms,
        max_payload_bytes=repo.max_payload_bytes,
    )


def encode_batch_for(
    repo: ShardingRepository[TEntity, Any],
    entities: Sequence[TEntity],
    *,
    now_ms: int,
    document: bool = False,
) -> EncodedBatch:
    """encode_for's rows a column at a time (EntitySpec.encode_batch): what insert() stores;
    `document` for an adapter that inserts from the batch's JSON document (made if the rows
    fall in one shard of the repository's policy)."""
    return repo.spec.encode_batch(
        entities,
        now_ms=now_ms,
        retention_ms=repo.policy.retention_ms,
        max_payload_bytes=repo.max_payload_bytes,
        document_shard=repo.policy.granularity if document else None,
    )
