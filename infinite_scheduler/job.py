"""Per-job options: ``Job(entity, priority=..., category=...)``, given to schedule() in place of
a plain entity (which means ``Job(entity)``: priority 500, no category).

The options are stored in the job's row (columns ``priority`` and ``category``) and read by the
claim: a node orders the jobs it cannot run at once by them (infinite_scheduler/waiting.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Generic, TypeVar

from infinite_scheduler.errors import JobOptionError
from infinite_scheduler.jobs import by_type
from repos.base import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    EncodedRow,
    pack,
)

TEntity = TypeVar("TEntity")
T = TypeVar("T")

#: (priority, category) of each job of a batch, in order; None when all have the defaults.
Options = list[tuple[int, str]] | None


@dataclass(frozen=True, slots=True)
class Job(Generic[TEntity]):
    """One job to store: the entity, and how it ranks when more jobs are due than handlers can
    run. A priority outside 1..1000 raises JobOptionError here; a category no
    ``[categories.NAME]`` defines, when it is scheduled."""

    entity: TEntity
    _: KW_ONLY
    priority: int = DEFAULT_PRIORITY
    category: str = ""

    def __post_init__(self) -> None:
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
    for job in jobs:
        if job.category and job.category not in categories:
            configured = ", ".join(map(repr, sorted(categories))) or "none"
            raise JobOptionError(
                type(job.entity).__name__,
                "category",
                job.category,
                f"unknown category (configured: {configured}); [categories.{job.category}]"
                " in the config defines it",
            )
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


def with_options(rows: Sequence[EncodedRow], options: Options) -> list[EncodedRow]:
    """The encoded rows of a batch with its jobs' priorities and categories."""
    if options is None:
        return list(rows)
    return [
        EncodedRow(row.key, row.at_ms, row.payload, priority, category)
        for row, (priority, category) in zip(rows, options, strict=True)
    ]
