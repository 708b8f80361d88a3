"""TimerWheel: a pure structure driven by integer fake time, checked against a heapq model."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infinite_scheduler import wheel as wheel_module
from infinite_scheduler.wheel import TimerWheel

T0 = 1_700_000_000_000  # a multiple of 8 and 16: slot arithmetic in the tests stays readable
HOUR_MS = 3_600_000


def make(*, tick_ms: int = 1, slots: int = 65536, now_ms: int = T0) -> TimerWheel[str, str]:
    return TimerWheel(now_ms=now_ms, tick_ms=tick_ms, slots=slots)


def fire_times(wheel: TimerWheel[str, str], start: int, end: int) -> dict[str, int]:
    """Step the wheel one millisecond at a time; when each key was first returned."""
    fired: dict[str, int] = {}
    for now in range(start, end + 1):
        for key, _ in wheel.pop_due(now):
            assert key not in fired, f"{key} fired twice"
            fired[key] = now
    return fired


def check_invariants(wheel: TimerWheel[str, str]) -> None:
    """The internal bookkeeping the lazy structures rely on."""
    refs = [key for bucket in wheel._buckets if bucket is not None for key in bucket]
    assert wheel.cancelled_pending == len(refs) - len(wheel)
    assert wheel._due.keys() == wheel._items.keys()
    assert wheel._occupied == sum(bucket is not None for bucket in wheel._buckets)
    current = wheel._current_slots()
    assert current == {i for i, bucket in enumerate(wheel._buckets) if bucket is not None}
    assert all(d > wheel.now_ms for d in wheel._deadlines if d is not None)
    for key, due in wheel._due.items():
        deadline = wheel._deadlines[wheel._slot_of(due)]
        assert deadline is not None and deadline <= due, key


def test_already_due_is_refused_and_nothing_is_stored() -> None:
    wheel = make()
    assert wheel.add("a", T0, "A") is False
    assert wheel.add("b", T0 - 5, "B") is False
    assert len(wheel) == 0 and "a" not in wheel and "b" not in wheel
    assert wheel.next_due_ms() is None
    assert wheel.pop_due(T0 + HOUR_MS) == []
    assert wheel.add("c", T0 + 50, "C") is False  # the wheel's time is now T0 + 1 h


def test_fires_exactly_at_due_never_before() -> None:
    wheel = make()
    assert wheel.add("a", T0 + 100, "A") is True
    assert wheel.pop_due(T0 + 99) == []
    assert wheel.pop_due(T0 + 100) == [("a", "A")]
    assert wheel.pop_due(T0 + 1_000) == []
    assert len(wheel) == 0


def test_entries_beyond_one_rotation_wait_for_their_round() -> None:
    wheel = make(slots=8)  # one rotation = 8 ms
    dues = {"a": T0 + 3, "b": T0 + 3 + 8, "c": T0 + 3 + 5 * 8, "d": T0 + 10_000, "e": T0 + 9_999}
    for key, due in reversed(dues.items()):  # the far ones first: slots re-arm earlier
        assert wheel.add(key, due, key.upper())
    assert fire_times(wheel, T0, T0 + 10_100) == dues
    check_invariants(wheel)


def test_far_entry_costs_no_drain_while_its_slot_comes_round() -> None:
    wheel = make(slots=8)
    wheel.add("far", T0 + 1_000_000, "F")
    assert wheel.pop_due(T0 + 999_999) == []
    assert wheel.slots_drained == 0
    assert wheel.pop_due(T0 + 1_000_000) == [("far", "F")]
    assert wheel.slots_drained == 1


def test_idle_advance_of_an_hour_is_cheap() -> None:
    wheel = make()
    wheel.add("soon", T0 + 1, "S")
    wheel.add("later", T0 + 2 * HOUR_MS, "L")
    assert wheel.pop_due(T0 + HOUR_MS) == [("soon", "S")]
    assert wheel.slots_drained == 1  # one slot drained, not 3.6 million ticks walked
    assert len(wheel._heap) == 1
    assert wheel.pop_due(T0 + 2 * HOUR_MS) == [("later", "L")]
    assert wheel.slots_drained == 2


def test_cancel_then_readd_fires_once_at_the_new_time() -> None:
    wheel = make(slots=8)
    wheel.add("a", T0 + 10, "A1")
    assert wheel.cancel("a") == "A1"
    assert len(wheel) == 0 and "a" not in wheel
    assert wheel.add("a", T0 + 20, "A2")
    assert fire_times(wheel, T0, T0 + 100) == {"a": T0 + 20}
    assert wheel.cancelled_pending == 0


def test_cancel_then_readd_in_the_same_slot_an_earlier_round() -> None:
    wheel = make(slots=8)
    wheel.add("a", T0 + 18, "old")
    wheel.cancel("a")
    wheel.add("a", T0 + 10, "new")  # 10 and 18 share slot 2
    assert wheel.pop_due(T0 + 10) == [("a", "new")]
    assert wheel.pop_due(T0 + 100) == []


def test_cancel_then_readd_at_the_same_time_keeps_insertion_order() -> None:
    wheel = make()
    wheel.add("a", T0 + 5, "A1")
    wheel.add("b", T0 + 5, "B")
    wheel.cancel("a")
    wheel.add("a", T0 + 5, "A2")
    assert wheel.pop_due(T0 + 5) == [("b", "B"), ("a", "A2")]
    check_invariants(wheel)


def test_cancel_unknown_returns_none() -> None:
    wheel = make()
    assert wheel.cancel("nope") is None
    wheel.add("a", T0 + 1, "A")
    assert wheel.cancel("a") == "A"
    assert wheel.cancel("a") is None
    assert wheel.pop_due(T0 + 1) == []


def test_duplicate_add_raises_and_keeps_the_first() -> None:
    wheel = make()
    wheel.add("a", T0 + 10, "A")
    with pytest.raises(KeyError):
        wheel.add("a", T0 + 20, "other")
    with pytest.raises(KeyError):
        wheel.add("a", T0, "already due")  # a caller bug whatever the due time
    assert len(wheel) == 1
    assert wheel.pop_due(T0 + 30) == [("a", "A")]


def test_pop_order_is_due_then_insertion() -> None:
    wheel = make(slots=8)
    for key, delay in [("c", 5), ("x", 11), ("a", 3), ("b", 5), ("d", 3), ("y", 3 + 8 * 4)]:
        wheel.add(key, T0 + delay, key.upper())
    assert [key for key, _ in wheel.pop_due(T0 + 100)] == ["a", "d", "c", "b", "x", "y"]


def test_next_due_ms() -> None:
    wheel = make()
    assert wheel.next_due_ms() is None
    wheel.add("b", T0 + 20, "B")
    wheel.add("a", T0 + 10, "A")
    assert wheel.next_due_ms() == T0 + 10
    wheel.cancel("a")
    next_due = wheel.next_due_ms()
    assert next_due is not None and T0 + 10 <= next_due <= T0 + 20  # a lower bound after cancel
    assert wheel.pop_due(T0 + 10) == []
    assert wheel.next_due_ms() == T0 + 20
    wheel.cancel("b")
    assert wheel.next_due_ms() is None


def test_len_and_contains() -> None:
    wheel = make()
    wheel.add("a", T0 + 1, "A")
    wheel.add("b", T0 + 2, "B")
    assert len(wheel) == 2 and "a" in wheel and "b" in wheel
    assert 3 not in wheel and ("a",) not in wheel
    wheel.cancel("a")
    assert len(wheel) == 1 and "a" not in wheel
    wheel.pop_due(T0 + 2)
    assert len(wheel) == 0 and "b" not in wheel


def test_time_never_goes_backwards() -> None:
    wheel = make()
    wheel.add("a", T0 + 200, "A")
    assert wheel.pop_due(T0 + 100) == []
    assert wheel.pop_due(T0 + 50) == []
    assert wheel.now_ms == T0 + 100
    assert wheel.add("b", T0 + 80, "B") is False
    assert wheel.add("c", T0 + 101, "C") is True
    assert wheel.pop_due(T0) == []
    assert wheel.pop_due(T0 + 200) == [("c", "C"), ("a", "A")]


def test_tick_greater_than_one_is_never_early_nor_a_tick_late() -> None:
    tick = 10
    wheel = make(tick_ms=tick, slots=8)
    dues = {f"k{d}": T0 + d for d in (1, 5, 9, 10, 15, 23, 80, 81, 799, 805)}
    for key, due in dues.items():
        wheel.add(key, due, key)
    fired = fire_times(wheel, T0, T0 + 1_000)
    assert fired.keys() == dues.keys()
    for key, due in dues.items():
        assert due <= fired[key] < due + tick
    assert fired == dues  # the slot deadline is the earliest due it holds: exact here too


def test_tick_greater_than_one_with_sparse_pops() -> None:
    wheel = make(tick_ms=10, slots=8)
    for delay in (3, 7, 12):
        wheel.add(f"k{delay}", T0 + delay, "")
    assert [key for key, _ in wheel.pop_due(T0 + 5)] == ["k3"]
    assert wheel.next_due_ms() == T0 + 7
    assert [key for key, _ in wheel.pop_due(T0 + 20)] == ["k7", "k12"]


def test_purge_drops_stale_references_of_mass_cancels() -> None:
    wheel = make(slots=16)
    for i in range(300):
        wheel.add(f"k{i}", T0 + 1 + i, f"v{i}")
    for i in range(200):
        assert wheel.cancel(f"k{i}") == f"v{i}"
    # The purge ran once stale references outnumbered the live ones (at the 151st cancel).
    assert wheel.cancelled_pending == 49
    assert len(wheel) == 100
    check_invariants(wheel)
    assert fire_times(wheel, T0, T0 + 400) == {f"k{i}": T0 + 1 + i for i in range(200, 300)}


def test_purge_keeps_one_reference_of_a_key_readded_to_the_same_slot() -> None:
    wheel = make(slots=8)
    wheel.add("a", T0 + 11, "old")
    wheel.add("x", T0 + 3, "X")  # slot 3, like a's 11 and 19
    wheel.cancel("a")
    wheel.add("a", T0 + 19, "new")
    assert wheel.pop_due(T0 + 3) == [("x", "X")]  # a's stale reference survives this drain
    assert wheel.cancelled_pending == 1
    for i in range(150):
        wheel.add(f"k{i}", T0 + 100 + i, "")
        wheel.cancel(f"k{i}")
    check_invariants(wheel)
    assert fire_times(wheel, T0 + 4, T0 + 300) == {"a": T0 + 19}
    assert wheel.cancelled_pending == 0


def test_heap_stays_bounded_when_each_add_lowers_a_deadline() -> None:
    wheel = make(slots=1)  # every add is earlier than the one before: each pushes a deadline
    for i in range(1_000):
        wheel.add(f"k{i}", T0 + 1_000 - i, "")
    assert len(wheel._heap) <= 2 * 1 + 100
    fired = [key for key, _ in wheel.pop_due(T0 + 1_000)]
    assert fired == [f"k{i}" for i in reversed(range(1_000))]


def test_repr_shows_the_counters() -> None:
    wheel = make()
    wheel.add("a", T0 + 5, "A")
    wheel.add("b", T0 + 6, "B")
    wheel.cancel("b")
    text = repr(wheel)
    assert "held=1" in text and "cancelled_pending=1" in text and f"now_ms={T0}" in text


def test_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError):
        make(tick_ms=0)
    with pytest.raises(ValueError):
        make(slots=0)


# -- property: the wheel against a heapq reference model (Kafka's MockTimer) -------------------


@dataclass
class Model:
    """Held entries on a plain heap, with lazy cancel by sequence number."""

    now: int
    heap: list[tuple[int, int, str, str]] = field(default_factory=list)
    live: dict[str, tuple[int, int, str, str]] = field(default_factory=dict)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, key: str, due: int, item: str) -> bool:
        if due <= self.now:
            return False
        entry = (due, next(self.seq), key, item)
        self.live[key] = entry
        heapq.heappush(self.heap, entry)
        return True

    def cancel(self, key: str) -> str | None:
        entry = self.live.pop(key, None)
        return None if entry is None else entry[3]

    def pop_due(self, now: int) -> list[tuple[str, str]]:
        self.now = max(self.now, now)
        out = []
        while self.heap and self.heap[0][0] <= self.now:
            entry = heapq.heappop(self.heap)
            if self.live.get(entry[2]) is entry:
                del self.live[entry[2]]
                out.append((entry[2], entry[3]))
        return out


@dataclass
class Run:
    """One wheel and its model fed the same operations, with what each item went through."""

    wheel: TimerWheel[str, str]
    model: Model
    due: dict[str, int] = field(default_factory=dict)  # item -> due, for items stored
    cancelled: set[str] = field(default_factory=set)
    popped: list[str] = field(default_factory=list)

    def add(self, key: str, due: int, item: str) -> None:
        if key in self.model.live:
            with pytest.raises(KeyError):
                self.wheel.add(key, due, item)
        elif self.model.add(key, due, item):
            assert self.wheel.add(key, due, item) is True
            self.due[item] = due
        else:
            assert self.wheel.add(key, due, item) is False

    def cancel(self, key: str) -> None:
        item = self.model.cancel(key)
        assert self.wheel.cancel(key) == item
        if item is not None:
            self.cancelled.add(item)

    def pop_due(self, now: int) -> None:
        popped = self.wheel.pop_due(now)
        assert popped == self.model.pop_due(now)  # same entries, same order, same call
        for _, item in popped:
            assert self.due[item] <= self.model.now  # never early
            assert item not in self.cancelled
            self.popped.append(item)

    def check(self) -> None:
        assert len(self.wheel) == len(self.model.live)
        assert all((k in self.wheel) == (k in self.model.live) for k in KEYS)
        next_due = self.wheel.next_due_ms()
        if self.model.live:
            earliest = min(due for due, _, _, _ in self.model.live.values())
            assert next_due is not None and self.model.now < next_due <= earliest
        else:
            assert next_due is None
        check_invariants(self.wheel)


KEYS = "abcdef"
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(KEYS), st.integers(-3, 200)),
        st.tuples(st.just("cancel"), st.sampled_from(KEYS), st.just(0)),
        st.tuples(st.just("advance"), st.just(""), st.integers(-5, 40)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=OPS,
    slots=st.sampled_from([8, 16]),  # rotations of 8 to 80 ms: adds up to 200 ms ahead wrap
    tick=st.sampled_from([1, 5]),
    min_purge=st.sampled_from([0, 2, 100]),  # low values make purges and heap rebuilds frequent
)
def test_wheel_matches_the_heap_model(
    ops: list[tuple[str, str, int]], slots: int, tick: int, min_purge: int
) -> None:
    run = Run(make(tick_ms=tick, slots=slots), Model(now=T0))
    now = T0
    with mock.patch.object(wheel_module, "_MIN_PURGE", min_purge):
        for step, (op, key, n) in enumerate(ops):
            if op == "add":
                run.add(key, now + n, f"{key}#{step}")
            elif op == "cancel":
                run.cancel(key)
            else:
                now += max(n, 0)
                run.pop_due(now + min(n, 0))  # a negative step asks for an earlier time
            run.check()
        run.pop_due(now + 10**9)
    assert len(run.wheel) == 0
    # Every stored, never cancelled entry was popped exactly once.
    assert sorted(run.popped) == sorted(set(run.due) - run.cancelled)


def test_replace_swaps_the_item_keeps_the_due_time_and_refuses_a_key_not_held() -> None:
    wheel: TimerWheel[int, str] = TimerWheel(now_ms=0, slots=64)
    wheel.add(1, 10, "without payload")
    wheel.replace(1, "with payload")
    assert wheel.get(1) == "with payload" and wheel.next_due_ms() == 10
    assert wheel.pop_due(10) == [(1, "with payload")]
    with pytest.raises(KeyError):
        wheel.replace(1, "gone")
