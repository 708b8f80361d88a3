"""Drops from this node's wheels the jobs an operator cancelled or paused while it held them.

The job service (infinite_scheduler/management) changes a CLAIMED row only conditionally on
its claim, and in the same transaction posts a revocation naming the claim's epoch
(repos/control.py). This loop takes this epoch's revocations every near_poll_interval_s (one
indexed read of a table that is nearly always empty: the hot path pays nothing) and forgets
those jobs, so a change that lands at least management.rules.CLAIM_REACH_MS before a job is due
stops it even when its payload was read already. A job out of the wheel by then (due, in a
handler) is past stopping: its ack is conditional on the claim and changes nothing, and the row
keeps the operator's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from infinite_scheduler.jobs import Lane
from infinite_scheduler.waits import Backoff, wait_any
from repos.base import StoreError
from repos.cluster import Membership, Revocation

logger = logging.getLogger(__name__)


class Revoker:
    """Takes this epoch's revocations and forgets the jobs they name."""

    def __init__(
        self,
        membership: Membership,
        lanes: Mapping[str, Lane],
        *,
        node_id: str,
        epoch: int,
        interval_s: float,
        backoff: Backoff | None = None,
    ) -> None:
        self.membership = membership
        self.lanes = lanes
        self.node_id = node_id
        self.epoch = epoch
        self.interval_s = interval_s
        self.backoff = backoff or Backoff()
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<Revoker epoch={self.epoch} dropped={self.dropped}>"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.take_once()
            except StoreError as exc:
                logger.warning(
                    "reading revocations failed, retrying in %.1fs: %s",
                    self.backoff.delay_s,
                    exc,
                    extra={"action": "revoke", "node": self.node_id},
                )
                await self.backoff.wait(stop)
                continue
            self.backoff.succeeded()
            await wait_any(stop, timeout_s=self.interval_s)

    async def take_once(self) -> int:
        """One read of the revocations; returns the jobs forgotten (a run() turn, which an
        engine in manual mode takes itself)."""
        dropped = 0
        for revocation in await self.membership.take_revocations(self.epoch):
            lane = self.lanes.get(revocation.entity)
            if lane is not None and self._forget(lane, revocation):
                dropped += 1
        self.dropped += dropped
        return dropped

    def _forget(self, lane: Lane, revocation: Revocation) -> bool:
        key: int | str = int(revocation.key) if lane.spec.key_type is int else revocation.key
        held = lane.wheel.get(key)
        if held is not None and held[1] == revocation.at_ms:
            lane.wheel.cancel(key)
        elif lane.wheel.cancel((key, revocation.at_ms)) is not None:
            ats = lane.twins.get(key)
            if ats is not None:
                ats.discard(revocation.at_ms)
        else:
            in_hand = (key, revocation.at_ms) in lane.in_hand
            logger.info(
                "%s %s changed by an operator, not in the wheel%s",
                lane.name,
                key,
                ": out of it already, past stopping" if in_hand else "",
                extra={
                    "action": "revoke",
                    "entity": lane.name,
                    "job_id": key,
                    "node": self.node_id,
                },
            )
            return False
        logger.info(
            "%s %s changed by an operator: dropped from the wheel, not fired here",
            lane.name,
            key,
            extra={"action": "revoke", "entity": lane.name, "job_id": key, "node": self.node_id},
        )
        return True
