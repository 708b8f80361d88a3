"""Every error the scheduler raises on purpose, importable from one place.

    SchedulerError                 (repos.errors) root: catch this to catch them all
    ├── EntitySpecError            an entity type or one entity does not fit its spec
    │   ├── InvalidIdentifier      an entity, prefix, column or database name unfit for SQL
    │   ├── DuplicateJob           an id already in its shard, or twice in one insert
    │   ├── ShardExpired           a sharding time older than the retention horizon
    │   ├── PayloadTooLarge        an encoded payload over the store's size limit
    │   └── JobOptionError         a Job's priority out of range, or its category unknown
    ├── NodeRefused                the store will not take this process as a node (at start)
    │   ├── NodeIdInUse            a live node has the same node id
    │   └── SingleNodeStore        the SQLite store has a live node already
    ├── StoreError                 the database refused or failed a statement
    │   ├── StoreUnavailable       the database cannot be reached at all
    │   ├── AccessDenied           the database refused the user: login, or a missing grant
    │   ├── StoreMissing           the database or SQLite file does not exist (and is not created)
    │   ├── ClaimsLocked           a takeover left claims an open transaction holds, for later
    │   └── UnsafeStore            a server the claim is unsafe on (TiDB, old MySQL/MariaDB, ...)
    ├── ConfigError                a setting is invalid, or the config file cannot be read
    │   └── PortUnavailable        the metrics port cannot be listened on (in use, say)
    ├── HandlerMissing             an entity type the engine has no handler for
    ├── EngineNotRunning           schedule() or cancel() outside ``async with engine:``
    ├── ClientNotOpen              a SchedulerClient used outside ``async with client:``
    ├── DependencyRefused          a job's dependency is unknown, missing, or makes a cycle
    ├── NodeDeclaredDead           engine.run(): another node declared this one dead
    ├── UnknownCategory            categories.pause() / resume() of a category not configured
    ├── DropRefused                shards drop-expired: unfinished rows, drop not confirmed
    ├── ScheduleError              a recurring schedule or blockout (infinite_scheduler/schedules)
    │   ├── InvalidSchedule        a field of one is invalid (named); nothing stored
    │   ├── ScheduleNotFound       no schedule or blockout of that id or name
    │   └── ScheduleExists         the name is taken; nothing stored
    ├── TokenExists                an API token of that name is stored already
    └── JobControlError            a job service operation refused (infinite_scheduler/management)
        ├── InvalidJobRequest      an input is invalid (the field named); nothing read or changed
        ├── JobNotFound            no row of that id
        └── JobStateRefused        the job's state does not allow the operation; nothing changed

The store errors live in ``repos.errors`` (the adapters raise them and must not import the
engine); they are re-exported here so callers need one import.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from infinite_scheduler.config_errors import ConfigProblem
from repos.errors import AccessDenied as AccessDenied
from repos.errors import ClaimsLocked as ClaimsLocked
from repos.errors import DuplicateJob as DuplicateJob
from repos.errors import EntitySpecError as EntitySpecError
from repos.errors import InvalidIdentifier as InvalidIdentifier
from repos.errors import InvalidSchedule as InvalidSchedule
from repos.errors import NodeIdInUse as NodeIdInUse
from repos.errors import NodeRefused as NodeRefused
from repos.errors import PayloadTooLarge as PayloadTooLarge
from repos.errors import ScheduleError as ScheduleError
from repos.errors import ScheduleExists as ScheduleExists
from repos.errors import ScheduleNotFound as ScheduleNotFound
from repos.errors import SchedulerError as SchedulerError
from repos.errors import ShardExpired as ShardExpired
from repos.errors import SingleNodeStore as SingleNodeStore
from repos.errors import StoreError as StoreError
from repos.errors import StoreMissing as StoreMissing
from repos.errors import StoreUnavailable as StoreUnavailable
from repos.errors import TokenExists as TokenExists
from repos.errors import UnsafeStore as UnsafeStore


class ConfigError(SchedulerError):
    """Raised by ``load_config`` (and the CLI) when a setting is invalid or the file unreadable.

    Raised before anything is opened or stored. `errors` lists every problem found, not only the
    first (a ConfigProblem each: key, value, source, reason); the message never holds a
    password (store URLs are shown with ``***``).
    """

    def __init__(self, errors: Sequence[ConfigProblem]) -> None:
        self.errors = list(errors)
        if len(self.errors) == 1:
            message = f"invalid configuration: {self.errors[0]}"
        else:
            lines = "".join(f"\n  - {problem}" for problem in self.errors)
            message = f"invalid configuration ({len(self.errors)} problems):{lines}"
        super().__init__(message)


class PortUnavailable(ConfigError):
    """Raised on entering the engine when the port of `key` cannot be listened on (another
    process holds it, or no permission): before any store is opened or any job claimed."""

    def __init__(self, key: str, port: int, cause: OSError) -> None:
        self.key = key
        self.port = port
        self.cause = cause
        reason = "port already in use" if cause.errno == errno.EADDRINUSE else "cannot listen"
        reason += f" ({cause}); free it or choose another port (0 turns the endpoint off)"
        self.errors = [ConfigProblem(key=key, value=str(port), source="listen", reason=reason)]
        SchedulerError.__init__(self, f"{key} = {port}: {reason}")


class JobOptionError(EntitySpecError):
    """Raised by ``Job(...)`` for a priority outside 1..1000, and by schedule() for a category
    the config does not define (``[categories.NAME]``): before anything is stored. `field` is
    ``priority`` or ``category``; `entity` the entity's class name."""

    def __init__(self, entity: str, field: str, value: object, reason: str) -> None:
        self.value = value
        super().__init__(entity, f"{value!r}: {reason}", field=field)


