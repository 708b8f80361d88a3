"""Single-level hashed timing wheel: holds the jobs claimed from the store until they are due.

Worked example (tick 1 ms, 65536 slots, so one rotation spans 65.536 s; wheel time 1_000_000):

* ``add(a, due_ms=1_000_250)``: slot = 1_000_250 // 1 % 65536 = 17210. The slot was empty, so
  its deadline, 1_000_250, is pushed on the deadline heap.
* ``add(b, due_ms=1_065_786)``: one rotation later, the same slot 17210. The slot's deadline
  stays 1_000_250 (the earliest due it holds); nothing is pushed.
* ``pop_due(1_000_200)``: the heap's top, 1_000_250, is still ahead: returns [] without looking
  at any slot, however much time has passed since the last call.
* ``pop_due(1_000_300)``: pops deadline 1_000_250 and drains slot 17210: ``a`` is returned;
  ``b`` is not due, stays, and the slot is re-armed at 1_065_786, ``b``'s own round.
* ``cancel(b)``: forgets ``b`` and releases its item at once; the slot keeps a stale reference
  to the key, dropped when the slot drains.

Why this shape:

* Single level: the store is the overflow wheel. Only jobs due within the fetcher's lookahead
  are claimed into memory, so there is no hierarchy to cascade into. An entry further than one
  rotation ahead is still safe: a slot holds several rounds and a drain re-checks every due time,
  so nothing fires early.
* A heap of slot deadlines (Kafka's DelayQueue of TimerTaskLists): pop_due pays one heap pop
  and one pass over the slot's list per slot holding something due, and nothing per tick
  elapsed, so an idle wheel advanced by an hour costs nothing.
  A slot's deadline is the earliest due it holds, so every entry is returned by the first
  ``pop_due(now)`` with ``now >= due``, whatever ``tick_ms``. ``tick_ms`` only sets the slot
  width: with ``tick_ms > 1`` a slot mixes due times and may drain once per distinct due time.
* Lazy cancel (CPython asyncio's cancelled TimerHandles): cancel is two dict removals; the stale
  key reference is skipped when its slot drains, and all of them are purged once they outnumber
  the live entries, so cancel stays amortised O(1) and stale memory bounded.
* Memory: no per-entry object. A held entry is one slot in each of two dicts (key -> due,
  key -> item) plus a key reference in its slot's list. tracemalloc over 1_000_000 adds into
  65536 slots (keys, items and due ints made beforehand, dues spread over 10 minutes): 99 bytes
  per entry with int keys, 77 with str keys, the slot arrays' fixed 1 MiB included. Over 200_000
  adds it is 150 and 122: the dicts' growth slack and the slot lists' headers weigh more there.
  A ``(due, key, item)`` tuple per entry in a single dict measured 121 and 110 at 1_000_000.
"""

from __future__ import annotations

from collections.abc import Hashable
from heapq import heapify, heappop, heappush
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Purge the stale references of cancelled entries once there are more than this many and they
#: outnumber the live entries (asyncio's _MIN_SCHEDULED_TIMER_HANDLES rule); the same slack
#: bounds the heap's superseded deadlines.
_MIN_PURGE = 100


def _due_of(entry: tuple[int, object, object]) -> int:
    return entry[0]


