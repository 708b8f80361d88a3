"""Figures from fire records: who fired how often, how late; and the median of several runs."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.records import Fires

#: One result line: the keys of benchmarks.common.KEYS, then a workload's own.
Result = dict[str, Any]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (q in 0..100); None when empty."""
    if not sorted_values:
        return None
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def lateness(values: Iterable[float]) -> dict[str, float | None]:
    """p50/p99/max (and min, which shows an early fire) in milliseconds."""
    ordered = sorted(values)
    return {
        "p50_ms": _round(percentile(ordered, 50)),
        "p99_ms": _round(percentile(ordered, 99)),
        "max_ms": _round(ordered[-1] if ordered else None),
        "min_ms": _round(ordered[0] if ordered else None),
    }


def accounting(fires: Fires, expected: Iterable[int]) -> dict[str, int]:
    """lost: expected ids never fired; duplicates: fires beyond the first of an id;
    strangers: fires of ids nobody scheduled (should never happen)."""
    counts = Counter(fires.ids)
    wanted = set(expected)
    return {
        "fired": len(fires),
        "lost": sum(1 for i in wanted if i not in counts),
        "duplicates": sum(c - 1 for c in counts.values()),
        "strangers": sum(c for i, c in counts.items() if i not in wanted),
    }


def first_fires(fires: Fires) -> dict[int, tuple[int, int]]:
    """id -> (scheduled ms, fired µs) of the id's first fire."""
    first: dict[int, tuple[int, int]] = {}
    for i, s, f in zip(fires.ids, fires.scheduled_ms, fires.fired_us, strict=True):
        if i not in first or f < first[i][1]:
            first[i] = (s, f)
    return first


def rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 1) if seconds > 0 else None


def ratio(value: Any, reference: Any) -> float | None:
    if not isinstance(value, int | float) or not isinstance(reference, int | float):
        return None
    return round(value / reference, 3) if reference else None


def median_of(runs: Sequence[Result]) -> Result:
    """One line from several runs of the same workload: the median of each number."""
    summary = dict(runs[0])
    for key, value in runs[0].items():
        numbers = [r.get(key) for r in runs]
        if isinstance(value, int | float) and not isinstance(value, bool):
            present = [x for x in numbers if isinstance(x, int | float)]
            summary[key] = _round(statistics.median(present)) if present else None
    summary["runs"] = len(runs)
    summary["summary"] = "median"
    return summary


def _round(value: float | None) -> Any:
    if value is None:
        return None
    return round(value, 3) if isinstance(value, float) else value
