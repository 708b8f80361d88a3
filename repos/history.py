"""Execution history: one row per attempt of a job, written in the transaction of the ack that
closes the attempt. The contract, its rows, and the pure arithmetic of the SLA summary.

The rows live in store-wide tables beside the shards, one per UTC day of the attempt's end:
``history_20261122``. A table per day on every store and layout (not a partition of one table
on the partitioned layout): the ack's INSERT names one table, a day's drop is one DROP TABLE
(as cheap as DROP PARTITION), and no partition has to be made ahead in order. The entity
repositories write the rows (``mark_done(..., history=...)``, ``Failure.history``): the
statement rides in the ack's own transaction, so the history says exactly what the ack wrote;
an ack that fails or is fenced writes no row. :class:`HistoryStore` makes days ahead, drops
expired ones and reads.

Outcomes of an attempt::

    OK        the handler returned
    RETRY     the handler failed or timed out, and the job is due again (a later attempt)
    FAILED    the handler failed on the last attempt (or the payload no longer decodes)
    TIMEOUT   the handler ran past its timeout on the last attempt
    MISSED    never fired: misfire policy do_nothing, or a blockout skipped it
    CANCELLED cancelled while claimed (reserved for the control service: the engine writes none)

Times are epoch milliseconds passed in by the caller, as everywhere in the store.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import orjson

from repos.shards import Granularity, ShardBounds, bounds_of, check_identifier

HISTORY_TABLE = "history"
#: An attempt's error is kept to this many characters (a traceback may be megabytes).
MAX_ERROR_CHARS = 1000
#: History tables are made and dropped by UTC day of the attempt's end.
HISTORY_GRANULARITY = Granularity.DAY
#: The SLA's percentiles are taken over at most this many of the window's newest fired rows.
SLA_SAMPLE = 100_000


class Outcome(IntEnum):
    """How an attempt ended, stored as a TINYINT in ``outcome``."""

    OK = 0  #: the handler returned
    FAILED = 1  #: the handler failed on the last attempt
    TIMEOUT = 2  #: the handler ran past its timeout on the last attempt
    RETRY = 3  #: the handler failed or timed out, and the job is due again
    CANCELLED = 4  #: cancelled while claimed (the control service's)
    MISSED = 5  #: never fired, on purpose (misfire policy do_nothing, a blockout's skip)


#: Outcomes of an attempt whose handler ran.
FIRED = frozenset({Outcome.OK, Outcome.FAILED, Outcome.TIMEOUT, Outcome.RETRY})
#: Outcomes of an attempt whose handler ran and did not succeed.
NOT_OK = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.RETRY})
_BY_NAME = {o.name.lower(): o for o in Outcome}


def outcome_named(name: str) -> Outcome:
    """``ok``, ``failed``, ... (any case) as an Outcome; ValueError naming the allowed ones."""
    found = _BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"outcome {name!r} is not one of {', '.join(_BY_NAME)}")
    return found


def outcome_label(outcome: Outcome | int) -> str:
    """``ok``, or ``outcome 9`` for a value this version does not know."""
    return outcome.name.lower() if isinstance(outcome, Outcome) else f"outcome {outcome}"


class Attempt(NamedTuple):
    """One attempt as the engine hands it to the ack (a tuple: one is made per job).

    `fired_ms` is 0 for an attempt that never fired (MISSED); `error` None for OK.
    """

    key: int | str
    at_ms: int  #: the row's sharding time: with the key, which row
    attempt: int
    node: str
    category: str
    due_ms: int
    fired_ms: int
    finished_ms: int
    outcome: int
    error: str | None


_FINISHED = itemgetter(Attempt._fields.index("finished_ms"))
_CUT = " ...[truncated]"


def bounded_error(error: str | None) -> str | None:
    """The error as stored: at most MAX_ERROR_CHARS characters, cut with a mark."""
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - len(_CUT)] + _CUT


def history_day(at_ms: int) -> ShardBounds:
    return bounds_of(at_ms, HISTORY_GRANULARITY)


def history_table(day: ShardBounds) -> str:
    return check_identifier("history table", f"{HISTORY_TABLE}_{day.suffix}")


def by_table(attempts: Iterable[Attempt]) -> dict[str, list[Attempt]]:
    """Attempts by the history table of their end's day (usually one table: found without a
    Python step per attempt)."""
    attempts = list(attempts)
    if not attempts:
        return {}
    span = HISTORY_GRANULARITY.span_ms
    ends = list(map(_FINISHED, attempts))
    first, last = min(ends), max(ends)
    if first - first % span == last - last % span:
        return {history_table(history_day(first)): attempts}
    tables: dict[str, list[Attempt]] = {}
    day_tables: dict[int, str] = {}
    for a in attempts:
        start = a.finished_ms - a.finished_ms % span
        name = day_tables.get(start)
        if name is None:
            name = day_tables[start] = history_table(history_day(a.finished_ms))
        tables.setdefault(name, []).append(a)
    return tables


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRow:
    """One attempt as stored. `job_id` is the id as text (the table serves every entity type)."""

    entity: str
    job_id: str
    at_ms: int
    attempt: int
    node: str
    category: str
    due_ms: int
    fired_ms: int | None  #: None: never fired (MISSED, CANCELLED)
    finished_ms: int
    outcome: Outcome | int
    error: str | None

    @property
    def duration_ms(self) -> int | None:
        return None if self.fired_ms is None else self.finished_ms - self.fired_ms

    @property
    def lateness_ms(self) -> int | None:
        return None if self.fired_ms is None else self.fired_ms - self.due_ms

    @property
    def cursor(self) -> HistoryCursor:
        """Pass to page(after=...) for the rows after this one."""
        return HistoryCursor(self.finished_ms, self.entity, self.job_id, self.at_ms, self.attempt)

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> HistoryRow:
        """From the adapters' columns: entity, job_id, job_at, attempt, node, category,
        due_at, fired_at (0: never), finished_at, outcome, error."""
        outcome = int(r[9])
        return cls(
            entity=r[0],
            job_id=r[1],
            at_ms=int(r[2]),
            attempt=int(r[3]),
            node=r[4],
            category=r[5],
            due_ms=int(r[6]),
            fired_ms=int(r[7]) or None,
            finished_ms=int(r[8]),
            outcome=Outcome(outcome) if outcome in Outcome._value2member_map_ else outcome,
            error=r[10],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "id": self.job_id,
            "at_ms": self.at_ms,
            "attempt": self.attempt,
            "node": self.node,
            "category": self.category,
            "due_ms": self.due_ms,
            "fired_ms": self.fired_ms,
            "finished_ms": self.finished_ms,
            "duration_ms": self.duration_ms,
            "lateness_ms": self.lateness_ms,
            "outcome": outcome_label(self.outcome),
            "error": self.error,
        }


class BadCursor(ValueError):
    """A history page cursor that is not one this version made."""

    def __init__(self, text: str) -> None:
        super().__init__(f"history cursor {text[:80]!r} is not a cursor a history page returned")


class HistoryCursor(NamedTuple):
    """Where a history page ended: the last row's (finished_ms, entity, job_id, at_ms,
    attempt), the page order's key (newest first). `encode()` makes an opaque text of it."""

    finished_ms: int
    entity: str
    job_id: str
    at_ms: int
    attempt: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(list(self))).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> HistoryCursor:
        """The cursor `encode` made; BadCursor for anything else."""
        try:
            padded = text + "=" * (-len(text) % 4)
            f, e, j, a, n = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            ints = (f, a, n)
            if not all(type(v) is int for v in ints) or not (
                isinstance(e, str) and isinstance(j, str)
            ):
                raise TypeError
        except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
            raise BadCursor(text) from exc
        return cls(f, e, j, a, n)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryFilter:
    """Which rows a page lists: of one entity type and one outcome, if given, ended in
    [start_ms, end_ms) (each bound optional)."""

    entity: str | None = None
    outcome: Outcome | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def args(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "outcome": None if self.outcome is None else int(self.outcome),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }


