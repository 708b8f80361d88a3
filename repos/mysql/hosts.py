"""Which host of a multi-host URL the store writes through: one writer per URL per process.

Galera runs best single-writer: two nodes that take writes for the same rows fail one of the
two COMMITs (certification conflict), and row locks (SKIP LOCKED) are local to a node. So every
pool of a process (the repositories' and the membership's) writes through the same host, the
URL's first that answers, and all move together, to the next live and synced host in URL
order, when one of them finds it gone. The selector is shared by URL within the event loop;
a plain single-host URL has none (the executor's hot path then never looks at it).

Staying put after a switch is deliberate: a node that comes back is not moved back to (that
would be a second switch, with its own in-doubt claims, for no gain).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from repos.events import StoreEvents
from repos.urls import HostPort, MysqlUrl

logger = logging.getLogger(__name__)

#: The host's verdict from a probe: None when it may take writes, else why not.
Probe = Callable[[HostPort], Awaitable[str | None]]
#: Waits between probing rounds that found no host: doubled from the first up to the last.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0


def candidates(hosts: tuple[HostPort, ...], failed: HostPort) -> list[HostPort]:
    """The hosts to try after `failed`, in URL order from the next one round, `failed` last
    (it may have been a blip)."""
    at = hosts.index(failed)
    return [*hosts[at + 1 :], *hosts[:at], failed]


@dataclass(slots=True)
class _Backoff:
    delay_s: float = 0.0
    until: float = 0.0  # monotonic: no probing round before this

    def failed(self, now: float) -> None:
        self.delay_s = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, self.delay_s * 2))
        self.until = now + self.delay_s

    def succeeded(self) -> None:
        self.delay_s = self.until = 0.0


class HostSelector:
    """The writer host of one multi-host URL, and the one place it changes."""

    def __init__(
        self, hosts: tuple[HostPort, ...], *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.hosts = hosts
        self._monotonic = monotonic
        self.writer = hosts[0]
        #: One more at every switch: an executor whose pool is older makes a new one.
        self.generation = 0
        self.switches = 0
        self._lock = asyncio.Lock()
        self._backoff = _Backoff()
        self._listeners: dict[int, StoreEvents] = {}

    def __repr__(self) -> str:
        return f"<HostSelector writer={self.writer.address} switches={self.switches}>"

    def listen(self, events: StoreEvents) -> None:
        self._listeners[id(events)] = events
        events.writer(self.writer.address)

    def unlisten(self, events: StoreEvents) -> None:
        self._listeners.pop(id(events), None)

    async def failover(self, failed: HostPort, reason: str, probe: Probe) -> HostPort:
        """Move off `failed` (which `reason` says is gone) to the next host that answers and
        is synced, unless another pool moved already; return the writer after.

        One probing round at a time; a round that found no host keeps the writer and holds
        the next one off for a growing delay, so the loops' own retries do not hammer the
        servers; the caller's call fails as it would have anyway.
        """
        async with self._lock:
            if self.writer != failed or self._monotonic() < self._backoff.until:
                return self.writer
            refused: list[str] = [f"{failed.address}: {reason}"]
            for host in candidates(self.hosts, failed):
                why_not = await probe(host)
                if why_not is None:
                    self._backoff.succeeded()
                    if host != failed:
                        self._switch(failed, host, reason)
                    return self.writer
                if host != failed:
                    refused.append(f"{host.address}: {why_not}")
            self._backoff.failed(self._monotonic())
            logger.warning(
                "no host of %s takes writes (%s); trying again in %.1fs",
                ",".join(h.address for h in self.hosts),
                "; ".join(refused),
                self._backoff.delay_s,
                extra={"action": "failover", "host": failed.address},
            )
            return self.writer

    def _switch(self, failed: HostPort, host: HostPort, reason: str) -> None:
        self.writer = host
        self.generation += 1
        self.switches += 1
        logger.warning(
            "store writer moves from %s to %s: %s",
            failed.address,
            host.address,
            reason,
            extra={"action": "failover", "host": host.address, "from": failed.address},
        )
        for events in list(self._listeners.values()):
            events.failover(failed.address, host.address, reason)
            events.writer(host.address)


_SELECTORS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[object, ...], HostSelector]
] = weakref.WeakKeyDictionary()


def selector_for(url: MysqlUrl) -> HostSelector:
    """The running loop's selector for `url` (its hosts, user and database): one per store,
    whichever pool asks. Called inside the running loop (from an executor's open)."""
    loop = asyncio.get_running_loop()
    key = (url.hosts, url.user, url.database)
    by_url = _SELECTORS.setdefault(loop, {})
    if key not in by_url:
        by_url[key] = HostSelector(url.hosts)
    return by_url[key]
