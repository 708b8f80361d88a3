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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from infinite_scheduler.clock import Clock
from infinite_scheduler.jobs import Lane
from infinite_scheduler.membership import is_dead, live_nodes
from infinite_scheduler.metrics import Metrics
from repos.cluster import Membership, NodeInfo, Roster

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

    def __repr__(self) -> str:
        return f"<Takeover node={self.node_id} epoch={self.epoch}>"

    async def of_dead(self, roster: Roster) -> int:
        """Declare every timed-out running node DEAD and take over the claims of those this
        node won; returns the rows moved. Nothing before at_start ran: the heartbeat starts
        before the lanes' stores are open."""
        if not self.started:
            return 0
        moved = 0
        for node in roster.nodes:
            if node.epoch == self.epoch or not is_dead(
                node, now_ms=roster.now_ms, node_timeout_ms=self.node_timeout_ms
            ):
                continue
            if await self.membership.declare_dead(node.epoch, self.node_timeout_ms):
                moved += await self._take_over(node, roster.now_ms)
        return moved

    async def at_start(self, roster: Roster) -> int:
        """Before the first claim, with a roster read after this node joined: the dead nodes'
        claims (declared here), then those of every earlier epoch that is not live, from the
        misfire horizon on. Epochs newer than this one joined since: left alone. Returns the
        rows moved."""
        self.started = True
        moved = await self.of_dead(roster)
        keep = {n.epoch for n in live_nodes(roster, node_timeout_ms=self.node_timeout_ms)}
        from_ms = self.clock.now_ms() - self.horizon_ms
        for lane in self.lanes:
            released = await lane.repo.take_over_earlier(self.epoch, keep=keep, from_ms=from_ms)
            if released:
                self.metrics.claims_taken_over.labels(lane.name).inc(released)
                logger.warning(
                    "%s: took over %d claims left by runs no longer running (this node's"
                    " earlier runs, or a takeover cut off); they fire once, now",
                    lane.name,
                    released,
                    extra=self._extra(lane.name),
                )
            moved += released
        if moved:
            self.wake()
        return moved

    async def _take_over(self, dead: NodeInfo, now_ms: int) -> int:
        horizon_ms = self.clock.now_ms() - self.horizon_ms
        from_ms = max(dead.holds_from_ms, horizon_ms) if dead.holds_from_ms else horizon_ms
        moved = 0
        for lane in self.lanes:
            released = await lane.repo.take_over(dead.epoch, from_ms=from_ms)
            self.metrics.claims_taken_over.labels(lane.name).inc(released)
            moved += released
        self.metrics.takeovers.inc()
        logger.warning(
            "node %s epoch %d is dead (heartbeat %.1f s old by the database's clock, host %s"
            " pid %d): node %s epoch %d took over its %d claims; they fire once, now",
            dead.node_id,
            dead.epoch,
            dead.heartbeat_age_ms(now_ms) / 1000,
            dead.host,
            dead.pid,
            self.node_id,
            self.epoch,
            moved,
            extra={
                "action": "takeover",
                "node": self.node_id,
                "epoch": self.epoch,
                "dead_node": dead.node_id,
                "dead_epoch": dead.epoch,
            },
        )
        self.wake()
        return moved

    def _extra(self, entity: str) -> dict[str, object]:
        return {"action": "takeover", "entity": entity, "node": self.node_id, "epoch": self.epoch}
