"""The errors the store raises on purpose: the root SchedulerError, an entity that does not fit
its spec (EntitySpecError and its kinds), a node the store will not take (NodeRefused and its
kinds), a statement the database failed or a server the claim is unsafe on (StoreError and its
kinds).

They live here because the adapters raise them and must not import the engine;
``infinite_scheduler.errors`` re-exports them and draws the whole tree, the engine's own errors
included.

Each error keeps the job id, shard and cause as attributes and builds its own message, so
callers raise them with fields, never with preformatted text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SchedulerError(Exception):
    """Root of the scheduler's own errors; catch this to catch them all."""


class EntitySpecError(SchedulerError):
    """Raised when an entity type cannot be mapped to rows, or one entity does not fit it.

    Raised before anything is written, so the store is left as it was.
    """

    def __init__(
        self, entity: str | None, reason: str, *, field: str | None = None, job_id: object = None
    ) -> None:
        self.entity = entity
        self.reason = reason
        self.field = field
        self.job_id = job_id
        where = [] if entity is None else [f"entity {entity!r}"]
        if job_id is not None:
            where.append(f"job {job_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class InvalidIdentifier(EntitySpecError):
    """Raised when a name that would be formatted into SQL is not a plain identifier.

    `what` names the role (``entity name``, ``table prefix``, ``database name``); `entity` is
    the entity type the name belongs to, if any.
    """

    def __init__(self, what: str, value: object, rule: str, *, entity: str | None = None) -> None:
        self.what = what
        self.value = value
        super().__init__(entity, f"invalid {what} {value!r}: must be {rule}")


class DuplicateJob(EntitySpecError):
    """Raised by insert when an id is already stored in its shard, or comes twice for one shard
    in the same call (on_duplicate="error").

    The whole insert call is rolled back: none of its rows are stored. Ids are unique per shard
    for as long as the shard is kept, whatever the stored row's status: the id of a cancelled
    or finished job cannot be stored again for the same day (hour); use a new id.
    """

    def __init__(
        self,
        entity: str,
        job_id: object,
        shard: str,
        *,
        status: str | None = None,
        in_batch: bool = False,
    ) -> None:
        self.shard = shard
        #: the stored row's status name (its number, for one this version does not know);
        #: None if not stored
        self.status = status
        self.in_batch = in_batch  #: the call holds the id twice for this shard
        if in_batch:
            reason = f"id appears twice in this batch, both for shard {shard!r}"
        elif status is not None:
            reason = (
                f"id already stored in shard {shard!r} (status {status}); "
                "ids are unique per shard, even for finished rows"
            )
        else:
            reason = f"id already stored in shard {shard!r}"
        super().__init__(entity, reason, job_id=job_id)


class ShardExpired(EntitySpecError):
    """Raised by insert when a job's sharding time is older than the retention horizon.

    Such a row would land in a shard that retention drops (or already dropped), so it would
    never fire: refusing it is the only way not to lose it silently.
    """

    def __init__(
        self, entity: str, job_id: object, field: str, at_ms: int, *, now_ms: int, retention_ms: int
    ) -> None:
        self.at_ms = at_ms
        self.horizon_ms = now_ms - retention_ms
        self.retention_ms = retention_ms
        super().__init__(
            entity,
            f"time {utc_text(at_ms)} is older than the retention horizon "
            f"{utc_text(self.horizon_ms)} (now minus the retention of {_duration(retention_ms)}): "
            "its shard is dropped, so it would never fire",
            field=field,
            job_id=job_id,
        )


class PayloadTooLarge(EntitySpecError):
    """Raised by insert when an entity's encoded payload is larger than the store accepts.

    The limit is ``store.max_payload_bytes``, lowered at open to what a MySQL server's
    ``max_allowed_packet`` lets through. Raised before anything is written: the server would
    otherwise break the connection mid-statement ("Packet sequence number wrong").
    """

    def __init__(self, entity: str, job_id: object, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            entity,
            f"encoded size {size} bytes is over the limit of {limit} bytes",
            field="payload",
            job_id=job_id,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveNode:
    """The live node a join ran into, as the refusal names it."""

    node_id: str
    epoch: int
    host: str
    pid: int
    heartbeat_age_ms: int  #: by the database's clock

    def __str__(self) -> str:
        return (
            f"node {self.node_id!r} (epoch {self.epoch} on host {self.host} pid {self.pid},"
            f" heartbeat {self.heartbeat_age_ms / 1000:.1f} s ago)"
        )


class NodeRefused(SchedulerError):
    """Raised when the store will not take this process as a node: at the engine's start,
    before anything is claimed, and nothing was written. `node_id` is the id refused, `holder`
    the live node in the way; the kinds say what to do instead."""

    def __init__(self, node_id: str, holder: LiveNode, reason: str) -> None:
        self.node_id = node_id
        self.holder = holder
        super().__init__(reason)


class NodeIdInUse(NodeRefused):
    """Raised by join when a live node (ACTIVE or DRAINING, heartbeat younger than the node
    timeout) has the same node id: two processes must never act under one id at once.

    The id is free again once the other process stops gracefully, or once its heartbeat is
    older than the node timeout (it crashed): a restart within that time is refused too, unless
    it runs on the crashed process's host (infinite_scheduler/node.py join: it sees that the
    process is gone).
    """

    def __init__(self, node_id: str, holder: LiveNode, *, node_timeout_ms: int) -> None:
        self.node_timeout_ms = node_timeout_ms
        super().__init__(
            node_id,
            holder,
            f"node id {node_id!r} is in use by a live {holder}; stop that process, or give this"
            " one another node_id (AUTO makes a unique one). If that process is gone, the id is"
            f" free once its heartbeat is {node_timeout_ms / 1000:g} s old"
            " (cluster.node_timeout_s), at once to a process on its host",
        )


class SingleNodeStore(NodeRefused):
    """Raised by join on the embedded SQLite store while a live node of another id is on it:
    one file on one machine serves one node."""

    def __init__(self, node_id: str, holder: LiveNode, *, node_timeout_ms: int) -> None:
        self.node_timeout_ms = node_timeout_ms
        super().__init__(
            node_id,
            holder,
            f"the embedded SQLite store runs one node, and {holder} is live on it; stop it"
            f" before starting node {node_id!r}, or use MySQL/MariaDB for several nodes. If that"
            f" process is gone, the store is free once its heartbeat is"
            f" {node_timeout_ms / 1000:g} s old (cluster.node_timeout_s), at once to a process"
            " on its host",
        )


class StoreError(SchedulerError):
    """Raised when the database fails a statement; `cause` is the driver's own error."""

    def __init__(self, operation: str, cause: BaseException, *, shard: str | None = None) -> None:
        self.operation = operation
        self.cause = cause
        self.shard = shard
        where = f" on shard {shard!r}" if shard else ""
        super().__init__(f"{operation}{where} failed: {self._explain()}")

    def _explain(self) -> str:
        return describe_cause(self.cause)


class StoreUnavailable(StoreError):
    """Raised when the database cannot be reached (refused, timed out, lost mid-statement).

    Transient: the engine's loops retry with backoff rather than stop. `timeout_s` is set when
    the connect (TCP, handshake and login) got no answer within that many seconds.
    """

    def __init__(
        self,
        operation: str,
        cause: BaseException,
        *,
        address: str,
        timeout_s: float | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        super().__init__(f"{operation} ({address} unreachable)", cause)

    def _explain(self) -> str:
        if self.timeout_s is not None:
            return f"timed out after {self.timeout_s:g} s"
        return super()._explain()


class AccessDenied(StoreError):
    """Raised when the database refuses the store's user: the login (1045), or a statement its
    grants do not allow (1044, 1142, 1143, 1227).

    Not transient: nothing changes until a DBA grants the privilege, so the message names the
    one the server refused (`privilege`, None when the server names none) and every privilege
    the engine's user needs (`needed`), which docs/deploy.md lists and a test checks.
    """

    def __init__(
        self,
        operation: str,
        cause: BaseException,
        *,
        privilege: str | None,
        needed: Sequence[str],
        shard: str | None = None,
    ) -> None:
        self.privilege = privilege
        self.needed = tuple(needed)
        super().__init__(operation, cause, shard=shard)

    @property
    def login_refused(self) -> bool:
        args: tuple[object, ...] = getattr(self.cause, "args", ())
        return bool(args) and args[0] == 1045

    def _explain(self) -> str:
        raw = describe_cause(self.cause)
        if self.login_refused:
            return (
                f"the server refused the login ({raw}): check the user and password of"
                " store.url, and that the user may connect from this host"
            )
        what = f"the {self.privilege} privilege" if self.privilege else "a privilege"
        return (
            f"the database user lacks {what} ({raw}); the engine's user needs"
            f" {', '.join(self.needed)} on its database (docs/deploy.md, Security)"
        )


class ClaimsLocked(StoreError):
    """Raised by a takeover that moved what it could while other rows of the epoch stay
    locked by a transaction still open: the dead node's own, frozen mid-ack (a stalled process,
    a cut network). Those wait for it to end; the caller tries again later. `moved` rows went
    back to PENDING all the same."""

    def __init__(self, operation: str, *, epochs: Sequence[int], moved: int, locked: int) -> None:
        self.epochs = tuple(epochs)
        self.moved = moved
        self.locked = locked
        super().__init__(operation, RuntimeError("rows locked by an open transaction"))

    def _explain(self) -> str:
        return (
            f"{self.locked} claims of epoch(s) {', '.join(map(str, self.epochs))} are locked by a"
            f" transaction still open (moved {self.moved}); they are taken over once it ends"
        )


class StoreMissing(StoreError):
    """Raised by open when the MySQL database or the SQLite file does not exist.

    Nothing is created unless asked: a mistyped name must not quietly start a new, empty store.
    `store` names the database (with `address`, its host:port) or the file's path.
    """

    def __init__(
        self, kind: str, store: str, cause: BaseException, *, address: str | None = None
    ) -> None:
        self.kind = kind
        self.store = store
        self.address = address
        super().__init__("open", cause)

    def _explain(self) -> str:
        where = f" on {self.address}" if self.address else ""
        return (
            f"{self.kind} {self.store!r}{where} does not exist; create it with "
            "`infinite-scheduler store init`, or set store.create_missing = true"
        )


class UnsafeStore(StoreError):
    """Raised at open when the server would make the claim unsafe (repos/server_guard.py): TiDB
    (ignores SKIP LOCKED), MySQL < 8.0.1 or MariaDB < 10.6 (no SKIP LOCKED), a Galera node
    outside the primary component (at open, before any table is made); a Galera node other
    than the one the live engines write through, multi-writer undeclared (at join, before the
    node's row is written).

    `server` describes what was found (version, comment, Galera state); `reasons` says why each
    refusal applies. ``infinite-scheduler store check`` prints the same verdict without raising.
    """

    def __init__(
        self, address: str, server: str, reasons: tuple[str, ...], *, operation: str = "open"
    ) -> None:
        self.address = address
        self.server = server
        self.reasons = reasons
        super().__init__(operation, RuntimeError("; ".join(reasons)))

    def _explain(self) -> str:
        return f"{self.server} at {self.address} is refused as a store: {'; '.join(self.reasons)}"


def describe_cause(cause: BaseException) -> str:
    args: tuple[object, ...] = getattr(cause, "args", ())
    if len(args) == 2 and isinstance(args[0], int):
        return f"[{args[0]}] {args[1]}"
    return f"{type(cause).__name__}: {cause}"


def utc_text(at_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC, e.g. ``2026-11-01T00:00:00.000Z`` (exact, no float)."""
    at = _EPOCH + timedelta(milliseconds=at_ms)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _duration(ms: int) -> str:
    """``7 days, 604800 s``: the largest whole unit, and the seconds the config speaks in."""
    for unit, span in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000)):
        if ms and ms % span == 0:
            n = ms // span
            return f"{n} {unit}{'' if n == 1 else 's'}, {ms / 1000:g} s"
    return f"{ms / 1000:g} s"


class ScheduleError(SchedulerError):
    """Root of the errors about recurring schedules and blockouts (infinite_scheduler/schedules).

    Raised before anything is stored or changed."""


class InvalidSchedule(ScheduleError):
    """Raised when a schedule or blockout is not valid: a bad cron expression or time zone, a
    rate of 0, an end before the start, a payload template its entity type refuses, ...
    `field` names the field at fault (``trigger.cron``, ``payload_template.message``, ...).
    Nothing is stored."""

    def __init__(self, field: str, reason: str, *, schedule: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.schedule = schedule
        where = f"schedule {schedule!r}, " if schedule else ""
        super().__init__(f"{where}field {field!r}: {reason}")


class ScheduleNotFound(ScheduleError):
    """Raised when a schedule or blockout named by id or name does not exist (any more)."""

    def __init__(self, what: str, ref: object) -> None:
        self.what = what
        self.ref = ref
        super().__init__(f"no {what} {ref!r} in the store")


class ScheduleExists(ScheduleError):
    """Raised when a schedule or blockout of that name is stored already; nothing is stored."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"a {what} named {name!r} exists already; pick another name")


class TokenExists(SchedulerError):
    """Raised when an API token of that name (or, by a one-in-2^256 chance, that secret) is
    stored already, revoked or not: names stay unique in the audit log. Nothing is stored."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an API token named {name!r} exists already; pick another name")
