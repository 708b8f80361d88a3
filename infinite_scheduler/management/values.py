"""What the job service takes and gives: typed, frozen, and plain enough for a CLI table, a
JSON line or (later) an HTTP body. Times are epoch milliseconds, UTC."""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import orjson

from infinite_scheduler.errors import InvalidJobRequest
from repos.base import RowRef, Status, StoredRow, status_label

#: Largest page list_jobs() returns: a page is one statement per shard it reads.
MAX_PAGE = 1000
DEFAULT_PAGE = 100
Order = Literal["oldest", "newest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """Which jobs list_jobs() and the bulk operations take; every field narrows, None (or
    empty) narrows nothing. `from_ms` / `before_ms` bound the job's scheduled time (its
    sharding time: a retry moves its due time, not this)."""

    entity: str
    states: frozenset[Status] = frozenset()
    from_ms: int | None = None
    before_ms: int | None = None
    category: str | None = None
    #: Occurrences of this recurring schedule only (their ids carry the schedule's).
    schedule: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PageRequest:
    """A page of list_jobs(): `size` jobs after `cursor` (the last page's next_cursor), in
    `order` of scheduled time ("oldest" first, or "newest")."""

    size: int = DEFAULT_PAGE
    cursor: str | None = None
    order: Order = "oldest"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobView:
    """One stored job as an operator sees it."""

    entity: str
    id: int | str
    state: str  #: PENDING, CLAIMED, ... (``status 12`` for a value this version does not know)
    scheduled_ms: int  #: the time written on the job: its sharding time
    due_ms: int  #: when it fires next (later than scheduled_ms after a retry)
    attempts: int
    claimed_by: str | None
    fired_ms: int | None
    last_error: str | None
    priority: int
    category: str
    schedule: int | None  #: the recurring schedule it is an occurrence of, if any
    shard: str

    @classmethod
    def of(cls, entity: str, row: StoredRow, schedule: int | None) -> JobView:
        return cls(
            entity=entity,
            id=row.key,
            state=status_label(row.status),
            scheduled_ms=row.at_ms,
            due_ms=row.due_ms,
            attempts=row.attempts,
            claimed_by=row.claimed_by,
            fired_ms=row.fired_at_ms,
            last_error=row.last_error,
            priority=row.priority,
            category=row.category,
            schedule=schedule,
            shard=row.shard,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPage:
    jobs: list[JobView] = field(default_factory=list)
    #: Pass as PageRequest.cursor for the next page; None: this was the last.
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkResult:
    """A bulk operation's outcome: `matched` jobs the operation applies to (in a state it
    accepts); `changed` of them changed (0 on a dry run; fewer than matched when some moved
    on meanwhile)."""

    operation: str
    matched: int
    changed: int
    dry_run: bool


def encode_cursor(row: StoredRow) -> str:
    """Opaque to callers: the (scheduled time, id) of the last row of a page."""
    raw = orjson.dumps([row.at_ms, row.key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: type) -> RowRef:
    """The row a cursor names; InvalidJobRequest naming the field if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_ms, key = orjson.loads(raw)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidJobRequest("cursor", cursor, "not a cursor this service gave") from None
    if type(at_ms) is not int or type(key) is not key_type:
        raise InvalidJobRequest("cursor", cursor, "not a cursor this service gave")
    return RowRef(cast(int | str, key), at_ms)
