"""The claim of a backlog by effective priority (claim_due(boost_per_minute=...)): which rows it
reads, and which of them it takes. Pure: the adapters (repos/*/adapter.py) read and lock.

No index holds a backlog's order (repos/options.py's rank(): due time x boost - priority), and a
claim that sorts every due row costs O(backlog) per claim, O(backlog^2 / batch) to drain, and on
InnoDB locks every due row while it runs: the other nodes' claims then find nothing. So a ranked
claim is two steps, each bounded whatever the backlog's size:

1. read, without locking, (id, due_at, priority) of the oldest due unclaimed rows per shard,
   none due after the window bound below (and RANKED_SCAN_ROWS at most), from the claim index
   (claim_epoch, due_at, priority) alone, no row looked up in the table; the store ranks them
   (rank()'s expression, in double precision as in Python) and returns the best few;
   :meth:`RankedClaim.pick` keeps the best `limit`;
2. lock exactly those ids (FOR UPDATE SKIP LOCKED), checking again that they are unclaimed and
   due, and read them as any claim does. A row another claim took in between is not claimed:
   the next round reads again and picks the best of the rows not tried yet, CLAIM_ROUNDS rounds
   at most, so that a claim comes back short only when the backlog ran out (or other claims
   took CLAIM_ROUNDS rounds' worth): the fetcher's sign that the backlog is drained.

The window bound, exact: with a boost of b points a minute > 0, let D be the due time of the n-th
oldest due unclaimed row (n = limit; times in minutes, rank = due x b - priority).
Proof: those n rows rank <= D*b - 1 (priority >= 1); a row due after D + 999/b ranks
> D*b + 999 - 1000 (priority <= 1000): all n come first, so step 1 need not read past D + 999/b.
(Per shard, the shard's own n-th oldest is due no earlier than D: a looser bound, as safe.)

So the order is exact (the best effective priority first, ties by due time) whenever a shard's
rows due within the window bound number RANKED_SCAN_ROWS at most: with the default boost of 10
points a minute, the window is 100 minutes past the n-th oldest: 250,000 rows is 100 minutes
of 40 jobs/s into one shard. Beyond the cap, priority orders within the oldest RANKED_SCAN_ROWS of a
shard: a priority-1000 row due after them waits until they are claimed. Step 1 does not test
status (it is in no index, so testing it would cost the lookup the index saves): every known
status but PENDING is out of the (0, due_at) range, and step 2 checks again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from repos.options import MAX_PRIORITY, MIN_PRIORITY, rank

#: Step 1 reads at most this many rows per shard (more, if the claim asks for more): a cap on
#: a claim's cost, not the reach that ranking needs (the window bound is). Read from the
#: covering claim index, a row costs the server well under a microsecond (index entry, rank,
#: the sort's priority queue), where with a clustered-index lookup per row 20,000 was the
#: most affordable: so a claim at the cap costs ~0.2 s of server CPU, and W4's whole
#: 200,000-row backlog is within reach (benchmarks/RESULTS.md, "Ranked claims in a backlog").
RANKED_SCAN_ROWS = 250_000
#: A claim reads and locks again, this many times at most, for the rows other claims took
#: between its read and its lock.
CLAIM_ROUNDS = 3


class Candidate(NamedTuple):
    """A row step 1 read: its id, due time, priority and shard (its place in the claim's list
    of shards)."""

    key: Any
    due_ms: int
    priority: int
    shard: int


def window_ms(boost_per_minute: float) -> int | None:
    """How much later than the n-th oldest due row a row can be due and still rank among the
    best n (the module docstring's bound); None without a boost: no bound."""
    if boost_per_minute <= 0:
        return None
    return math.ceil((MAX_PRIORITY - MIN_PRIORITY) * 60_000 / boost_per_minute)


@dataclass(slots=True)
class RankedClaim:
    """One ranked claim over its rounds: what to read, what to take, when to stop."""

    limit: int
    boost_per_minute: float
    taken: int = 0
    rounds: int = 0
    drained: bool = False
    #: (shard, id) of every row picked so far, claimed or not.
    tried: set[tuple[int, Any]] = field(default_factory=set)

    def need(self) -> int:
        return self.limit - self.taken

    def nth_offset(self) -> int | None:
        """The OFFSET, in a shard's due unclaimed rows oldest first, of the row whose due time
        bounds the window; None without a boost. Rows tried already may still look unclaimed
        (another claim holds them): they are counted in, so that `need` untried rows are due
        no later than it."""
        if self.boost_per_minute <= 0:
            return None
        return self.need() + len(self.tried) - 1

    def scan_before(self, before_ms: int, nth_due_ms: Iterable[int]) -> int:
        """Step 1's end: before_ms, or the window bound past the earliest of the shards' n-th
        oldest due times (those of the shards that have that many)."""
        window = window_ms(self.boost_per_minute)
        bounds = [due_ms + window + 1 for due_ms in nth_due_ms] if window is not None else []
        return min([before_ms, *bounds])

    def scan_rows(self) -> int:
        """Step 1's rows per shard: RANKED_SCAN_ROWS, or enough to pick from."""
        return max(RANKED_SCAN_ROWS, self.pick_rows())

    def pick_rows(self) -> int:
        """How many of the ranked candidates step 1 returns: enough for what is needed after
        leaving out those tried, and one more, which tells whether any are left."""
        return self.need() + len(self.tried) + 1

    def boost_per_ms(self) -> float:
        return self.boost_per_minute / 60_000

    def order(self, due_ms: int, priority: int) -> tuple[float, int]:
        """A row's place in the claim: rank() (lowest first), ties by due time."""
        return rank(due_ms, priority, self.boost_per_ms()), due_ms

    def pick(self, ranked: Iterable[Candidate]) -> list[Candidate]:
        """The rows to lock: the first of the `ranked` (step 1's, best first) not tried yet, as
        many as are needed."""
        fresh = [c for c in ranked if (c.shard, c.key) not in self.tried]
        picked = fresh[: self.need()]
        self.tried.update((c.shard, c.key) for c in picked)
        self.drained = len(fresh) == len(picked)  # nothing left beyond these
        return picked

    def took(self, claimed: int, picked: int) -> bool:
        """Step 2 claimed `claimed` of the `picked` rows: True if another round is worth it
        (some were taken by others meanwhile, more are due, rounds remain)."""
        self.taken += claimed
        self.rounds += 1
        return claimed < picked and not self.drained and self.rounds < CLAIM_ROUNDS
