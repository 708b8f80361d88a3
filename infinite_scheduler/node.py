"""This process as a node of its store: the join, the heartbeat loop, self-fencing, the leave.

The engine joins before it claims anything (:func:`join`), which gives the process its epoch;
a live-looking row in the way whose process is gone from this host (a crash, restarted at once)
is declared dead rather than waited out.
:class:`Node` then renews the epoch's heartbeat every ``cluster.heartbeat_interval_s``, again
sooner after a failure, and keeps the fence (infinite_scheduler/membership.py): once its last
renewal was sent ``node_timeout_s - heartbeat_interval_s`` ago, the dispatcher starts no handler
(the jobs wait, none is lost) until a renewal gets through. A timer closes the fence on time
even while a renewal hangs on a store that does not answer. A heartbeat that finds the epoch
DEAD (another node declared it so and may be taking its claims over) closes the fence for good
and calls ``on_declared_dead``: the engine's to act on. After each renewal the node looks at
the roster and takes over the claims of nodes that died (infinite_scheduler/takeover.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from infinite_scheduler.membership import Fence, gone_from_this_host, live_nodes
from infinite_scheduler.metrics import Metrics
from infinite_scheduler.takeover import Takeover
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import StoreError
from repos.cluster import Joined, LiveNode, Membership, NodeInfo, NodeRefused, NodeState, Roster

logger = logging.getLogger(__name__)
#: Rows of gone processes a join declares dead before it gives up (each refusal names one).
GONE_TRIES = 3
#: (node id, epoch) of this process's engines, from their join until they stopped: a row in the
#: way naming this host and this very pid, and none of these, is an earlier process's that had
#: the same pid (see membership.gone_from_this_host).
_RUNNING_HERE: set[tuple[str, int]] = set()


class Gate(Protocol):
    """What the fence opens and closes: the dispatcher."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def guard(self, fence: Callable[[], bool]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who joins: the row a process start adds to the nodes table."""

    node_id: str
    host: str
    pid: int
    version: str


def pid_running(pid: int) -> bool:
    """Whether process `pid` runs on this machine (signal 0: nothing is sent). Where that
    cannot be told (not POSIX, a pid that is no process id), it counts as running."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


async def join(
    membership: Membership,
    identity: Identity,
    *,
    node_timeout_ms: int,
    running: Callable[[int], bool] = pid_running,
) -> Joined:
    """Join the store as a new epoch (NodeIdInUse, SingleNodeStore: refused); log it. The
    caller calls :func:`stopped` once the epoch stopped, whatever the outcome.

    A live-looking node in the way that is a process of this host no longer `running` (a
    crash, restarted at once) does not refuse the join: it is declared DEAD here, and comes
    back among ``Joined.earlier``, its claims this process's to take over."""
    gone: list[NodeInfo] = []
    for tries_left in range(GONE_TRIES, -1, -1):
        try:
            joined = await membership.join(
                identity.node_id,
                host=identity.host,
                pid=identity.pid,
                version=identity.version,
                node_timeout_ms=node_timeout_ms,
            )
        except NodeRefused as refused:
            holder = refused.holder
            if not tries_left or not gone_from_this_host(
                holder,
                host=identity.host,
                pid=identity.pid,
                running=running,
                ours=_RUNNING_HERE,
            ):
                raise
            found = await membership.declare_gone(holder.epoch)
            if found is not None:
                _log_gone(identity, holder)
                gone.append(found)
            continue
        joined = Joined(epoch=joined.epoch, earlier=(*joined.earlier, *gone))
        _RUNNING_HERE.add((identity.node_id, joined.epoch))
        _log_join(identity, joined)
        return joined
    raise AssertionError("unreachable")


def stopped(node_id: str, epoch: int) -> None:
    """The engine of this epoch stopped (or never got going): a row of it still in the way of a
    later join in this process is a leftover, no longer this process's own."""
    _RUNNING_HERE.discard((node_id, epoch))


def _log_gone(identity: Identity, holder: LiveNode) -> None:
    logger.warning(
        "%s is gone (no such process on this host): declared it dead; its claims are this"
        " process's to take over",
        holder,
        extra={"action": "death", "node": identity.node_id, "epoch": holder.epoch},
    )


def _log_join(identity: Identity, joined: Joined) -> None:
    earlier = ", ".join(str(n.epoch) for n in joined.earlier) or "none"
    logger.info(
        "joined as node %s epoch %d (host %s pid %d); earlier epochs to take over: %s",
        identity.node_id,
        joined.epoch,
        identity.host,
        identity.pid,
        earlier,
        extra={"action": "join", "node": identity.node_id, "epoch": joined.epoch},
    )


