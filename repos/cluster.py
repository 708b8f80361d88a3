"""Membership of a store's engine nodes: the contract, and the values that cross it.

Every engine process joins the store's ``nodes`` table when it starts and gets a new **epoch**
(the table's auto-increment key: positive, unique per store, increasing), the fencing token of
everything it claims. It renews its row's heartbeat every ``heartbeat_interval_s``; a row that
is ACTIVE or DRAINING with a heartbeat older than the node timeout belongs to a dead node.

Row life cycle::

    join --> ACTIVE --set_state--> DRAINING --set_state--> LEFT      (a graceful stop)
               \\--------------\\--declare_dead--> DEAD                (a heartbeat too old)

Beside it, the ``leases`` table: one row per chore that one node at a time should do (shard
maintenance), naming its holder by epoch, with an expiry. A lease is free when it expired, or
when its holder epoch is no longer ACTIVE or DRAINING (it left, or was declared dead); only a
running epoch can take one. Not ``GET_LOCK``: a named lock lives in one server's memory and one
connection's session (Galera does not replicate it), a row is seen by every node.

Times in both tables are the **database's clock** (MySQL's, read inside each statement; SQLite
is one machine's file, read with its own clock): no node's clock decides whether another is dead
or a lease expired. Unlike the shard repositories' times, none of them is passed in by the
caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

from repos.errors import LiveNode as LiveNode
from repos.errors import NodeIdInUse as NodeIdInUse
from repos.errors import NodeRefused as NodeRefused
from repos.errors import SingleNodeStore as SingleNodeStore

#: The store's membership table (beside the shards; both MySQL layouts share it).
NODES_TABLE = "nodes"
#: The store's leases, made with the nodes table.
LEASES_TABLE = "leases"
#: Changes to claimed rows posted for the node holding them (repos/control.py).
REVOCATIONS_TABLE = "revocations"


class NodeState(IntEnum):
    """A node row's state, stored as a TINYINT in ``state``."""

    ACTIVE = 0  #: running: claims, fires, heartbeats
    DRAINING = 1  #: stopping: claims nothing new, still heartbeats
    LEFT = 2  #: stopped gracefully, holds nothing
    DEAD = 3  #: declared dead by a node that found its heartbeat too old (or by its successor)


#: States whose node may still hold claims: the only ones heartbeat() renews.
RUNNING = frozenset({NodeState.ACTIVE, NodeState.DRAINING})
_BY_VALUE = {s.value: s for s in NodeState}


