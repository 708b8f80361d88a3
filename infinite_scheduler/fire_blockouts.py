"""Blockouts applied to every job as it comes due on this node, one-shot jobs included.

The materialiser applies blockouts to schedule occurrences when it makes them
(infinite_scheduler/schedules/blockouts.py); this applies those scoped globally, to an entity
type or to a category at the point a claimed job is about to fire (out of the wheel, or claimed
already due), by the same pure rule (``blocked``), at the time it would fire:

- ``delay``: the job goes back to the store, PENDING, due at the window's end, with its claim's
  attempt handed back and last_error ``blockout '<name>': delayed to <ms>``: a restart keeps the
  new time, and the job fires once, then;
- ``skip``: its row is stored MISSED with last_error ``blockout '<name>': skipped``.

Schedule-scoped blockouts stay the materialiser's (a claimed row does not say its schedule's
name). The node's view of the blockouts is refreshed from the store every heartbeat
(infinite_scheduler/control_view.py); without any, the fire path pays one truth test per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from infinite_scheduler.acker import Acker
from infinite_scheduler.jobs import Lane
from infinite_scheduler.schedules.blockouts import Blockout, Moved, blocked
from repos.base import ClaimedJob, Failure, Status, category_name, code_of
from repos.history import Outcome

logger = logging.getLogger(__name__)


class BlockoutGate:
    """This node's view of the blockouts that apply to jobs as they fire."""

    def __init__(self, acker: Acker, *, node_id: str) -> None:
        self._acker = acker
        self._node_id = node_id
        self._blockouts: list[Blockout] = []
        #: The blockouts applying to (entity type, category code): a few per refresh.
        self._applying: dict[tuple[str, int], list[Blockout]] = {}

    def __bool__(self) -> bool:
        return bool(self._blockouts)

    def set(self, blockouts: Iterable[Blockout]) -> None:
        """The blockouts as the store has them now (those of a schedule are left out)."""
        kept = [b for b in blockouts if b.scope != "schedule"]
        if kept != self._blockouts:
            self._blockouts = kept
            self._applying = {}

    def screen(self, lane: Lane, jobs: list[ClaimedJob], now_ms: int) -> list[ClaimedJob]:
        """The jobs that may fire now; the others are postponed or skipped (their outcome
        written by the acker), and logged with the blockout's name."""
        free: list[ClaimedJob] = []
        for job in jobs:
            applying = self._applying_to(lane.name, code_of(job.options))
            verdict = blocked(applying, now_ms) if applying else None
            if verdict is None:
                free.append(job)
            elif isinstance(verdict, Moved):
                self._postpone(lane, job, verdict)
            else:
                self._skip(lane, job, verdict.blockout)
        return free

    def _applying_to(self, entity: str, code: int) -> list[Blockout]:
        found = self._applying.get((entity, code))
        if found is None:
            category = category_name(code) if code else ""
            found = [
                b
                for b in self._blockouts
                if b.applies(entity=entity, category=category, schedule="")
            ]
            self._applying[(entity, code)] = found
        return found

    def _postpone(self, lane: Lane, job: ClaimedJob, moved: Moved) -> None:
        error = f"blockout {moved.blockout!r}: delayed to {moved.at_ms}"
        failure = Failure(ref=job.ref, error=error, retry_at_ms=moved.at_ms, hand_back=True)
        self._acker.failed(lane, failure)
        self._log(lane, job, moved.blockout, f"delayed to {moved.at_ms}")

    def _skip(self, lane: Lane, job: ClaimedJob, blockout: str) -> None:
        error = f"blockout {blockout!r}: skipped"
        history = self._acker.attempt(job, 0, Outcome.MISSED, error)
        failure = Failure(
            ref=job.ref, error=error, retry_at_ms=None, status=Status.MISSED, history=history
        )
        self._acker.failed(lane, failure)
        lane.metrics.missed.inc()
        self._log(lane, job, blockout, "skipped")

    def _log(self, lane: Lane, job: ClaimedJob, blockout: str, what: str) -> None:
        logger.info(
            "%s %s: blockout %r, %s",
            lane.name,
            job.key,
            blockout,
            what,
            extra={
                "action": "blockout",
                "entity": lane.name,
                "job_id": job.key,
                "blockout": blockout,
                "node": self._node_id,
            },
        )