def cursor_args(after: HistoryCursor | None) -> dict[str, Any]:
    """A page's keyset parameters (all None without a cursor)."""
    names = ("after_finished", "after_entity", "after_job_id", "after_at", "after_attempt")
    return dict(zip(names, after or (None,) * 5, strict=True))


def window_args(
    start_ms: int, end_ms: int, entity: str | None, category: str | None
) -> dict[str, Any]:
    """The SLA statements' parameters."""
    return {"start_ms": start_ms, "end_ms": end_ms, "entity": entity, "category": category}


def day_outside(
    day: ShardBounds, start_ms: int | None, end_ms: int | None, after: HistoryCursor | None = None
) -> bool:
    """Whether no row of this day's table can match: the window or the cursor excludes it."""
    if start_ms is not None and day.end_ms <= start_ms:
        return True
    if end_ms is not None and day.start_ms >= end_ms:
        return True
    return after is not None and day.start_ms > after.finished_ms


class SlaCount(NamedTuple):
    """The store's count of a window's attempts of one entity type, category and outcome;
    `late`: those fired more than the threshold after their due time."""

    entity: str
    category: str
    outcome: int
    attempts: int
    late: int


class SlaSample(NamedTuple):
    """One fired attempt of the window, for the percentiles."""

    entity: str
    category: str
    lateness_ms: int
    duration_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaSummary:
    """The attempts of one entity type and category (``*``: all of them) in a window.

    Shares are of `fired` (attempts whose handler ran): `late_share` fired more than the
    threshold after their due time, `failed_share` did not succeed (failed, timed out, or
    retried). Percentiles (nearest rank) are over `sampled` of the fired ones, the newest
    (all of them unless the window held more than SLA_SAMPLE); None when none fired.
    """

    entity: str
    category: str
    fired: int
    ok: int
    failed: int
    timeout: int
    retried: int
    missed: int
    cancelled: int
    late: int
    sampled: int
    lateness_p50_ms: int | None
    lateness_p99_ms: int | None
    duration_p50_ms: int | None
    duration_p99_ms: int | None

    @property
    def late_share(self) -> float:
        return self.late / self.fired if self.fired else 0.0

    @property
    def failed_share(self) -> float:
        return (self.failed + self.timeout + self.retried) / self.fired if self.fired else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "category": self.category,
            "fired": self.fired,
            "ok": self.ok,
            "failed": self.failed,
            "timeout": self.timeout,
            "retried": self.retried,
            "missed": self.missed,
            "cancelled": self.cancelled,
            "late": self.late,
            "late_share": self.late_share,
            "failed_share": self.failed_share,
            "sampled": self.sampled,
            "lateness_p50_ms": self.lateness_p50_ms,
            "lateness_p99_ms": self.lateness_p99_ms,
            "duration_p50_ms": self.duration_p50_ms,
            "duration_p99_ms": self.duration_p99_ms,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaReport:
    """An SLA summary per entity type and category over [start_ms, end_ms), and in all."""

    start_ms: int
    end_ms: int
    late_threshold_ms: int
    groups: tuple[SlaSummary, ...]
    total: SlaSummary

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "late_threshold_ms": self.late_threshold_ms,
            "groups": [g.as_dict() for g in self.groups],
            "total": self.total.as_dict(),
        }


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile (0 < p <= 100) of values sorted ascending; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def summarize(
    counts: Iterable[SlaCount],
    sample: Iterable[SlaSample],
    *,
    start_ms: int,
    end_ms: int,
    late_threshold_ms: int,
) -> SlaReport:
    """The report of a window from the store's counts and sample (pure)."""
    tallies: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
    for c in counts:
        group = tallies.setdefault((c.entity, c.category), {})
        n, late = group.get(c.outcome, (0, 0))
        group[c.outcome] = (n + int(c.attempts), late + int(c.late or 0))
    samples: dict[tuple[str, str], list[SlaSample]] = {}
    for s in sample:
        samples.setdefault((s.entity, s.category), []).append(s)
        tallies.setdefault((s.entity, s.category), {})
    groups = tuple(
        _summary(e, c, tallies[(e, c)], samples.get((e, c), [])) for e, c in sorted(tallies)
    )
    merged: dict[int, tuple[int, int]] = {}
    for group in tallies.values():
        for outcome, (n, late) in group.items():
            m = merged.get(outcome, (0, 0))
            merged[outcome] = (m[0] + n, m[1] + late)
    every = [s for found in samples.values() for s in found]
    return SlaReport(
        start_ms=start_ms,
        end_ms=end_ms,
        late_threshold_ms=late_threshold_ms,
        groups=groups,
        total=_summary("*", "*", merged, every),
    )


