"""The lookahead loop: claim the rows due before now + lookahead into the wheels.

Each round claims, per entity type, batches of rows due before the window's end, oldest first,
until the type's share of `max_jobs_per_fetch` or the engine's `max_held` cap is reached: a
backlog larger than that waits in the database, not in memory (invariant 4). Rows already due
skip the wheel and go straight to the dispatcher: fire once, now (invariant 3). While a backlog
remains, rounds follow each other as fast as the handlers make room. Rows due later than
`payload_ahead_s` are claimed without their payload, which infinite_scheduler/payloads.py reads
shortly before they are due.

A backlog's claims rank (:data:`RANKED_AFTER_MS`): once a claim comes back full of rows overdue
by more than that, the lane's next claims take the rows due by effective priority (priority +
age boost x minutes overdue, repos/options.py's rank(), the order the dispatcher runs them in)
instead of due time, until one comes back short: the backlog in the store is then drained, and
claims go on in due order. Without that, a priority-1000 job due last in a backlog larger than
the node holds would wait until everything due before it had been claimed: the dispatcher
orders only what it holds. The normal path pays nothing: rows on time, or a burst drained
within seconds, are claimed in due order along the claim index.

A ranked claim's cost is bounded (repos/ranked.py): it reads, unlocked and from the claim
index alone, the oldest due rows per shard up to the age boost's window bound (no row due later
can rank among the best), ranks them, and locks only the rows it takes. So priority orders the
whole backlog exactly, but where a shard holds more than RANKED_SCAN_ROWS (250,000) rows due
within that window: there it orders within the oldest RANKED_SCAN_ROWS, and a high-priority job
due after them waits until they are claimed, as with no ranking at all. A ranked claim comes back short only when the backlog ran out: rows another
node took between its read and its lock are replaced by the next best, a few rounds at most
(repos/ranked.py's CLAIM_ROUNDS; a claim that loses that many still ends the ranked claims,
and the next claim, in due order, starts them again if the backlog is still there).

Throttled (the process passed a [throttle] limit on its own CPU or memory:
infinite_scheduler/throttle.py), the fetcher claims less: it holds a THROTTLE_DIVISOR-th of
max_held, claims a THROTTLE_DIVISOR-th of a batch at a time (never burst batches), holds at most
THROTTLED_DUE_BATCHES such batches of jobs already due, and spaces a backlog's claims by
near_poll_interval_s. The jobs it holds are untouched and fire on time, and the regular rounds
keep their cadence, so jobs due later are still claimed ahead; but a backlog (or a burst) is
claimed more slowly, and its jobs fire late: the first of them in a throttling episode is
logged with the reason, and each is counted (infinite_scheduler_throttled_late_jobs_total).

This class owns the claim protocol: every claim, a round's claim_due or the insert of already
claimed rows by which schedule() holds new jobs due inside the window (store_new), is made under
this node's epoch and gets a stamp of its own, and a claim whose outcome the store never told is
released before the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from infinite_scheduler.acker import Acker
from infinite_scheduler.clock import Clock
from infinite_scheduler.decisions import MisfirePolicy, Verdict, misfire_verdict
from infinite_scheduler.job import Options, with_options
from infinite_scheduler.jobs import Lane
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.payloads import PayloadReader
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import (
    Claimant,
    ClaimedJob,
    EncodedRow,
    Failure,
    Status,
    StoreError,
    bucket_of,
    encode_for,
    pack,
)
from repos.history import Outcome

logger = logging.getLogger(__name__)

#: Poll for room this often while a backlog waits in the database.
BACKLOG_POLL_S = 0.005
#: Once a full batch comes back already due (a burst, a backlog after downtime), the round's
#: next claims take this many batches at a time: the server's CPU per claimed row falls by about
#: a third from 1,000-row to 5,000-row claims (benchmarks/RESULTS.md, W2), and rows already due
#: gain nothing from the smaller statements that keep a round's pauses short.
BURST_BATCHES = 5
#: A node alone holds at most this many burst batches of rows already due and not yet handled;
#: with others live, its share of that, one burst batch at least (infinite_scheduler/node.py
#: counts them).
BURST_HELD_BATCHES = 2
#: A full claim of rows all overdue by more than this means a backlog (recovery after downtime,
#: handlers slower than the arrivals) whose next claims rank. Less overdue, it is a burst being
#: drained on time (W2's 20,000 rows go within a second or two), whose claims stay in due order:
#: what is claimed is ordered by the dispatcher anyway, and the rest follows within seconds.
RANKED_AFTER_MS = 5_000
#: Throttled, the node holds this fraction of max_held and claims this fraction of a batch.
THROTTLE_DIVISOR = 10
#: Throttled, the node holds at most this many (throttled) batches of jobs already due.
THROTTLED_DUE_BATCHES = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSettings:
    node_id: str
    #: This process's epoch: every claim is stamped with it (repos/base.py, Claimant).
    epoch: int
    fetch_interval_s: float
    near_poll_interval_s: float
    lookahead_ms: int
    payload_ahead_ms: int
    horizon_ms: int
    batch_size: int
    max_jobs_per_fetch: int
    max_held: int
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE_NOW
    misfire_threshold_ms: int = 60_000
    #: Points a job gains per minute overdue ([priority]): the rank of a backlog's claims.
    age_boost_per_minute: float = 0.0


class Fetcher:
    def __init__(
        self,
        lanes: Sequence[Lane],
        settings: FetchSettings,
        *,
        clock: Clock,
        payloads: PayloadReader,
        acker: Acker,
        metrics: Metrics,
        held: Callable[[], int],
        due_in_hand: Callable[[], int],
        on_added: Callable[[], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.lanes = lanes
        self.settings = settings
        self.clock = clock
        self.payloads = payloads
        self.acker = acker
        self.metrics = metrics
        self.held = held
        self.due_in_hand = due_in_hand
        self.on_added = on_added
        self.backoff = backoff or Backoff()
        self.window_end_ms = 0
        self.backlog = False
        self._wake = asyncio.Event()
        self.rounds = 0
        self._last_stamp_ms = 0
        self.claimant = Claimant(settings.node_id, settings.epoch)
        #: Live nodes drawing on the store's bursts, this one included, as the last heartbeat
        #: found them.
        self.sharing = 1
        #: Names of the lanes whose next claim ranks (a backlog: see the module docstring).
        self.ranked: set[str] = set()
        #: The engine is paused (infinite_scheduler/engine_control.py): claim nothing.
        self.paused = False
        #: Why the engine is throttled (infinite_scheduler/throttle.py); None: it is not.
        self.throttled: str | None = None
        #: Lanes whose claims the throttle stopped while rows were left: until a claim comes
        #: back short, the rows they claim past their due time are late because of it.
        self._held_back: set[str] = set()
        self._late_logged = False

    def __repr__(self) -> str:
        return f"<Fetcher rounds={self.rounds} window_end_ms={self.window_end_ms} backlog={self.backlog}>"

    def wake(self) -> None:
        """Fetch again now (a retry came due inside the window, or room appeared)."""
        self._wake.set()

    def retry_due(self, at_ms: int) -> None:
        """A failed job is due again at at_ms: fetch now if that is inside the window claimed
        already, which the next round would otherwise skip past."""
        if at_ms < self.window_end_ms:
            self.wake()

    def throttle(self, reason: str | None) -> None:
        """The throttle monitor decided: claim less (`reason`), or at full speed (None)."""
        if reason is not None and self.throttled is None:
            self._late_logged = False  # a new episode: its first late job is logged
        self.throttled = reason
        if reason is None:
            self.wake()  # a backlog held back is claimed now, not at the next poll

    def _room(self) -> int:
        cap = self.settings.max_held
        if self.throttled is not None:
            cap = max(1, cap // THROTTLE_DIVISOR)
        return max(0, cap - self.held())

    def _batch(self) -> int:
        """Rows per claim: a batch, or throttled a THROTTLE_DIVISOR-th of one."""
        if self.throttled is None:
            return self.settings.batch_size
        return max(1, self.settings.batch_size // THROTTLE_DIVISOR)

    def share_with(self, live_nodes: int) -> None:
        """The heartbeat counted the live nodes (this one among them)."""
        self.sharing = max(1, live_nodes)

    def _room_for_due(self) -> int:
        """How many more rows to claim while jobs already due wait for the handlers: up to
        BURST_HELD_BATCHES burst batches of them in hand, divided among the live nodes, and
        one burst batch at least (smaller claims cost the server more per row: W6 drained a
        third slower with a cap of a third of two batches). The rest of a burst (or a backlog
        the handlers cannot keep up with) stays in the store meanwhile, where every node claims
        from it: a burst is drained by all of them, not by the first two to see it. Room for
        less than a batch waits: claims of a few rows each would cost the server more too.
        Throttled, THROTTLED_DUE_BATCHES throttled batches."""
        batch = self._batch()
        if self.throttled is not None:
            cap = THROTTLED_DUE_BATCHES * batch
        else:
            burst = BURST_BATCHES * batch
            cap = max(burst, BURST_HELD_BATCHES * burst // self.sharing)
        room = cap - self.due_in_hand()
        return room if room >= batch else 0

    async def run(self, stop: asyncio.Event) -> None:
        """A round every fetch_interval_s, which claims the next window; between rounds, a near
        poll every near_poll_interval_s claims only what was stored since inside the window
        claimed already (by a SchedulerClient, another process): it fires on time, not at the
        next round. A backlog or a wake (room appeared, a retry came due) means a round now."""
        next_round_s = 0.0
        while not stop.is_set():
            started = time.monotonic()
            full = started >= next_round_s
            try:
                await self.fetch_once(extend=full)
            except StoreError as exc:
                logger.warning(
                    "fetch failed, retrying in %.1fs: %s",
                    self.backoff.delay_s,
                    exc,
                    extra={"action": "fetch", "node": self.settings.node_id},
                )
                await self.backoff.wait(stop, self._wake)
                continue
            self.backoff.succeeded()
            if full:  # drift-free cadence: the round's own duration comes off the wait
                next_round_s = started + self.settings.fetch_interval_s
            delay_s = min(self.settings.near_poll_interval_s, next_round_s - time.monotonic())
            if self.backlog:
                throttled = self.throttled is not None
                spacing_s = self.settings.near_poll_interval_s if throttled else BACKLOG_POLL_S
                delay_s, next_round_s = spacing_s, 0.0
            await wait_any(stop, self._wake, timeout_s=max(0.0, delay_s))
            if self._wake.is_set():
                next_round_s = 0.0

    async def fetch_once(self, *, extend: bool = True) -> int:
        """One round over every lane, claiming up to now + lookahead (`extend`), or only up to
        the end of the window claimed already (a near poll); returns the rows claimed."""
        self._wake.clear()
        if self.paused:
            return 0
        now_ms = self.clock.now_ms()
        started = time.perf_counter()
        window_end_ms = now_ms + self.settings.lookahead_ms if extend else self.window_end_ms
        budget = self.settings.max_jobs_per_fetch
        claimed, self.backlog = 0, False
        for lane in self.lanes:
            claimed += await self._fetch_lane(
                lane, now_ms, window_end_ms, budget // len(self.lanes)
            )
        self.window_end_ms = window_end_ms
        self.rounds += 1
        self.metrics.fetch_duration.observe(time.perf_counter() - started)
        return claimed

    async def store_new(self, lane: Lane, entities: Sequence[Any], options: Options = None) -> int:
        """Store new jobs of one type (the engine's schedule()), with their priorities and
        categories (`options`, infinite_scheduler/job.py); return rows stored.

        The whole call is encoded and checked first: a bad entity stores none of it. Jobs due
        inside the window claimed already, as many as there is room for, are stored CLAIMED by
        this node under a claim stamp of their own and placed as a fetch would place them (the
        next fetch only looks past that window); the others are stored PENDING for later ones.
        """
        now_ms = self.clock.now_ms()
        if options is None and self._all_later(lane, entities):
            # The usual call (jobs for later): no row of it goes to the wheel, so the adapter
            # encodes it its own way (the MySQL one as a document, inserted in one statement).
            return await lane.repo.insert(entities, now_ms=now_ms)
        rows = with_options(encode_for(lane.repo, entities, now_ms=now_ms), options)
        soon, later = self._split(rows)
        stored = 0
        if later:
            stored += await lane.repo.insert_rows(later, now_ms=now_ms)
        if soon:
            async with self._claiming(lane, min(r.at_ms for r in soon)) as stamp:
                stored += await lane.repo.insert_rows(soon, now_ms=stamp, claimed_by=self.claimant)
            jobs = [
                ClaimedJob(r.key, r.at_ms, r.at_ms, 1, r.payload, pack(r.priority, r.category))
                for r in soon
            ]
            self._place(lane, jobs, now_ms)
        return stored

    def _all_later(self, lane: Lane, entities: Sequence[Any]) -> bool:
        """Whether _split would leave every row of `entities` for later: no room to hold one,
        or none due inside the window, judged by the earliest sharding time (a row's at_ms
        rises with it). Times that cannot be told (not all aware datetimes, say) say no, and
        encoding row by row names the entity at fault."""
        if not entities or self.paused or self._room() <= 0:
            return True
        try:
            first = min(map(attrgetter(lane.spec.time_field), entities))
            return bool(int(first.timestamp() * 1000) >= self.window_end_ms)
        except Exception:
            return False

    def _split(self, rows: Sequence[EncodedRow]) -> tuple[list[EncodedRow], list[EncodedRow]]:
        """(soon, later): the rows due inside the window claimed, in call order, as many as
        there is room for; and the others."""
        window_end_ms, room = self.window_end_ms, 0 if self.paused else self._room()
        soon: list[EncodedRow] = []
        later: list[EncodedRow] = []
        for row in rows:
            (soon if row.at_ms < window_end_ms and len(soon) < room else later).append(row)
        return soon, later

    @asynccontextmanager
    async def _claiming(self, lane: Lane, from_ms: int) -> AsyncIterator[int]:
        """The stamp of one claim of `lane` (a claim_due, or an insert of claimed rows) of rows
        due at or after from_ms. If the store fails without saying whether it committed, the
        stamp is kept in doubt, and settle_doubts releases whatever rows the claim may have
        left CLAIMED."""
        stamp = self._claim_stamp()
        try:
            yield stamp
        except StoreError:
            lane.claims_in_doubt[stamp] = from_ms
            raise

    def _claim_stamp(self) -> int:
        """The claimed_at of a new claim: now, and never the stamp of an earlier claim, so that
        the rows of one claim can be told apart from every other's."""
        self._last_stamp_ms = max(self.clock.now_ms(), self._last_stamp_ms + 1)
        return self._last_stamp_ms

    async def settle_doubts(self, lane: Lane) -> None:
        """Release the rows of claims whose outcome is unknown (the connection died around
        their COMMIT): if they committed, nothing here holds those rows, so hand them back
        to be claimed again, instead of leaving them CLAIMED until this node restarts."""
        for stamp, from_ms in sorted(lane.claims_in_doubt.items()):
            released = await lane.repo.take_over(
                self.settings.epoch, from_ms=from_ms, claimed_at_ms=stamp
            )
            del lane.claims_in_doubt[stamp]
            if released:
                logger.warning(
                    "released %d rows of a claim whose reply was lost (claimed_at %d)",
                    released,
                    stamp,
                    extra={"action": "fetch", "node": self.settings.node_id, "entity": lane.name},
                )

    async def _fetch_lane(self, lane: Lane, now_ms: int, window_end_ms: int, budget: int) -> int:
        await self.settle_doubts(lane)
        claimed, batch = 0, self._batch()
        since_ms = now_ms - self.settings.horizon_ms
        # The rows a claim takes are due from the start of the window's oldest shard on (but
        # for rows older than a partitioned table's oldest partition, kept in it: a claim of
        # those in doubt stays this epoch's until its claims are taken over).
        from_ms = bucket_of(since_ms, lane.repo.policy.granularity)
        while True:
            limit = min(batch, budget - claimed, self._room(), self._room_for_due())
            if limit <= 0:
                self.backlog = True
                if self.throttled is not None:
                    self._held_back.add(lane.name)
                return claimed
            ranked = lane.name in self.ranked
            async with self._claiming(lane, from_ms) as stamp:
                jobs = await lane.repo.claim_due(
                    self.claimant,
                    now_ms=stamp,
                    # A ranked claim takes only the rows due: the backlog, not the window.
                    before_ms=min(now_ms, window_end_ms) if ranked else window_end_ms,
                    since_ms=since_ms,
                    limit=limit,
                    payload_before_ms=now_ms + self.settings.payload_ahead_ms,
                    boost_per_minute=self.settings.age_boost_per_minute if ranked else None,
                )
            claimed += len(jobs)
            placed_ms = self.clock.now_ms()
            if lane.name in self._held_back:
                self._count_late(lane, jobs, now_ms)
            self._place(lane, jobs, placed_ms)
            if len(jobs) < limit:
                self._held_back.discard(lane.name)  # nothing more in the window: none left
                if not ranked:
                    return claimed
                self.ranked.discard(lane.name)  # the backlog is claimed: the window, in order
                continue
            if not ranked:
                batch = self._next_batch(lane, jobs[-1], placed_ms)

    def _next_batch(self, lane: Lane, last: ClaimedJob, placed_ms: int) -> int:
        """After a full claim in due order: the next claim's size, and whether it ranks."""
        if last.due_ms < placed_ms - RANKED_AFTER_MS:
            self.ranked.add(lane.name)
        # Claimed oldest first: if the last was due, all of them were (a burst).
        burst = last.due_ms <= placed_ms and self.throttled is None
        return self._batch() * (BURST_BATCHES if burst else 1)

    def _count_late(self, lane: Lane, jobs: list[ClaimedJob], round_ms: int) -> None:
        """Count the jobs of a backlog the throttle held back that were due before this round
        (they fire late because of it), and log the first of a throttling episode."""
        late = [job for job in jobs if job.due_ms < round_ms]
        if not late:
            return
        lane.metrics.throttled_late.inc(len(late))
        if self._late_logged:
            return
        self._late_logged = True
        first = late[0]
        logger.warning(
            "claims fall behind while throttled (%s): %s job %s claimed %d ms after its due"
            " time; jobs of the backlog left in the store fire late",
            self.throttled or "throttle just ended",
            lane.name,
            first.key,
            round_ms - first.due_ms,
            extra={
                "action": "throttle",
                "entity": lane.name,
                "job_id": first.key,
                "node": self.settings.node_id,
            },
        )

    def _place(self, lane: Lane, jobs: list[ClaimedJob], now_ms: int) -> None:
        """Into the wheel, or, for jobs already due, straight to the dispatcher (in due order);
        overdue ones as misfire_verdict says."""
        if not jobs:
            return
        lane.metrics.claimed.inc(len(jobs))
        if len(lane.wheel) or lane.in_hand:
            jobs = self._not_held(lane, jobs)
        policy = self.settings.misfire_policy
        threshold_ms = self.settings.misfire_threshold_ms
        due_now: list[ClaimedJob] = []
        unread: list[object] = []  # wheel keys of the jobs held without their payload
        held, earliest_ms = 0, 2**62
        for job in jobs:
            # The wheel refuses a job already due by its time (never later than now_ms): only
            # those need the verdict, which is then FIRE_NOW or MISSED.
            key = hold(lane, job)
            if key is not None:
                held += 1
                if job.payload is None:
                    unread.append(key)
                    earliest_ms = min(earliest_ms, job.due_ms)
            elif misfire_verdict(job.due_ms, now_ms, policy, threshold_ms) is Verdict.MISSED:
                self._mark_missed(lane, job, now_ms)
            else:
                due_now.append(job)
        if due_now:
            self.payloads.hand_over(lane, due_now)
        if unread:
            self.payloads.track(lane, earliest_ms, unread)
        if held:
            self.on_added()

    def _not_held(self, lane: Lane, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        """Leave out the rows this node holds already. Such a row was handed back by someone
        else while held here (a node starting up), then claimed again by this node: holding it
        twice would fire it twice. The store's claim is this node's either way, so the job held
        acks it."""
        wheel, in_hand = lane.wheel, lane.in_hand
        fresh = []
        for job in jobs:
            ref = (job.key, job.at_ms)
            held = wheel.get(job.key)
            if (held is not None and held[1] == job.at_ms) or ref in wheel or ref in in_hand:
                logger.warning(
                    "%s %s claimed again while held here (its claim was handed back meanwhile); held once",
                    lane.name,
                    job.key,
                    extra={
                        "action": "claim",
                        "entity": lane.name,
                        "job_id": job.key,
                        "node": self.settings.node_id,
                    },
                )
            else:
                fresh.append(job)
        return fresh

    def _mark_missed(self, lane: Lane, job: ClaimedJob, now_ms: int) -> None:
        error = f"misfired: found {now_ms - job.due_ms} ms late (misfire_policy do_nothing)"
        history = self.acker.attempt(job, 0, Outcome.MISSED, error)
        failure = Failure(
            ref=job.ref, error=error, retry_at_ms=None, status=Status.MISSED, history=history
        )
        self.acker.failed(lane, failure)
        lane.metrics.missed.inc()


def hold(lane: Lane, job: ClaimedJob) -> object | None:
    """Into the lane's wheel under its id, or under (id, shard time) when the same id from
    another shard is held already (noted in lane.twins); the key, or None if already due."""
    if job.key not in lane.wheel:
        return job.key if lane.wheel.add(job.key, job.due_ms, job.held()) else None
    key = (job.key, job.at_ms)
    if not lane.wheel.add(key, job.due_ms, job.held()):
        return None
    lane.twins.setdefault(job.key, set()).add(job.at_ms)
    return key
