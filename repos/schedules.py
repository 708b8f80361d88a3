"""Recurring schedules and blockouts of a store: the contract, and the rows that cross it.

Three store-wide tables beside ``nodes`` and ``leases``: ``schedules`` (one row per recurring
schedule: its trigger and payload template as JSON, and where its materialisation stands),
``blockouts`` (named windows in which nothing of a scope fires) and ``category_pauses`` (one
row per category paused on every node of the store, while it is; the row named
:data:`ENGINE_PAUSE`, which no category can be named, pauses the engine: no node claims). The adapters store and read
rows; what the JSON means (infinite_scheduler/schedules/) is none of their business.

Schedule row life cycle (``state``)::

    ACTIVE (next_at_ms: the next occurrence not made yet) --last one made--> ENDED
      \\--fixed delay: occurrence made--> WAITING (for it to finish) --finished--> ACTIVE

``paused`` is apart from the state: a paused schedule is never due nor waiting.

Every write is conditional on the row's ``version`` (one more at each write): the
materialiser's advance and a person's update never overwrite each other; the loser sees fewer
rows changed and reads again. Times are epoch milliseconds passed in by the caller, as in the
shard repositories (the engine's fake clock reaches them too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from repos.errors import InvalidSchedule as InvalidSchedule
from repos.errors import ScheduleError as ScheduleError
from repos.errors import ScheduleExists as ScheduleExists
from repos.errors import ScheduleNotFound as ScheduleNotFound

SCHEDULES_TABLE = "schedules"
#: The ``category_pauses`` row that pauses every node's claims (category names are [a-z0-9_]).
ENGINE_PAUSE = "*"
BLOCKOUTS_TABLE = "blockouts"


class ScheduleState(IntEnum):
    """A schedule row's state, stored as a TINYINT in ``state``."""

    ACTIVE = 0  #: next_at_ms is its next occurrence, to be made when it comes near
    WAITING = 1  #: fixed delay: its last occurrence (last_at_ms) must finish first
    ENDED = 2  #: past its end or max_runs: nothing more to make


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRow:
    """One row of the schedules table. `id` and `version` are the store's (0 before it is
    stored); the JSON columns are text the engine wrote (trigger, payload template)."""

    id: int = 0
    name: str
    entity: str
    trigger_json: str
    template_json: str
    start_ms: int
    end_ms: int | None = None
    max_runs: int | None = None
    runs: int = 0
    priority: int = 500
    category: str = ""
    owner: str = ""
    misfire: str = "fire_once_now"
    paused: bool = False
    state: ScheduleState = ScheduleState.ACTIVE
    next_at_ms: int | None = None
    last_at_ms: int | None = None
    generation: int = 0
    version: int = 0
    created_at_ms: int = 0
    updated_at_ms: int = 0

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> ScheduleRow:
        """From the adapters' row tuple, in the field order above."""
        return cls(
            id=int(r[0]),
            name=r[1],
            entity=r[2],
            trigger_json=r[3],
            template_json=r[4],
            start_ms=int(r[5]),
            end_ms=None if r[6] is None else int(r[6]),
            max_runs=None if r[7] is None else int(r[7]),
            runs=int(r[8]),
            priority=int(r[9]),
            category=r[10],
            owner=r[11],
            misfire=r[12],
            paused=bool(r[13]),
            state=ScheduleState(int(r[14])),
            next_at_ms=None if r[15] is None else int(r[15]),
            last_at_ms=None if r[16] is None else int(r[16]),
            generation=int(r[17]),
            version=int(r[18]),
            created_at_ms=int(r[19]),
            updated_at_ms=int(r[20]),
        )

    def values(self) -> dict[str, Any]:
        """The row's columns as bound parameters (id and version included)."""
        return {
            "id": self.id,
            "name": self.name,
            "entity": self.entity,
            "trigger_json": self.trigger_json,
            "template_json": self.template_json,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "max_runs": self.max_runs,
            "runs": self.runs,
            "priority": self.priority,
            "category": self.category,
            "owner": self.owner,
            "misfire": self.misfire,
            "paused": int(self.paused),
            "state": int(self.state),
            "next_at_ms": self.next_at_ms,
            "last_at_ms": self.last_at_ms,
            "generation": self.generation,
            "version": self.version,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Advance:
    """Where the materialiser left a schedule: written if the row is still at `version`."""

    id: int
    version: int
    state: ScheduleState
    next_at_ms: int | None
    last_at_ms: int | None
    runs: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockoutRow:
    """One row of the blockouts table; `window_json` is the engine's (absolute or recurring)."""

    id: int = 0
    name: str
    scope: str  #: global, entity, category or schedule
    target: str = ""  #: the entity type, category or schedule name; "" for global
    window_json: str
    policy: str = "delay"  #: delay (fire at the window's end) or skip
    created_at_ms: int = 0

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> BlockoutRow:
        """From the adapters' row tuple, in the field order above."""
        return cls(
            id=int(r[0]),
            name=r[1],
            scope=r[2],
            target=r[3],
            window_json=r[4],
            policy=r[5],
            created_at_ms=int(r[6]),
        )


class ScheduleStore(Protocol):
    """The schedules and blockouts tables of one store. Driver errors surface as StoreError
    (StoreUnavailable when the database cannot be reached), as in ShardingRepository."""

    async def open(self) -> None:
        """Connect and make the tables if missing (a store made by an earlier version gets
        those it lacks). Idempotent."""

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def create(self, row: ScheduleRow) -> ScheduleRow:
        """Store a new schedule (its id is the store's); the row as stored, version 0.
        ScheduleExists if its name is taken, storing nothing."""
        ...

    async def get(self, ref: int | str) -> ScheduleRow:
        """The schedule with this id (int) or name (str); ScheduleNotFound if none."""
        ...

    async def list_schedules(
        self, *, entity: str | None = None, after_id: int = 0, limit: int = 100
    ) -> list[ScheduleRow]:
        """Schedules by id from after_id on (keyset pages), of one entity type if given."""
        ...

    async def due(self, *, before_ms: int, limit: int) -> list[ScheduleRow]:
        """ACTIVE, unpaused schedules whose next_at_ms < before_ms, earliest first."""
        ...

    async def waiting(self, *, after_id: int, limit: int) -> list[ScheduleRow]:
        """WAITING, unpaused schedules by id from after_id on."""
        ...

    async def advance(self, steps: Sequence[Advance], *, now_ms: int) -> int:
        """Write each step on its row if the row is still at the step's version (version + 1,
        updated_at = now_ms), all in one transaction; return rows changed (fewer: a person
        changed some meanwhile, and their change stands)."""
        ...

    async def replace(self, row: ScheduleRow, *, now_ms: int) -> ScheduleRow | None:
        """Write every column of `row` over the stored one if that is still at row.version
        (version + 1, updated_at = now_ms); the row as stored, or None if it changed meanwhile
        (or went). ScheduleExists if the new name is another's."""
        ...

    async def delete(self, schedule_id: int) -> bool:
        """Delete the schedule; False if there was none."""
        ...

    async def create_blockout(self, row: BlockoutRow) -> BlockoutRow:
        """Store a new blockout; ScheduleExists (what='blockout') if its name is taken."""
        ...

    async def blockouts(self) -> list[BlockoutRow]:
        """Every blockout, by id."""
        ...

    async def delete_blockout(self, name: str) -> bool:
        """Delete the blockout of that name; False if there was none."""
        ...

    async def set_category_paused(self, name: str, paused: bool, *, now_ms: int) -> None:
        """Pause the category on every node (a row, paused_at_ms = now_ms; pausing it again
        keeps the first time) or resume it (the row deleted). Idempotent; the name is not
        checked here (the engine's Categories does)."""

    async def paused_categories(self) -> dict[str, int]:
        """The categories paused, with the time each was paused, by name."""
        ...