def _summary(
    entity: str, category: str, tally: dict[int, tuple[int, int]], sample: list[SlaSample]
) -> SlaSummary:
    def n(outcome: Outcome) -> int:
        return tally.get(outcome, (0, 0))[0]

    lateness = sorted(max(0, s.lateness_ms) for s in sample)
    durations = sorted(max(0, s.duration_ms) for s in sample)
    return SlaSummary(
        entity=entity,
        category=category,
        fired=sum(n(o) for o in FIRED),
        ok=n(Outcome.OK),
        failed=n(Outcome.FAILED),
        timeout=n(Outcome.TIMEOUT),
        retried=n(Outcome.RETRY),
        missed=n(Outcome.MISSED),
        cancelled=n(Outcome.CANCELLED),
        late=sum(tally.get(o, (0, 0))[1] for o in FIRED),
        sampled=len(sample),
        lateness_p50_ms=percentile(lateness, 50),
        lateness_p99_ms=percentile(lateness, 99),
        duration_p50_ms=percentile(durations, 50),
        duration_p99_ms=percentile(durations, 99),
    )


class HistoryStore(Protocol):
    """The history tables of one store: made ahead, dropped past retention, read. Writing is
    the entity repositories' (in the ack's transaction). Driver errors surface as StoreError
    (StoreUnavailable when the database cannot be reached), as in ShardingRepository."""

    async def open(self) -> None:
        """Connect. Idempotent; makes no table (ensure_days does)."""

    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def ensure_days(self, start_ms: int, end_ms: int) -> list[str]:
        """Make the history table of every day overlapping [start_ms, end_ms) that is missing
        (safe when nodes race); return the names of those days' tables."""
        ...

    async def days(self) -> list[tuple[ShardBounds, str]]:
        """The live history tables, oldest first."""
        ...

    async def drop_days_before(self, cutoff_ms: int) -> list[str]:
        """Drop every history table whose day ends at or before cutoff_ms, whole; return their
        names, oldest first."""
        ...

    async def attempts(self, entity: str, job_id: str, *, limit: int = 1000) -> list[HistoryRow]:
        """Every attempt of that job (its id as text) in the live days, newest first."""
        ...

    async def page(
        self, where: HistoryFilter, *, after: HistoryCursor | None = None, limit: int = 100
    ) -> list[HistoryRow]:
        """Rows matching `where`, newest first (by finished_ms, then entity, id, sharding time
        and attempt, all descending); keyset: pass the last row's cursor as `after`."""
        ...

    async def sla_counts(
        self,
        *,
        start_ms: int,
        end_ms: int,
        late_threshold_ms: int,
        entity: str | None = None,
        category: str | None = None,
    ) -> list[SlaCount]:
        """Attempts ended in [start_ms, end_ms), counted in the store by entity type,
        category and outcome, with how many of them fired late."""
        ...

    async def sla_sample(
        self,
        *,
        start_ms: int,
        end_ms: int,
        limit: int,
        entity: str | None = None,
        category: str | None = None,
    ) -> list[SlaSample]:
        """Up to `limit` fired attempts ended in [start_ms, end_ms), the newest first."""
        ...