def check_settable(state: NodeState) -> None:
    """set_state() moves a node to DRAINING or LEFT only: ACTIVE is join's, DEAD
    declare_dead's (conditional on the heartbeat's age)."""
    if state not in (NodeState.DRAINING, NodeState.LEFT):
        raise ValueError(f"set_state takes DRAINING or LEFT, not {state.name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """One row of the nodes table: one process start."""

    epoch: int
    node_id: str
    host: str
    pid: int
    version: str
    started_at_ms: int  #: database clock
    heartbeat_at_ms: int  #: database clock
    state: NodeState | int  #: the raw int for a value this version does not know
    holds_from_ms: int  #: earliest due time it may hold claims for; 0 = nothing held

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> NodeInfo:
        """From the adapters' row tuple, in the field order above."""
        return cls(
            epoch=int(r[0]),
            node_id=r[1],
            host=r[2],
            pid=int(r[3]),
            version=r[4],
            started_at_ms=int(r[5]),
            heartbeat_at_ms=int(r[6]),
            state=_BY_VALUE.get(int(r[7]), int(r[7])),
            holds_from_ms=int(r[8]),
        )

    @property
    def running(self) -> bool:
        """ACTIVE or DRAINING: it may still hold claims (alive, or dead and not declared so)."""
        return self.state in RUNNING

    def heartbeat_age_ms(self, now_ms: int) -> int:
        return now_ms - self.heartbeat_at_ms

    def as_live(self, now_ms: int) -> LiveNode:
        """This node as a refused join names it."""
        return LiveNode(
            node_id=self.node_id,
            epoch=self.epoch,
            host=self.host,
            pid=self.pid,
            heartbeat_age_ms=self.heartbeat_age_ms(now_ms),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Roster:
    """Node rows, newest epoch first, read together with the database's clock."""

    now_ms: int
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined:
    """What join() returns: the new epoch, and the earlier epochs whose claims are the new
    process's to take over: this node id's that are still ACTIVE or DRAINING though not live (a
    crashed run of the same deployment), and (infinite_scheduler/node.py) any the joiner found
    gone and declared DEAD itself (declare_gone)."""

    epoch: int
    earlier: tuple[NodeInfo, ...]


class Revocation(NamedTuple):
    """A claimed row an operator changed (repos/control.py), for the node holding it: the
    claim's epoch, the entity type, the id as text (ids are ints or strings), the row's
    sharding time."""

    epoch: int
    entity: str
    key: str
    at_ms: int


class Membership(Protocol):
    """The nodes table of one store. Driver errors surface as StoreError (StoreUnavailable when
    the database cannot be reached), as in ShardingRepository."""

    async def open(self) -> None:
        """Connect and make the nodes table if missing. Idempotent. The store itself must exist
        (StoreMissing), unless built with ``create_missing=True``."""

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def join(
        self, node_id: str, *, host: str, pid: int, version: str, node_timeout_ms: int
    ) -> Joined:
        """Insert an ACTIVE row for a new process (started_at = heartbeat_at = the database's
        now, holds_from 0) and return its epoch.

        Refused with NodeIdInUse, inserting nothing, while a live node (ACTIVE or DRAINING, a
        heartbeat younger than node_timeout_ms) has the same node id; two processes joining
        with one id at once: exactly one gets in. On SQLite, which serves one node, any live
        node of another id refuses it with SingleNodeStore.
        """
        ...

    async def heartbeat(self, epoch: int, holds_from_ms: int) -> bool:
        """Renew the epoch's heartbeat (to the database's now; strictly later than the last
        one) and publish holds_from_ms, if the row is ACTIVE or DRAINING. False: it is not
        (declared DEAD, or LEFT): the process was fenced and must stop acting for that epoch."""
        ...

    async def declare_dead(self, epoch: int, node_timeout_ms: int) -> bool:
        """Set DEAD on the epoch if it is ACTIVE or DRAINING and its heartbeat is older than
        node_timeout_ms by the database's clock, in one conditional update. True for exactly
        one of any number of concurrent callers: the one that takes over its claims."""
        ...

    async def declare_gone(self, epoch: int) -> NodeInfo | None:
        """Set DEAD on the epoch if it is ACTIVE or DRAINING, whatever its heartbeat's age: the
        caller knows its process is gone (a joiner on the same host found no such pid). The row
        as this call left it (DEAD; holds_from_ms: where its claims start) if this call made it
        DEAD, so that exactly one caller takes its claims over; None if it was not running."""
        ...

    async def set_state(self, epoch: int, state: NodeState) -> bool:
        """Move an ACTIVE or DRAINING epoch to DRAINING or LEFT; True if it changed now (False:
        it was in that state already, or LEFT, or DEAD). A LEFT row holds nothing."""
        ...

    async def list_nodes(self, *, finished: int = 20) -> Roster:
        """Every ACTIVE or DRAINING row and the `finished` newest LEFT or DEAD ones, newest
        epoch first, with the database's now."""
        ...

    async def prune_nodes(self, older_than_ms: int) -> int:
        """Delete LEFT and DEAD rows whose heartbeat is older than older_than_ms (never an
        ACTIVE or DRAINING one, never the newest epoch); return how many went."""
        ...

    async def prune_revocations(self) -> int:
        """Delete the revocations of every epoch that is not ACTIVE or DRAINING (it stopped or
        died before taking them: nothing will read them again); return how many went."""
        ...

    async def acquire_lease(self, name: str, epoch: int, ttl_ms: int) -> bool:
        """Take the lease `name` for the epoch, or renew it, until the database's now + ttl_ms;
        True if the epoch holds it now. Taken when there is no such row, when it expired, or
        when its holder is no longer ACTIVE or DRAINING; renewed when the epoch holds it; never
        taken by an epoch that is not ACTIVE or DRAINING. One conditional write: of any number
        of concurrent callers, at most one (exactly one, if any may) gets True."""
        ...

    async def release_lease(self, name: str, epoch: int) -> None:
        """Free the lease `name` if the epoch holds it (a graceful stop: another node takes it
        at its next try); a lease someone else holds stays theirs."""
        ...

    async def db_now(self) -> int:
        """The database's clock, epoch milliseconds."""
        ...

    async def take_revocations(self, epoch: int) -> list[Revocation]:
        """The revocations posted for the epoch's claims (repos/control.py: rows an operator
        changed while this epoch held them), removed as they are handed out: each is handed
        out once. Those posted meanwhile stay for the next call."""
        ...