class UnknownCategory(SchedulerError):
    """Raised by ``categories.pause()`` and ``resume()`` (infinite_scheduler/categories.py)
    for a name no ``[categories.NAME]`` of the config defines; nothing is stored."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        configured = ", ".join(map(repr, self.known)) if self.known else "none"
        super().__init__(
            f"category {name!r} is not configured (configured: {configured}); "
            f"[categories.{name}] in the config defines it"
        )


class HandlerMissing(SchedulerError):
    """Raised when the engine meets an entity type with no handler registered.

    Raised on entering the engine (a served type without a handler) or on scheduling an entity
    of a type never served, before anything is stored.
    """

    def __init__(self, entities: Sequence[str]) -> None:
        self.entities = list(entities)
        super().__init__(
            f"no handler for entity type(s) {', '.join(map(repr, self.entities))}; "
            "register one before starting the engine"
        )


class EngineNotRunning(SchedulerError):
    """Raised by the engine's schedule(), cancel(), categories and schedules before
    ``async with engine:`` or after it.

    Raised before anything is stored or changed: only a running engine can place a job due
    soon into its wheel or take a cancelled one out. The repository works without an engine.
    """

    #: operation -> what it does (some a SchedulerClient does too)
    _PURPOSE = {
        "schedule": "store jobs",
        "cancel": "cancel jobs",
        "schedules": "manage recurring schedules",
    }

    def __init__(self, operation: str) -> None:
        self.operation = operation
        purpose = self._PURPOSE.get(operation)
        elsewhere = (
            f" (to {purpose} without an engine, use SchedulerClient.{operation}())"
            if purpose
            else ""
        )
        super().__init__(
            f"{operation}() needs a running engine: call it inside `async with engine:`{elsewhere}"
        )


class ClientNotOpen(SchedulerError):
    """Raised by a SchedulerClient used before ``async with client:`` or after it, before
    anything is stored or changed."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"{operation}() needs an open client: call it inside `async with client:`")


class DependencyRefused(SchedulerError):
    """Raised by schedule() / store() when a job's dependency cannot be waited for: its entity
    type is not one the caller serves, no job of its id is stored (nor stored in the same call),
    or it closes a cycle (a job waiting, through others maybe, for itself).

    Raised before anything of the call is stored. `entity` and `job_id` name the job refused,
    `dependency` the one it names (``sms 42``), `reason` why.
    """

    def __init__(self, entity: str, job_id: object, dependency: str, reason: str) -> None:
        self.entity = entity
        self.job_id = job_id
        self.dependency = dependency
        self.reason = reason
        super().__init__(
            f"job {entity} {job_id!r}: dependency {dependency}: {reason}; nothing stored"
        )


class NodeDeclaredDead(SchedulerError):
    """Raised by engine.run() when another node declared this one dead (its heartbeat was too
    old: a stall, a partition) and took its claims over. The engine fired nothing since it
    stopped renewing, and has stopped; a new engine joins as a new epoch (the CLI does so)."""

    def __init__(self, node_id: str, epoch: int) -> None:
        self.node_id = node_id
        self.epoch = epoch
        super().__init__(
            f"node {node_id!r} epoch {epoch} was declared dead by another node, which took its"
            " claims over; this engine stopped: start a new one to rejoin as a new epoch"
        )


class DropRefused(SchedulerError):
    """Raised by ``shards drop-expired`` when the shards to drop hold unfinished rows and the
    drop was neither forced (``--force``) nor confirmed by a person; nothing was dropped."""

    def __init__(self, shards: int, unfinished: int, *, asked: bool) -> None:
        self.shards = shards
        self.unfinished = unfinished
        self.asked = asked
        held = (
            f"{shards} shard holds" if shards == 1 else f"{shards} shards hold"
        ) + f" {unfinished} unfinished row{'' if unfinished == 1 else 's'}"
        why = (
            "the drop was not confirmed"
            if asked
            else "stdin is not a terminal to confirm on; pass --force to drop them anyway"
        )
        super().__init__(f"nothing dropped: {held} and {why}")


class JobControlError(SchedulerError):
    """Raised by the job service (infinite_scheduler/management) when it refuses an operation;
    whatever it refuses, it changed nothing."""


class InvalidJobRequest(JobControlError):
    """An input of a job service call is invalid: an unknown entity type or state, a page size
    out of range, a cursor it did not give, a time out of range. `field` names it."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} {value!r}: {reason}; nothing changed")


class JobNotFound(JobControlError):
    """No live shard holds a row of this id."""

    def __init__(self, entity: str, job_id: object) -> None:
        self.entity = entity
        self.job_id = job_id
        super().__init__(f"{entity} {job_id!r}: no such job in the live shards")


class JobStateRefused(JobControlError):
    """The job is in a state where the operation makes no sense (fired, running, cancelled,
    claimed too close to its time to be stopped, ...); nothing was changed."""

    def __init__(
        self, entity: str, job_id: object, operation: str, state: str, reason: str, shard: str
    ) -> None:
        self.entity = entity
        self.job_id = job_id
        self.operation = operation
        self.state = state
        self.shard = shard
        super().__init__(
            f"cannot {operation} {entity} {job_id!r} (shard {shard}): it is {state}: {reason};"
            " nothing changed"
        )
