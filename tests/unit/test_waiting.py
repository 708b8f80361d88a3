"""The dispatcher's waiting queue: FIFO for default jobs, effective priority otherwise, and
categories held back by their gate (infinite_scheduler/waiting.py). Pure: time is passed in."""

from __future__ import annotations

import pytest

from infinite_scheduler.waiting import CategoryGate, Waiting
from repos.base import ClaimedJob, category_code, pack

T0 = 1_800_000_000_000
MINUTE = 60_000


def job(key: int, due_ms: int, priority: int = 500, category: str = "") -> ClaimedJob:
    return ClaimedJob(key, due_ms, due_ms, 1, b"{}", pack(priority, category))


def drain(waiting: Waiting, now_ms: int) -> list[int | str]:
    order = []
    while (picked := waiting.pop(now_ms)) is not None:
        order.append(picked[1].key)
        waiting.finished(picked[1])
    return order


def test_default_jobs_wait_in_a_plain_fifo_in_the_order_they_came() -> None:
    waiting = Waiting(boost_per_minute=10)
    waiting.extend("lane", [job(1, T0 + 5), job(2, T0), job(3, T0 + 1)])
    assert len(waiting.fifo) == 3 and len(waiting) == 3  # no heap, no rank computed
    assert drain(waiting, T0 + 10) == [1, 2, 3]


def test_one_job_that_is_not_default_ranks_them_all_by_priority_then_due_time() -> None:
    waiting = Waiting(boost_per_minute=0)
    waiting.extend("lane", [job(1, T0 + 2), job(2, T0 + 1)])
    waiting.extend("lane", [job(3, T0, priority=900), job(4, T0, priority=100), job(5, T0)])
    assert not waiting.fifo and len(waiting) == 5
    # 500s by due time: 5 (T0) before 2 (T0+1) before 1 (T0+2).
    assert drain(waiting, T0 + 10) == [3, 5, 2, 1, 4]
    waiting.extend("lane", [job(6, T0)])  # empty again: back to the FIFO
    assert len(waiting.fifo) == 1


def test_the_age_boost_lifts_an_old_low_priority_job_over_a_new_high_one() -> None:
    old, new = job(1, T0 - 60 * MINUTE, priority=100), job(2, T0 - MINUTE, priority=600)
    boosted = Waiting(boost_per_minute=10)  # 100 + 600 points vs 600 + 10
    boosted.extend("lane", [new, old])
    assert drain(boosted, T0) == [1, 2]
    plain = Waiting(boost_per_minute=0)
    plain.extend("lane", [new, old])
    assert drain(plain, T0) == [2, 1]


def test_the_rank_is_the_effective_priority_at_any_later_time() -> None:
    """priority + boost * minutes overdue orders them alike whenever they are compared."""
    jobs = [job(i, T0 - i * 7 * MINUTE, priority=100 + 97 * i % 900) for i in range(20)]
    for now_ms in (T0, T0 + 3 * MINUTE, T0 + 500 * MINUTE):
        waiting = Waiting(boost_per_minute=2.5)
        waiting.extend("lane", jobs)
        effective = {
            j.key: (100 + 97 * int(j.key) % 900) + 2.5 * (now_ms - j.due_ms) / MINUTE for j in jobs
        }
        assert drain(waiting, now_ms) == sorted(effective, key=lambda k: -effective[k])


def test_a_category_at_its_concurrency_limit_waits_and_the_others_go_on() -> None:
    gate = CategoryGate({"reports": (2, None)})
    waiting = Waiting(gate=gate)
    reports = [job(i, T0, priority=900, category="reports") for i in range(1, 5)]
    waiting.extend("lane", [*reports, job(9, T0 + 1, priority=100)])
    first, second = waiting.pop(T0), waiting.pop(T0)
    assert first and second and {first[1].key, second[1].key} == {1, 2}
    assert waiting.held_back(T0) == 2
    picked = waiting.pop(T0)
    assert picked and picked[1].key == 9  # lower priority, but its category may start
    assert waiting.pop(T0) is None  # reports at 2 running
    waiting.finished(first[1])
    picked = waiting.pop(T0)
    assert picked and picked[1].key == 3 and gate.running(category_code("reports")) == 2


def test_a_rate_limit_spaces_the_starts_of_its_category() -> None:
    gate = CategoryGate({"mail": (None, 4)})  # one start per 250 ms
    waiting = Waiting(gate=gate)
    waiting.extend("lane", [job(i, T0, category="mail") for i in range(1, 4)])
    assert drain(waiting, T0) == [1]
    assert waiting.opens_at_ms(T0) == T0 + 250
    assert drain(waiting, T0 + 249) == []
    assert drain(waiting, T0 + 250) == [2]
    assert drain(waiting, T0 + 10_000) == [3]  # late, then spaced from there
    assert gate.opens_at_ms(category_code("mail"), T0 + 10_000) == T0 + 10_250


def test_a_paused_category_waits_until_resumed() -> None:
    gate = CategoryGate({"reports": (None, None)})
    waiting = Waiting(gate=gate)
    gate.set_paused(category_code("reports"), True)
    waiting.extend("lane", [job(1, T0, category="reports"), job(2, T0 + 1, priority=1)])
    assert drain(waiting, T0) == [2]
    assert len(waiting) == 1 and waiting.waiting(category_code("reports")) == 1
    assert waiting.opens_at_ms(T0) is None  # a pause is not waited out by a timer
    gate.set_paused(category_code("reports"), False)
    assert drain(waiting, T0) == [1]


def test_pausing_a_category_not_configured_is_refused() -> None:
    with pytest.raises(KeyError):
        CategoryGate({}).set_paused(category_code("nope"), True)


def test_take_all_hands_back_every_waiting_job_best_first() -> None:
    waiting = Waiting(gate=CategoryGate({"reports": (None, None)}))
    waiting.extend("lane", [job(1, T0), job(2, T0, priority=700, category="reports")])
    assert [j.key for _, j in waiting.take_all()] == [2, 1]
    assert len(waiting) == 0 and waiting.pop(T0) is None
