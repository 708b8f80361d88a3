"""Per-job options: what a job is stored with beyond its entity.

``engine.schedule()`` and ``SchedulerClient.schedule()`` take entities and Jobs mixed; a plain
entity is ``Job(entity)``: priority 500, no category, no dependency::

    Job(sms, priority=900, category="alerts")
    Job(sms, depends_on=(DependsOn("orders", 7, must="succeed"),))

Priority and category are stored in the job's row (columns ``priority`` and ``category``) and
read by the claim: a node orders the jobs it cannot run at once by them
(infinite_scheduler/waiting.py). A job with dependencies is stored WAITING until they are done
(infinite_scheduler/dependency_store.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Generic, Literal, TypeVar

from infinite_scheduler.errors import JobOptionError
from infinite_scheduler.jobs import by_type
from repos.base import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    EncodedRow,
    pack,
)
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


TEntity = TypeVar("TEntity")
T = TypeVar("T")

#: (priority, category) of each job of a batch, in order; None when all have the defaults.
Options = list[tuple[int, str]] | None


@dataclass(frozen=True, slots=True)
class Job(Generic[TEntity]):
    """One job to store: the entity, how it ranks when more jobs are due than handlers can
    run, and what it waits for. A priority outside 1..1000 raises JobOptionError here; a
    category no ``[categories.NAME]`` defines, when it is scheduled."""

    entity: TEntity
    _: KW_ONLY
    priority: int = DEFAULT_PRIORITY
    category: str = ""
    #: The jobs it waits for: it fires when they are done and its own time has come.
    depends_on: tuple[DependsOn, ...] = ()

    def __post_init__(self) -> None:
        depends_on = tuple(self.depends_on)
        for dep in depends_on:
            if not isinstance(dep, DependsOn):
                raise ValueError(f"Job.depends_on takes DependsOn values, not {dep!r}")
        object.__setattr__(self, "depends_on", depends_on)
        owner = type(self.entity).__name__
        priority = self.priority
        if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise JobOptionError(
                owner, "priority", priority, f"must be an int {MIN_PRIORITY}..{MAX_PRIORITY}"
            )
        if not isinstance(self.category, str):
            raise JobOptionError(owner, "category", self.category, "must be a category's name")

    @property
    def options(self) -> int:
        """Priority and category packed as the wheel holds them (0 for the defaults)."""
        return pack(self.priority, self.category)


def group_jobs(
    items: list[Any],
    known: Mapping[type, T],
    unknown: Callable[[list[str]], Exception],
    categories: Collection[str],
) -> dict[T, tuple[list[Any], Options]]:
    """The entities of `items` (plain, or in Jobs) grouped as jobs.by_type groups them, each
    group with its jobs' options (None: all defaults). Raises, before anything is stored,
    `unknown(names)` for entity classes `known` lacks, and JobOptionError for a category not
    in `categories`. A call without a Job costs what by_type does."""
    if Job not in set(map(type, items)):
        return {
            target: (entities, None) for target, entities in by_type(items, known, unknown).items()
        }
    jobs = [item if type(item) is Job else Job(item) for item in items]
    check_categories(jobs, categories)
    by_class = by_type([job.entity for job in jobs], known, unknown)  # checks the classes
    grouped: dict[T, tuple[list[Any], list[tuple[int, str]]]] = {t: ([], []) for t in by_class}
    for job in jobs:
        entities, options = grouped[known[type(job.entity)]]
        entities.append(job.entity)
        options.append((job.priority, job.category))
    return {
        target: (entities, None if all(o == (DEFAULT_PRIORITY, "") for o in options) else options)
        for target, (entities, options) in grouped.items()
    }


def check_categories(jobs: Sequence[Job[Any]], categories: Collection[str]) -> None:
    """JobOptionError for the first job of a category not in `categories`."""
    for job in jobs:
        refused = category_refusal(job.category, categories)
        if refused is not None:
            raise JobOptionError(type(job.entity).__name__, "category", job.category, refused)


def category_refusal(category: str, categories: Collection[str]) -> str | None:
    """Why a job, schedule or blockout may not name `category` (None: it may): "known" is
    defined by a ``[categories.NAME]`` of the config; "" is no category."""
    if not category or category in categories:
        return None
    configured = ", ".join(map(repr, sorted(categories))) or "none"
    return (
        f"unknown category (configured: {configured}); [categories.{category}]"
        " in the config defines it"
    )


def with_options(rows: Sequence[EncodedRow], options: Options) -> list[EncodedRow]:
    """The encoded rows of a batch with its jobs' priorities and categories."""
    if options is None:
        return list(rows)
    return [
        EncodedRow(row.key, row.at_ms, row.payload, priority, category)
        for row, (priority, category) in zip(rows, options, strict=True)
    ]


def split_jobs(items: list[Any]) -> tuple[list[Any], list[Job[Any]]]:
    """(items stored as they are, jobs that wait for others): a Job without dependencies stays
    in the first list, with its options. A call of plain entities costs one type check per
    item."""
    if not any(type(item) is Job for item in items):
        return items, []
    now: list[Any] = []
    waiting: list[Job[Any]] = []
    for item in items:
        if type(item) is Job and item.depends_on:
            waiting.append(item)
        else:
            now.append(item)
    return now, waiting


def entity_of(item: Any) -> Any:
    """The entity of an item of a schedule() call: a Job's, or the item itself."""
    return item.entity if type(item) is Job else item
