"""Takeover: the claims of nodes that died go back to PENDING, and fire once, now.

After each heartbeat renewal, a node looks at the roster (infinite_scheduler/node.py). A
running node whose heartbeat is older than ``node_timeout_s`` by the database's clock is
declared DEAD by one conditional update of its row, which exactly one node wins; the winner
moves that epoch's CLAIMED rows back to PENDING (one statement per shard, the attempt number
handed back, so the next fire carries the same idempotency key) and wakes its fetcher. The
dead node, if it was only stalled, learns it at its next heartbeat and fires nothing more: it
stopped firing already, at ``node_timeout_s`` minus one interval without a renewal.

At start-up a node also hands back the claims of every epoch that is not running (its own
earlier runs, and any run whose takeover was cut off): never a running node's.

A takeover cut off by a store error is the winner's debt: it tries again after each heartbeat
until it gets through. One whose winner died too, or a graceful leave whose hand-back failed,
leaves claims under a finished epoch (DEAD or LEFT): the maintenance lease's holder sweeps each
finished epoch once (:meth:`Takeover.sweep`), so they fire within a maintenance interval rather
than at the next start of some node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from infinite_scheduler.clock import Clock
from infinite_scheduler.jobs import Lane
from infinite_scheduler.membership import is_dead, live_nodes
from infinite_scheduler.metrics import Metrics
from repos.base import ClaimsLocked
from repos.cluster import Membership, NodeInfo, NodeState, Roster

#: A takeover hands back the claims due from this long ago on first, and wakes the fetcher,
#: then the older ones. A node's claims are nearly all due from a little before now on (its
#: window, the jobs it was firing); but its finished rows keep their epoch in the claim index,
#: so the scan back to the misfire horizon (a day, by default) reads every row it ran that long:
#: seconds to minutes for a node that ran for a day, which the recent claims must not wait for.
RECENT_FIRST_MS = 60_000
#: States of a node that holds nothing any more: what is still claimed under it is left over.
FINISHED = frozenset({NodeState.DEAD, NodeState.LEFT})

logger = logging.getLogger(__name__)


class Takeover:
    """Moves the claims of dead nodes (and, at start, of every epoch not running) back."""

    def __init__(
        self,
        membership: Membership,
        lanes: Iterable[Lane],
        *,
        node_id: str,
        epoch: int,
        node_timeout_ms: int,
        horizon_ms: int,
        clock: Clock,
        wake: Callable[[], None],
        metrics: Metrics,
    ) -> None:
        self.membership = membership
        self.lanes = list(lanes)
        self.node_id = node_id
        self.epoch = epoch
        self.node_timeout_ms = node_timeout_ms
        self.horizon_ms = horizon_ms
        self.clock = clock
        self.wake = wake
        self.metrics = metrics
        #: Set by at_start, once the lanes' stores are open: the heartbeat runs before that.
        self.started = False
        #: Dead nodes this node declared DEAD whose claims it has not all moved yet.
        self.owed: dict[int, NodeInfo] = {}
        #: Finished epochs sweep() has handed back (or found nothing under).
        self.swept: set[int] = set()

    def __repr__(self) -> str:
        return f"<Takeover node={self.node_id} epoch={self.epoch}>"

    async def of_dead(self, roster: Roster) -> int:
        """Declare every timed-out running node DEAD and take over the claims of those this
        node won, and of those it won before but could not finish; returns the rows moved.
        Nothing before at_start ran: the heartbeat starts before the lanes' stores are open.
        Claims locked by the dead node's open transaction, or a store error, leave the rest
        owed, for the next call."""
        if not self.started:
            return 0
        for node in roster.nodes:
            if node.epoch == self.epoch or not is_dead(
                node, now_ms=roster.now_ms, node_timeout_ms=self.node_timeout_ms
            ):
                continue
            if await self.membership.declare_dead(node.epoch, self.node_timeout_ms):
                self.owed[node.epoch] = node
        moved = 0
        for dead in list(self.owed.values()):
            moved_now, locked = await self._hand_back(dead.epoch, self._from_ms(dead))
            moved += moved_now
            self._log_takeover(dead, roster.now_ms, moved_now, locked)
            if not locked:
                del self.owed[dead.epoch]
                self.metrics.takeovers.inc()
        return moved

    async def sweep(self, roster: Roster) -> int:
        """Hand back the claims still under a finished (DEAD or LEFT) epoch of `roster`, each
        epoch once per process (again while some stay locked); returns the rows moved. For the
        maintenance lease's holder: claims a cut-off takeover or a failed leave left behind.
        Epochs absent from the roster (pruned, or joined since it was read) are not touched."""
        if not self.started:
            return 0
        moved = 0
        finished = {n.epoch: n for n in roster.nodes if n.state in FINISHED}
        for epoch, node in finished.items():
            if epoch in self.swept or epoch in self.owed:
                continue
            moved_now, locked = await self._hand_back(epoch, self._from_ms(node))
            if moved_now or locked:
                logger.warning(
                    "%d claims were left under node %s epoch %d, which is %s: handed back, they"
                    " fire once, now%s",
                    moved_now,
                    node.node_id,
                    epoch,
                    NodeState(node.state).name,
                    f"; {locked} more stay locked by an open transaction" if locked else "",
                    extra={**self._extra(), "dead_node": node.node_id, "dead_epoch": epoch},
                )
            moved += moved_now
            if not locked:
                self.swept.add(epoch)
        self.swept &= finished.keys()
        return moved

    async def at_start(self, roster: Roster) -> int:
        """Before the first claim, with a roster read after this node joined: the dead nodes'
        claims (declared here), then those of every earlier epoch that is not live, from the
        misfire horizon on. Epochs newer than this one joined since: left alone. Returns the
        rows moved; rows still locked are the sweep's."""
        self.started = True
        moved = await self.of_dead(roster)
        live = live_nodes(roster, node_timeout_ms=self.node_timeout_ms)
        keep = {n.epoch for n in live} | self.owed.keys()  # the owed: of_dead's to finish
        from_ms = self.clock.now_ms() - self.horizon_ms
        released, locked = await self._hand_back_each(
            lambda lane: lane.repo.take_over_earlier(self.epoch, keep=keep, from_ms=from_ms)
        )
        if released or locked:
            logger.warning(
                "took over %d claims left by runs no longer running (this node's earlier runs,"
                " or a takeover cut off); they fire once, now%s",
                released,
                f"; {locked} more stay locked by an open transaction" if locked else "",
                extra=self._extra(),
            )
        return moved + released

    def _from_ms(self, node: NodeInfo) -> int:
        """Where a node's claims may start: what it said it holds from, within the horizon."""
        horizon_ms = self.clock.now_ms() - self.horizon_ms
        return max(node.holds_from_ms, horizon_ms) if node.holds_from_ms else horizon_ms

    async def _hand_back(self, epoch: int, from_ms: int) -> tuple[int, int]:
        """An epoch's claims from from_ms on, the recent ones first: (moved, left locked)."""
        recent_ms = max(from_ms, self.clock.now_ms() - RECENT_FIRST_MS)
        moved, locked = await self._hand_back_each(
            lambda lane: lane.repo.take_over(epoch, from_ms=recent_ms)
        )
        if recent_ms > from_ms:
            older, still = await self._hand_back_each(
                lambda lane: lane.repo.take_over(epoch, from_ms=from_ms, before_ms=recent_ms)
            )
            moved, locked = moved + older, locked + still
        return moved, locked

    async def _hand_back_each(self, take: Callable[[Lane], Awaitable[int]]) -> tuple[int, int]:
        """`take` in every lane: (rows moved, rows left locked by an open transaction). A
        fetch follows at once if any moved."""
        moved = locked = 0
        for lane in self.lanes:
            try:
                released = await take(lane)
            except ClaimsLocked as exc:
                released, locked = exc.moved, locked + exc.locked
            self.metrics.claims_taken_over.labels(lane.name).inc(released)
            moved += released
        if moved:
            self.wake()
        return moved, locked

    def _log_takeover(self, dead: NodeInfo, now_ms: int, moved: int, locked: int) -> None:
        logger.warning(
            "node %s epoch %d is dead (heartbeat %.1f s old by the database's clock, host %s"
            " pid %d): node %s epoch %d took over %d of its claims; they fire once, now%s",
            dead.node_id,
            dead.epoch,
            dead.heartbeat_age_ms(now_ms) / 1000,
            dead.host,
            dead.pid,
            self.node_id,
            self.epoch,
            moved,
            f". {locked} more stay locked by its open transaction: taken over once it ends"
            if locked
            else "",
            extra={**self._extra(), "dead_node": dead.node_id, "dead_epoch": dead.epoch},
        )

    def _extra(self) -> dict[str, object]:
        return {"action": "takeover", "node": self.node_id, "epoch": self.epoch}
