"""Reading the execution history (repos/history.py): a job's attempts, filtered pages, and the
SLA summary of a window. One small class that SchedulerClient, the CLI and the API call.

The SLA's counts (fired, late, failed, missed) are exact, counted in the store; its
percentiles of lateness and duration are taken over the window's newest fired attempts, at
most SLA_SAMPLE of them (so exact for windows up to that many attempts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from infinite_scheduler.clock import Clock
from repos.base import EntitySpec
from repos.history import (
    SLA_SAMPLE,
    HistoryCursor,
    HistoryFilter,
    HistoryRow,
    HistoryStore,
    SlaReport,
    summarize,
)

#: The most rows one page or one job's listing returns.
MAX_PAGE = 10_000
_WINDOW = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_window(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d`` or plain seconds, in milliseconds; ValueError else."""
    match = _WINDOW.fullmatch(text) if isinstance(text, str) else None
    window_ms = int(float(match.group(1)) * _UNIT_MS[match.group(2)]) if match else 0
    if window_ms <= 0:
        raise ValueError(f"window {text!r} is not a positive duration such as 90s, 15m, 1h or 7d")
    return window_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPage:
    """One page, newest first; `cursor`: pass it for the next page (None: this was the last)."""

    rows: tuple[HistoryRow, ...]
    cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"rows": [r.as_dict() for r in self.rows], "cursor": self.cursor}


class ExecutionHistory:
    """The history of a store, read: ``await history.of_job("sms", 1)``, ``page``, ``sla``."""

    def __init__(self, store: HistoryStore, *, clock: Clock, late_threshold_ms: int) -> None:
        self.store = store
        self.clock = clock
        self.late_threshold_ms = late_threshold_ms

    async def of_job(
        self, entity: str | EntitySpec[Any, Any], key: int | str, *, limit: int = 1000
    ) -> list[HistoryRow]:
        """Every attempt of one job (all its rows, whatever their shard), newest first."""
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise ValueError(f"job id {key!r} must be an int or a str")
        return await self.store.attempts(_name(entity), str(key), limit=_limit(limit))

    async def page(
        self, where: HistoryFilter | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> HistoryPage:
        """A page of attempts matching `where`, newest first; `cursor` from the page before.
        A cursor that is not one a page returned raises BadCursor (a ValueError)."""
        after = None if cursor is None else HistoryCursor.decode(cursor)
        limit = _limit(limit)
        rows = await self.store.page(where or HistoryFilter(), after=after, limit=limit)
        last = rows[-1].cursor.encode() if len(rows) == limit else None
        return HistoryPage(rows=tuple(rows), cursor=last)

    async def sla(
        self,
        *,
        entity: str | EntitySpec[Any, Any] | None = None,
        category: str | None = None,
        window_ms: int = 3_600_000,
    ) -> SlaReport:
        """The SLA summary of the attempts that ended in the last `window_ms`, per entity type
        and category, and in all."""
        if isinstance(window_ms, bool) or not isinstance(window_ms, int) or window_ms <= 0:
            raise ValueError(f"window_ms {window_ms!r} must be a positive int")
        end_ms = self.clock.now_ms() + 1
        start_ms = end_ms - window_ms
        name = None if entity is None else _name(entity)
        counts = await self.store.sla_counts(
            start_ms=start_ms,
            end_ms=end_ms,
            late_threshold_ms=self.late_threshold_ms,
            entity=name,
            category=category,
        )
        sample = await self.store.sla_sample(
            start_ms=start_ms, end_ms=end_ms, limit=SLA_SAMPLE, entity=name, category=category
        )
        return summarize(
            counts,
            sample,
            start_ms=start_ms,
            end_ms=end_ms,
            late_threshold_ms=self.late_threshold_ms,
        )


def _name(entity: str | EntitySpec[Any, Any]) -> str:
    if isinstance(entity, EntitySpec):
        return entity.name
    if not isinstance(entity, str) or not entity:
        raise ValueError(f"entity {entity!r} must be an entity type's name or its EntitySpec")
    return entity


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_PAGE:
        raise ValueError(f"limit {limit!r} must be an int from 1 to {MAX_PAGE}")
    return limit
