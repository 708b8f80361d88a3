"""Fenced writes: a write about this node's claims that found some of them taken over.

Every write about a claim is conditional on the claim's epoch (repos/base.py), so once another
node has taken a row over, this node's ack, failure, payload read or release of it changes
nothing. The writer sees fewer rows changed than it named; only then it asks the store which of
them another epoch holds now (a row cancelled or dropped with its shard changes nothing either,
and is no news), and each is counted (``infinite_scheduler_fenced_writes_total``) and logged
with its job id, its shard, and both nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from infinite_scheduler.jobs import Lane
from repos.base import RowRef, StoredRow, status_label

logger = logging.getLogger(__name__)


async def report_fenced(
    lane: Lane, refs: Sequence[RowRef], *, node_id: str, epoch: int, write: str
) -> list[StoredRow]:
    """The rows of `refs` another epoch holds now (after a `write` of this node's that changed
    fewer rows than it named), each counted and logged."""
    # PENDING again and still naming this node: its own retry, written by a flush whose reply
    # was lost and that is repeated (a release or a takeover clears claimed_by).
    rows = [
        row
        for row in await lane.repo.fenced(epoch, refs)
        if not (row.claim_epoch == 0 and row.claimed_by == node_id)
    ]
    for row in rows:
        lane.metrics.fenced.inc()
        logger.warning(
            "%s %s: %s fenced: taken over from %s (epoch %d), now %s",
            lane.name,
            row.key,
            write,
            node_id,
            epoch,
            _holder(row),
            extra={
                "action": "fenced",
                "entity": lane.name,
                "job_id": row.key,
                "shard": row.shard,
                "node": node_id,
                "epoch": epoch,
            },
        )
    return rows


def _holder(row: StoredRow) -> str:
    """What became of the row: PENDING (or CANCELLED) again, or the claim of another node."""
    if row.claim_epoch <= 0:
        return status_label(row.status)
    return f"{status_label(row.status)} by {row.claimed_by} (epoch {row.claim_epoch})"