class Node:
    """One epoch's heartbeat and fence. Times are this process's monotonic clock, in ms."""

    def __init__(
        self,
        membership: Membership,
        *,
        node_id: str,
        epoch: int,
        fence: Fence,
        monotonic_ms: Callable[[], int],
        renewed_ms: int,
        gate: Gate,
        holds_from_ms: Callable[[], int],
        on_declared_dead: Callable[[], None],
        on_live: Callable[[int], None],
        takeover: Takeover,
        metrics: Metrics,
        backoff: Backoff,
    ) -> None:
        self.membership = membership
        self.node_id = node_id
        self.epoch = epoch
        self.fence = fence
        self.monotonic_ms = monotonic_ms
        #: When the last renewal that got through was sent (the join's, at first).
        self.renewed_ms = renewed_ms
        #: When the last renewal was sent, whatever came of it.
        self.attempted_ms = renewed_ms
        self.gate = gate
        gate.guard(self._fence_open)
        self.holds_from_ms = holds_from_ms
        self.on_declared_dead = on_declared_dead
        self.on_live = on_live
        self.takeover = takeover
        self.metrics = metrics
        self.backoff = backoff
        self.declared_dead = False
        self.renewals = 0
        self._open = True
        self._timer: asyncio.TimerHandle | None = None
        self._taking_over: asyncio.Task[None] | None = None
        metrics.heartbeat_lag.set_function(lambda: self.lag_ms() / 1000)

    def __repr__(self) -> str:
        state = "dead" if self.declared_dead else "firing" if self._open else "fenced"
        return f"<Node {self.node_id} epoch={self.epoch} {state} renewals={self.renewals}>"

    def lag_ms(self) -> int:
        """How long ago the last renewal that got through was sent."""
        return max(0, self.monotonic_ms() - self.renewed_ms)

    @property
    def may_fire(self) -> bool:
        if self.declared_dead:
            return False
        return self.fence.may_fire(renewed_ms=self.renewed_ms, now_ms=self.monotonic_ms())

    async def beat(self) -> bool | None:
        """Renew once: True renewed, False the epoch is no longer ACTIVE or DRAINING (declared
        dead), None the store failed (logged; the fence decides whether firing goes on)."""
        if self.declared_dead:
            return False
        sent_ms = self.attempted_ms = self.monotonic_ms()
        try:
            renewed = await self.membership.heartbeat(self.epoch, self.holds_from_ms())
        except StoreError as exc:
            logger.warning(
                "heartbeat failed, %.1f s since the last renewal: %s",
                self.lag_ms() / 1000,
                exc,
                extra=self._extra("heartbeat"),
            )
            self.check_fence()
            return None
        if not renewed:
            self._dead()
            return False
        self.renewals += 1
        self.renewed_ms = max(self.renewed_ms, sent_ms)
        self.check_fence()
        await self._look_around()
        return True

    async def beat_if_due(self) -> None:
        """Manual mode: renew if an interval passed since the last try (on the engine's clock),
        as the loop would have; a failure is logged, not raised, as in the loop."""
        if self.fence.heartbeat_due(attempted_ms=self.attempted_ms, now_ms=self.monotonic_ms()):
            await self.beat()
        else:
            self.check_fence()

    def _fence_open(self) -> bool:
        """Whether handlers may start now, the gate closed if not (the dispatcher asks)."""
        self.check_fence()
        return self._open

    def check_fence(self) -> None:
        """Close or open the gate as the fence now says; say so when it changes."""
        may_fire = self.may_fire
        if may_fire == self._open:
            return
        self._open = may_fire
        if may_fire:
            logger.warning("heartbeat renewed: firing again", extra=self._extra("fence"))
            self.gate.resume()
            return
        if not self.declared_dead:
            logger.error(
                "no heartbeat renewal for %.1f s (node_timeout_s %g, margin %g s): this node"
                " stops firing until it renews, in case others take its claims over",
                self.lag_ms() / 1000,
                self.fence.node_timeout_ms / 1000,
                self.fence.margin_ms / 1000,
                extra=self._extra("fence"),
            )
        self.gate.pause()

    async def run(self, stop: asyncio.Event) -> None:
        """The heartbeat loop, until `stop`: a renewal every interval, drift-free; after a
        failure, again after a backoff of at most a second (or the interval, if shorter)."""
        try:
            while not stop.is_set():
                self._arm_fence_timer()
                outcome = await self.beat()
                if outcome is False:
                    await stop.wait()  # declared dead: nothing is left to renew
                    return
                if outcome is None:
                    await self.backoff.wait(stop)
                    continue
                self.backoff.succeeded()
                elapsed_ms = self.monotonic_ms() - self.attempted_ms
                delay_s = (self.fence.heartbeat_interval_ms - elapsed_ms) / 1000
                await wait_any(stop, timeout_s=max(0.0, delay_s))
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def drain(self) -> None:
        """Mark the epoch DRAINING: a graceful stop's first word. It claims nothing more and
        is still live (its heartbeat goes on) while it drains and hands its claims back; a
        failure to say so is logged, not raised (the stop goes on, and LEFT follows)."""
        try:
            await self.membership.set_state(self.epoch, NodeState.DRAINING)
        except StoreError as exc:
            logger.warning("could not mark the epoch DRAINING: %s", exc, extra=self._extra("leave"))
            return
        logger.info(
            "draining: node %s epoch %d claims nothing more, finishes its handlers and hands"
            " its claims back",
            self.node_id,
            self.epoch,
            extra=self._extra("leave"),
        )

    async def leave(self) -> None:
        """Mark the epoch LEFT (it holds nothing any more): a graceful stop's last word."""
        left = await self.membership.set_state(self.epoch, NodeState.LEFT)
        logger.info(
            "left: node %s epoch %d%s",
            self.node_id,
            self.epoch,
            "" if left else " (its row was no longer ACTIVE or DRAINING)",
            extra=self._extra("leave"),
        )

    def _arm_fence_timer(self) -> None:
        """Call check_fence at the fence's deadline: a renewal hanging on a silent store must
        not keep the gate open past it. Armed again if it fires a little early."""
        if self._timer is not None:
            self._timer.cancel()
        left_ms = self.fence.deadline_ms(self.renewed_ms) - self.monotonic_ms()
        self._timer = asyncio.get_running_loop().call_later(
            max(0.001, left_ms / 1000), self._on_fence_timer
        )

    def _on_fence_timer(self) -> None:
        self._timer = None
        self.check_fence()
        if self._open:
            self._arm_fence_timer()

    def _dead(self) -> None:
        self.declared_dead = True
        logger.critical(
            "node %s epoch %d was declared dead (its heartbeat was %.1f s old by this node's"
            " clock): another node may be taking its claims over; it fires nothing more",
            self.node_id,
            self.epoch,
            self.lag_ms() / 1000,
            extra=self._extra("death"),
        )
        self.check_fence()
        self.on_declared_dead()

    def count_live(self, roster: Roster) -> None:
        """The gauge nodes_live, and on_live: how many nodes share the store's work."""
        live = len(live_nodes(roster, node_timeout_ms=self.fence.node_timeout_ms))
        self.metrics.nodes_live.set(live)
        self.on_live(live)

    async def _look_around(self) -> None:
        """After a renewal: count the live nodes, and start taking over the claims of dead
        ones. The takeover runs beside the heartbeat, one at a time: it may wait on rows a
        frozen node still holds locked, and must not hold up this node's renewals meanwhile."""
        try:
            roster = await self.membership.list_nodes(finished=0)
        except StoreError as exc:
            self._look_failed(exc)
            return
        self.count_live(roster)
        if self._taking_over is None or self._taking_over.done():
            task = asyncio.create_task(self._take_over(roster), name="infinite-scheduler:takeover")
            self._taking_over = task

    async def _take_over(self, roster: Roster) -> None:
        try:
            await self.takeover.of_dead(roster)
        except StoreError as exc:
            self._look_failed(exc)

    def _look_failed(self, exc: StoreError) -> None:
        logger.warning(
            "looking for dead nodes failed (tried again after the next heartbeat): %s",
            exc,
            extra=self._extra("takeover"),
        )

    async def settle(self) -> None:
        """Wait for a takeover under way (manual mode: a turn finishes what it started)."""
        if self._taking_over is not None:
            await asyncio.gather(self._taking_over, return_exceptions=True)

    async def stop_taking_over(self) -> None:
        """At a stop: cancel a takeover still waiting (on a frozen node's locks, say); the
        dead node stays DEAD and its claims are the next start's or another node's."""
        task, self._taking_over = self._taking_over, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _extra(self, action: str) -> dict[str, object]:
        return {"action": action, "node": self.node_id, "epoch": self.epoch}
