"""Notices when something blocks the event loop, and names the job that did.

An async handler that calls ``time.sleep()`` or a blocking client holds up every other job, the
fetcher and the acker, and no timeout can cut it off: cancelling needs the loop. So the loop
beats every BEAT_S, and a watcher thread that hears no beat for `warn_s` reads the loop
thread's stack: the frame of the job being run (found by `find_job`) and the innermost frame
(the user code it is stuck in) go into a warning while the loop is still blocked. When the
loop is back, the stall's length is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from infinite_scheduler.metrics import Metrics

logger = logging.getLogger(__name__)

#: How often the loop beats, and the watcher looks.
BEAT_S = 0.1
#: The job a frame of the loop's stack is running: (entity type, job id), or None.
FindJob = Callable[[FrameType], tuple[str, int | str] | None]


@dataclass(frozen=True, slots=True)
class Blocker:
    """What the loop was running when the watcher found it blocked."""

    entity: str | None
    job_id: int | str | None
    where: str  #: ``file:line in function`` of the innermost frame

    def __str__(self) -> str:
        job = f"{self.entity} job {self.job_id}" if self.job_id is not None else "no job"
        return f"{job}, at {self.where}"


def find_blocker(frame: FrameType | None, find_job: FindJob) -> Blocker:
    """Walk the loop thread's stack outwards from its innermost frame."""
    if frame is None:
        return Blocker(None, None, "?")
    code = frame.f_code
    where = f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
    current: FrameType | None = frame
    while current is not None:
        job = find_job(current)
        if job is not None:
            return Blocker(job[0], job[1], where)
        current = current.f_back
    return Blocker(None, None, where)


class LoopLagMonitor:
    """The loop's heartbeat and the thread that watches it; `start()` inside the loop."""

    def __init__(self, *, warn_s: float, metrics: Metrics, node_id: str, find_job: FindJob) -> None:
        self.warn_s = warn_s
        self.metrics = metrics
        self.node_id = node_id
        self.find_job = find_job
        self.stalls = 0
        self.blocker: Blocker | None = None  #: of the stall in progress or the last one
        self._beat_at = time.monotonic()
        self._blocked_beat = 0.0  #: the beat after which the watcher found `blocker`
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._loop_thread = 0

    def __repr__(self) -> str:
        return f"<LoopLagMonitor stalls={self.stalls} warn_s={self.warn_s}>"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat_at = time.monotonic()
        self._handle = loop.call_later(BEAT_S, self._beat, loop)
        self._watcher = threading.Thread(
            target=self._watch, name="infinite-scheduler-loop-watch", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._watcher is not None:
            self._watcher.join()

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        now, last_beat = time.monotonic(), self._beat_at
        lag_s = max(0.0, now - last_beat - BEAT_S)
        self._beat_at = now
        self.metrics.loop_lag.observe(lag_s)
        if lag_s >= self.warn_s:
            self._stalled(lag_s, self.blocker if self._blocked_beat == last_beat else None)
        self._handle = loop.call_later(BEAT_S, self._beat, loop)

    def _stalled(self, lag_s: float, blocker: Blocker | None) -> None:
        self.stalls += 1
        self.metrics.loop_stalls.inc()
        logger.warning(
            "event loop was blocked for %.1fs by %s: every job due meanwhile fired late",
            lag_s,
            blocker or "unknown code",
            extra=self._extra(blocker),
        )

    def _watch(self) -> None:
        while not self._stopped.wait(BEAT_S):
            beat_at = self._beat_at
            if time.monotonic() - beat_at < self.warn_s or beat_at == self._blocked_beat:
                continue  # not blocked, or this stall is reported already
            frame = sys._current_frames().get(self._loop_thread)
            blocker = find_blocker(frame, self.find_job)
            del frame
            self.blocker, self._blocked_beat = blocker, beat_at
            logger.warning(
                "event loop blocked for over %.1fs by %s; async handlers must not block (no "
                "timeout can apply meanwhile): use a sync handler, which runs on a thread, or "
                "await asyncio.to_thread(...)",
                self.warn_s,
                blocker,
                extra=self._extra(blocker),
            )

    def _extra(self, blocker: Blocker | None) -> dict[str, Any]:
        extra: dict[str, Any] = {"action": "loop_lag", "node": self.node_id}
        if blocker is not None and blocker.job_id is not None:
            extra.update(entity=blocker.entity, job_id=blocker.job_id)
        return extra
