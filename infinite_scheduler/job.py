"""Per-job options: what a job is stored with beyond its entity.

``engine.schedule()`` and ``SchedulerClient.store()`` take entities and Jobs mixed; a plain
entity is ``Job(entity)`` with the defaults::

    Job(sms, depends_on=(DependsOn("orders", 7, must="succeed"),))
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

from repos.dependencies import Must

MustName = Literal["complete", "succeed"]
_MUST = {"complete": Must.COMPLETE, "succeed": Must.SUCCEED}


@dataclass(frozen=True, slots=True)
class DependsOn:
    """A job this one waits for: by entity type name and id.

    ``must="complete"``: the job finished, whatever the outcome (DONE, FAILED, CANCELLED or
    MISSED). ``must="succeed"``: it is DONE; if it FAILED, or was CANCELLED or MISSED, the
    waiting job fails, its last_error naming this dependency. The id stands for every row of it
    stored when the waiting job is stored, or stored in the same call (ids are unique per shard
    only, so usually one).
    """

    entity: str
    id: int | str
    must: MustName = "complete"

    def __post_init__(self) -> None:
        if self.must not in _MUST:
            raise ValueError(
                f"DependsOn({self.entity!r}, {self.id!r}): must is 'complete' or 'succeed',"
                f" not {self.must!r}"
            )
        if type(self.id) not in (int, str):
            raise ValueError(
                f"DependsOn({self.entity!r}, {self.id!r}): id is an int or a str, not"
                f" {type(self.id).__name__}"
            )

    @property
    def rule(self) -> Must:
        return _MUST[self.must]

    def __str__(self) -> str:
        return f"{self.entity} {self.id!r} (must {self.must})"


@dataclass(frozen=True, slots=True)
class Job:
    """An entity to store, with its options. `depends_on`: the jobs it waits for; it fires
    when they are done and its own time has come, never before."""

    entity: Any
    _: KW_ONLY
    depends_on: tuple[DependsOn, ...] = ()

    def __post_init__(self) -> None:
        depends_on = tuple(self.depends_on)
        for dep in depends_on:
            if not isinstance(dep, DependsOn):
                raise ValueError(f"Job.depends_on takes DependsOn values, not {dep!r}")
        object.__setattr__(self, "depends_on", depends_on)


def split_jobs(items: list[Any]) -> tuple[list[Any], list[Job]]:
    """(entities stored as they are, jobs that wait for others): a Job without dependencies
    counts as its entity. A call of plain entities costs one type check per item."""
    if not any(type(item) is Job for item in items):
        return items, []
    plain: list[Any] = []
    waiting: list[Job] = []
    for item in items:
        if type(item) is not Job:
            plain.append(item)
        elif item.depends_on:
            waiting.append(item)
        else:
            plain.append(item.entity)
    return plain, waiting
