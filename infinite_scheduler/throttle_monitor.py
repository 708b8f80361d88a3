"""Measures the process's own CPU and memory every check interval, and throttles the engine.

No dependency: CPU from os.times() (user + system of every thread, sync handlers' included)
over the monotonic time between two checks; memory from /proc/self/statm (resident pages), or
where there is none, resource's peak RSS (it never falls, so a memory limit there throttles for
good once passed). The readings are exported as gauges whatever the limits; the decision is
infinite_scheduler/throttle.py's, and `apply` hands it to the fetcher. The checks are a timer on
the event loop, started like the loop-lag monitor's beat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from infinite_scheduler.metrics import Metrics
from infinite_scheduler.throttle import RECOVER_SHARE, Limits, Readings, throttle_reason

logger = logging.getLogger(__name__)

STATM = Path("/proc/self/statm")
MB = 1024 * 1024


class ProcessSampler:
    """The process's CPU use since the previous sample, and its resident memory now."""

    def __init__(self) -> None:
        self._cpu_s, self._at_s = _cpu_s(), time.monotonic()

    def sample(self) -> Readings:
        cpu_s, at_s = _cpu_s(), time.monotonic()
        elapsed_s = at_s - self._at_s
        percent = 100.0 * (cpu_s - self._cpu_s) / elapsed_s if elapsed_s > 0 else 0.0
        self._cpu_s, self._at_s = cpu_s, at_s
        return Readings(cpu_percent=percent, memory_mb=rss_bytes() / MB)


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def rss_bytes() -> int:
    """Resident memory now (Linux), else the peak so far (ru_maxrss: KiB, bytes on macOS)."""
    try:
        resident_pages = int(STATM.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class ThrottleMonitor:
    """Checks the readings every `interval_s` on the loop; `start()` inside the loop."""

    def __init__(
        self,
        *,
        limits: Limits,
        interval_s: float,
        metrics: Metrics,
        node_id: str,
        apply: Callable[[str | None], None],
    ) -> None:
        self.limits = limits
        self.interval_s = interval_s
        self.metrics = metrics
        self.node_id = node_id
        self.apply = apply
        #: Why the engine is throttled now; None: it is not.
        self.reason: str | None = None
        self.episodes = 0
        self._sampler = ProcessSampler()
        self._handle: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<ThrottleMonitor reason={self.reason!r} episodes={self.episodes}>"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._sampler = ProcessSampler()
        self._handle = loop.call_later(self.interval_s, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.check()
        self._handle = loop.call_later(self.interval_s, self._tick, loop)

    def check(self) -> Readings:
        """Sample, export, decide; tell the fetcher when the decision changes."""
        readings = self._sampler.sample()
        self.metrics.cpu_percent.set(readings.cpu_percent)
        self.metrics.memory_rss.set(readings.memory_mb * MB)
        reason = throttle_reason(readings, self.limits, throttled=self.reason is not None)
        if (reason is None) != (self.reason is None):
            self._changed(reason)
        self.reason = reason
        return readings

    def _changed(self, reason: str | None) -> None:
        extra = {"action": "throttle", "node": self.node_id}
        if reason is not None:
            self.episodes += 1
            logger.warning(
                "throttled (%s): claiming fewer jobs, less often, until below %.0f%% of the limits",
                reason,
                RECOVER_SHARE * 100,
                extra=extra,
            )
        else:
            logger.info("no longer throttled: claiming at full speed again", extra=extra)
        self.metrics.throttled.set(0 if reason is None else 1)
        self.apply(reason)
