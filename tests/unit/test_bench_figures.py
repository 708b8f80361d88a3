"""The harness's own arithmetic: a wrong percentile or a miscounted duplicate would make every
figure in benchmarks/RESULTS.md wrong, so it is tested like engine code (no database needed)."""

from __future__ import annotations

import asyncio
from array import array
from pathlib import Path
from typing import Any

from benchmarks.cpu import CpuUse
from benchmarks.loader import in_parallel
from benchmarks.records import RECORD_BYTES, Fires, Tail, decode, read
from benchmarks.stats import accounting, lateness, median_of, percentile, rate, ratio


def fires(*records: tuple[int, int, int]) -> Fires:
    f = Fires()
    f.extend(array("q", [v for r in records for v in r]))
    return f


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_lateness_is_fired_minus_scheduled_in_ms() -> None:
    f = fires((1, 1_000, 1_000_500), (2, 2_000, 2_003_000), (3, 3_000, 2_999_000))
    assert f.lateness_ms() == [0.5, 3.0, -1.0]
    assert lateness(f.lateness_ms()) == {
        "p50_ms": 0.5,
        "p99_ms": 3.0,
        "max_ms": 3.0,
        "min_ms": -1.0,
    }
    assert lateness([]) == {"p50_ms": None, "p99_ms": None, "max_ms": None, "min_ms": None}


def test_accounting_counts_lost_duplicates_and_strangers() -> None:
    f = fires((1, 0, 0), (2, 0, 0), (2, 0, 1), (2, 0, 2), (9, 0, 0))
    assert accounting(f, range(1, 5)) == {"fired": 5, "lost": 2, "duplicates": 2, "strangers": 1}


def test_median_of_runs_takes_each_number_and_keeps_the_rest() -> None:
    runs = [
        {"workload": "w2", "jobs_per_s": 10.0, "lost": 0, "ok": True, "p99_ms": None},
        {"workload": "w2", "jobs_per_s": 30.0, "lost": 2, "ok": True, "p99_ms": None},
        {"workload": "w2", "jobs_per_s": 20.0, "lost": 1, "ok": True, "p99_ms": None},
    ]
    summary = median_of(runs)
    assert summary["jobs_per_s"] == 20.0 and summary["lost"] == 1
    assert summary["workload"] == "w2" and summary["ok"] is True and summary["p99_ms"] is None
    assert (summary["runs"], summary["summary"]) == (3, "median")


def test_rate_and_ratio_refuse_what_has_no_meaning() -> None:
    assert rate(1000, 0.5) == 2000.0 and rate(1000, 0) is None
    assert ratio(30.0, 60.0) == 0.5
    assert ratio(None, 60.0) is None and ratio(30.0, None) is None and ratio(30.0, 0) is None


def test_a_record_cut_short_by_kill_9_is_dropped(tmp_path: Path) -> None:
    whole = array("q", [1, 10, 100, 2, 20, 200]).tobytes()
    assert list(decode(whole + whole[: RECORD_BYTES - 3])) == [1, 10, 100, 2, 20, 200]
    path = tmp_path / "fires.rec"
    path.write_bytes(whole[:-5])
    assert list(read(path).ids) == [1]


def test_tail_reads_only_what_was_appended_and_waits_for_a_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "fires.rec"
    tail = Tail(path)
    assert tail.poll() == 0  # no file yet
    one, two = array("q", [1, 10, 100]).tobytes(), array("q", [2, 20, 200]).tobytes()
    path.write_bytes(one + two[:10])
    assert tail.poll() == 1
    with path.open("ab") as f:
        f.write(two[10:])
    assert tail.poll() == 1
    assert list(tail.fires.ids) == [1, 2] and list(tail.fires.fired_us) == [100, 200]


def test_cpu_per_job_is_microseconds_and_none_where_unread() -> None:
    assert CpuUse(server_s=1.28, client_s=1.03).per_job_us(100_000) == {
        "server_cpu_us_per_job": 12.8,
        "client_cpu_us_per_job": 10.3,
    }
    assert CpuUse(server_s=None, client_s=0.5).per_job_us(1000) == {
        "server_cpu_us_per_job": None,
        "client_cpu_us_per_job": 500.0,
    }
    assert CpuUse(server_s=1.0, client_s=1.0).per_job_us(0)["client_cpu_us_per_job"] is None


async def test_in_parallel_hands_each_batch_to_exactly_one_busy_worker() -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}
    running = most = 0

    def worker(name: str) -> Any:
        async def work(batch: int) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001)
            seen[name].append(batch)
            running -= 1

        return work

    await in_parallel(iter(range(20)), [worker("a"), worker("b")])
    assert sorted(seen["a"] + seen["b"]) == list(range(20))
    assert seen["a"] and seen["b"] and most == 2


def test_repeated_runs_take_medians_per_node_count() -> None:
    """W6 prints a line per node count: --repeat matches lines by it, not across counts."""
    from benchmarks.__main__ import _medians

    def line(nodes: int, rate: float) -> dict[str, Any]:
        return {"workload": "w6", "store": "mysql-multi", "nodes": nodes, "jobs_per_s": rate}

    runs = [
        [line(1, 100.0), line(3, 90.0)],
        [line(1, 120.0), line(3, 60.0)],
        [line(1, 110.0), line(3, 80.0)],
    ]
    medians = {m["nodes"]: m["jobs_per_s"] for m in _medians(runs)}
    assert medians == {1: 110.0, 3: 80.0}
