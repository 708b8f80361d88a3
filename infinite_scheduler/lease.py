"""One runner for a chore of the whole store: a named lease in the store's leases table.

Shard maintenance (and, later, other chores) should run on one node at a time: the node that
holds the lease takes it again (renews it) before each pass; the others find it taken and skip
the pass. The lease names its holder by epoch and expires by the database's clock
(repos/cluster.py), so a holder that stops renewing (killed, stalled, cut off) loses it once it
expired, and one that left or was declared dead loses it at once. A graceful stop releases it,
so that another node takes it at its next try. Not ``GET_LOCK``: Galera does not replicate
named locks, and one would end with the connection that took it.

The gauge ``infinite_scheduler_lease_held{name}`` says whether this node holds it (1) or not.
"""

from __future__ import annotations

import logging

from infinite_scheduler.metrics import Metrics
from repos.base import StoreError
from repos.cluster import Membership

logger = logging.getLogger(__name__)

#: The lease of shard maintenance (infinite_scheduler/maintenance.py).
MAINTENANCE = "maintenance"
#: The lease of the dependency release (infinite_scheduler/dependency_release.py).
DEPENDENCIES = "dependencies"


def maintenance_lease_ttl_ms(*, interval_s: float, node_timeout_s: float) -> int:
    """How long one renewal of the maintenance lease lasts: two maintenance intervals and the
    node timeout.

    The holder renews at every pass, one interval apart plus the time a pass takes: a ttl of
    one interval would lapse between two passes and hand the lease from node to node. Two
    intervals let one renewal fail (the store out of reach, a slow pass) without losing it; the
    node timeout on top keeps it through an outage that does not make the node dead either.
    Failover costs little: a holder that left or was declared dead frees it at once, and
    create_ahead makes shards days ahead, so a killed holder's lease lapsing after up to ttl +
    one interval (about 15 min at the defaults) delays no insert and no claim.
    """
    return int((2 * interval_s + node_timeout_s) * 1000)


class Lease:
    """A named lease of one epoch: taken or renewed by acquire(), given up by release()."""

    def __init__(
        self,
        membership: Membership,
        *,
        name: str,
        epoch: int,
        ttl_ms: int,
        node_id: str,
        metrics: Metrics,
    ) -> None:
        self.membership = membership
        self.name = name
        self.epoch = epoch
        self.ttl_ms = ttl_ms
        self.node_id = node_id
        #: Whether the last acquire() got it (and no release() since).
        self.held = False
        self._gauge = metrics.lease_held.labels(name)
        self._gauge.set(0)

    def __repr__(self) -> str:
        return f"<Lease {self.name} epoch={self.epoch} held={self.held}>"

    async def acquire(self) -> bool:
        """Take or renew the lease for ttl_ms; False if another node holds it, or the store
        failed (logged: the chore waits for the next try rather than risk running twice)."""
        try:
            held = await self.membership.acquire_lease(self.name, self.epoch, self.ttl_ms)
        except StoreError as exc:
            logger.warning(
                "could not take or renew the lease %r: %s",
                self.name,
                exc,
                extra=self._extra(),
            )
            held = False
        if held != self.held:
            logger.info(
                "%s the lease %r (epoch %d)",
                "took" if held else "lost",
                self.name,
                self.epoch,
                extra=self._extra(),
            )
        self._set(held)
        return held

    async def release(self) -> None:
        """Give the lease up if this epoch holds it (a graceful stop); a store error is logged,
        and the lease then lapses after its ttl."""
        try:
            await self.membership.release_lease(self.name, self.epoch)
        except StoreError as exc:
            logger.warning(
                "could not release the lease %r; it lapses in at most %g s: %s",
                self.name,
                self.ttl_ms / 1000,
                exc,
                extra=self._extra(),
            )
        else:
            if self.held:
                logger.info(
                    "released the lease %r (epoch %d)", self.name, self.epoch, extra=self._extra()
                )
        self._set(False)

    def _set(self, held: bool) -> None:
        self.held = held
        self._gauge.set(1 if held else 0)

    def _extra(self) -> dict[str, object]:
        return {"action": "lease", "lease": self.name, "node": self.node_id, "epoch": self.epoch}