class TimerWheel(Generic[K, T]):
    """Entries keyed by ``K`` carrying ``T``, returned by :meth:`pop_due` once due.

    Pure: no clock, no I/O; time only moves when ``pop_due`` is given a later ``now_ms``.
    """

    __slots__ = (
        "_buckets",
        "_deadlines",
        "_drains",
        "_due",
        "_heap",
        "_items",
        "_now_ms",
        "_occupied",
        "_slot_count",
        "_stale",
        "_tick_ms",
    )

    def __init__(self, *, now_ms: int, tick_ms: int = 1, slots: int = 65536) -> None:
        if tick_ms < 1 or slots < 1:
            raise ValueError(f"tick_ms and slots must be >= 1, got {tick_ms=}, {slots=}")
        self._tick_ms = tick_ms
        self._slot_count = slots
        self._now_ms = now_ms
        # The live entries; both dicts always hold the same keys.
        self._due: dict[K, int] = {}
        self._items: dict[K, T] = {}
        # Per slot: references to keys in insertion order, and the earliest due among them (a
        # lower bound once some were cancelled); both None when the slot is empty. A reference
        # is live iff the key is live, due in this slot, and it is the key's last reference in
        # the slot (a cancel then re-add appends a new one); every other is stale.
        self._buckets: list[list[K] | None] = [None] * slots
        self._deadlines: list[int | None] = [None] * slots
        # Every non-empty slot has its deadline on the heap. A heap value d is current iff
        # d == _deadlines[slot of d]; others were superseded and are skipped when popped.
        # Current deadlines are later than _now_ms.
        self._heap: list[int] = []
        self._occupied = 0  # non-empty slots
        self._stale = 0  # stale references in the slot lists
        self._drains = 0

    def add(self, key: K, due_ms: int, item: T) -> bool:
        """Hold ``item`` until ``due_ms``; False, storing nothing, if it is due already.

        A False return means the caller fires it now. Raises KeyError if ``key`` is held.
        """
        if key in self._due:
            raise KeyError(key)
        if due_ms <= self._now_ms:
            return False
        self._due[key] = due_ms
        self._items[key] = item
        index = self._slot_of(due_ms)
        bucket = self._buckets[index]
        if bucket is None:
            self._buckets[index] = [key]
            self._occupied += 1
        else:
            bucket.append(key)
        deadline = self._deadlines[index]
        if deadline is None or due_ms < deadline:
            self._deadlines[index] = due_ms
            heappush(self._heap, due_ms)
            if len(self._heap) > 2 * self._occupied + _MIN_PURGE:
                self._rebuild_heap(self._current_slots())
        return True

    def cancel(self, key: K) -> T | None:
        """Forget ``key`` and return its item, or None if not held; amortised O(1)."""
        if self._due.pop(key, None) is None:
            return None
        item = self._items.pop(key)
        self._stale += 1
        if self._stale > _MIN_PURGE and self._stale > len(self._due):
            self._purge()
        return item

    def get(self, key: K) -> T | None:
        """The item held under ``key``, or None."""
        return self._items.get(key)

    def replace(self, key: K, item: T) -> None:
        """Hold ``item`` instead of the item held under ``key`` (same due time); KeyError if
        ``key`` is not held."""
        if key not in self._items:
            raise KeyError(key)
        self._items[key] = item

    def pop_due(self, now_ms: int) -> list[tuple[K, T]]:
        """Advance to ``now_ms`` (never backwards) and remove every entry due by then.

        Returned in due order, ties in insertion order. Costs one heap pop and one pass over
        the slot per slot holding something due, nothing per tick elapsed.
        """
        if now_ms > self._now_ms:
            self._now_ms = now_ms
        now_ms = self._now_ms
        heap = self._heap
        deadlines = self._deadlines
        fired: list[tuple[int, K, T]] = []
        while heap and heap[0] <= now_ms:
            deadline = heappop(heap)
            index = self._slot_of(deadline)
            if deadlines[index] == deadline:
                self._drain(index, now_ms, fired)
        # Equal due times share a slot, drained in insertion order: a stable sort suffices.
        fired.sort(key=_due_of)
        return [(key, item) for _, key, item in fired]

    def next_due_ms(self) -> int | None:
        """The earliest due time held, or None when empty.

        After cancels it may be a lower bound: the due time of a cancelled entry whose slot has
        not drained yet. It is always later than the wheel's current time.
        """
        if not self._due:
            return None
        heap = self._heap
        # A live entry means an occupied slot, hence a current deadline: this stops.
        while self._deadlines[self._slot_of(heap[0])] != heap[0]:
            heappop(heap)
        return heap[0]

    @property
    def now_ms(self) -> int:
        """The wheel's current time: the latest ``now_ms`` it was given."""
        return self._now_ms

    @property
    def cancelled_pending(self) -> int:
        """Stale references left in the slots by cancels, not yet dropped."""
        return self._stale

    @property
    def slots_drained(self) -> int:
        """Slot drains so far: the work pop_due did, for tests and metrics."""
        return self._drains

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __repr__(self) -> str:
        return (
            f"TimerWheel(held={len(self._due)}, cancelled_pending={self._stale}, "
            f"now_ms={self._now_ms}, tick_ms={self._tick_ms}, slots={self._slot_count})"
        )

    def _slot_of(self, due_ms: int) -> int:
        return due_ms // self._tick_ms % self._slot_count

    def _drain(self, index: int, now_ms: int, fired: list[tuple[int, K, T]]) -> None:
        """Move the slot's due entries to ``fired``, drop its stale references, re-arm it."""
        self._drains += 1
        bucket = self._buckets[index]
        assert bucket is not None  # a slot with a current deadline is never empty
        due_of = self._due
        keep: list[K] = []
        firing: list[tuple[int, K, T]] = []
        # Backwards, so a key's last reference (the live one) is met first; firing removes the
        # key, which makes its earlier references stale. Stale ones of a key kept for a later
        # round are kept too, still counted in _stale, until it fires or a purge.
        for key in reversed(bucket):
            due_ms = due_of.get(key)
            if due_ms is None or self._slot_of(due_ms) != index:
                continue
            if due_ms <= now_ms:
                del due_of[key]
                firing.append((due_ms, key, self._items.pop(key)))
            else:
                keep.append(key)
        self._stale -= len(bucket) - len(keep) - len(firing)
        firing.reverse()
        fired.extend(firing)
        keep.reverse()
        deadline = self._refill(index, keep)
        if deadline is not None:
            heappush(self._heap, deadline)

    def _refill(self, index: int, keys: list[K]) -> int | None:
        """Make ``keys`` the slot's references and their earliest due its deadline (returned)."""
        deadline = min(map(self._due.__getitem__, keys)) if keys else None
        self._buckets[index] = keys or None
        self._deadlines[index] = deadline
        if deadline is None:
            self._occupied -= 1
        return deadline

    def _current_slots(self) -> set[int]:
        """The non-empty slots, found through their current deadlines on the heap."""
        deadlines = self._deadlines
        slot_of = self._slot_of
        return {slot_of(d) for d in self._heap if deadlines[slot_of(d)] == d}

    def _rebuild_heap(self, slots: set[int]) -> None:
        """Replace the heap, in place, by the current deadlines of ``slots``."""
        deadlines = self._deadlines
        self._heap[:] = [d for d in map(deadlines.__getitem__, slots) if d is not None]
        heapify(self._heap)

    def _purge(self) -> None:
        """Drop every stale reference, re-arm the slots and rebuild the heap."""
        slots = self._current_slots()
        for index in slots:
            self._refill(index, self._live_references(index))
        self._stale = 0
        self._rebuild_heap(slots)

    def _live_references(self, index: int) -> list[K]:
        """The slot's live references, in insertion order."""
        bucket = self._buckets[index]
        assert bucket is not None  # only called for non-empty slots
        due_of = self._due
        seen: set[K] = set()
        live: list[K] = []
        for key in reversed(bucket):
            due_ms = due_of.get(key)
            if due_ms is not None and key not in seen and self._slot_of(due_ms) == index:
                seen.add(key)
                live.append(key)
        live.reverse()
        return live
