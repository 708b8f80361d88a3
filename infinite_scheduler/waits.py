"""Idle waits that race the stop event, so no loop sleeps through a shutdown; and the backoff of
the loops that retry a failing store call."""

from __future__ import annotations

import asyncio

#: While the store is down, every loop tries it again at least this often: a try costs one
#: refused connect, and each second beyond this after the store is back is a second of
#: lateness for every job due meanwhile.
STORE_RETRY_MAX_S = 1.0


async def wait_any(*events: asyncio.Event, timeout_s: float | None = None) -> None:
    """Return when any of `events` is set, or after timeout_s (None: no timeout)."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class StoreBack:
    """Told by any loop whose store call succeeds after failing; wakes every loop waiting to
    retry its own, so that once one of them finds the store back, all of them move."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def event(self) -> asyncio.Event:
        """Set at the next success after failures (a fresh event for each, unlike one that
        stays set and would turn every later wait into a busy loop)."""
        return self._event

    def announce(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class Backoff:
    """The waits of one loop retrying a failing call: `first_s`, doubling up to `max_s`, and
    `first_s` again after a success. Pure apart from wait()."""

    def __init__(
        self,
        first_s: float = 0.1,
        max_s: float = STORE_RETRY_MAX_S,
        *,
        store_back: StoreBack | None = None,
    ) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.store_back = store_back
        #: The wait after the next failure.
        self.delay_s = first_s
        self.failures = 0  #: since the last success

    def __repr__(self) -> str:
        return f"<Backoff delay_s={self.delay_s:g} failures={self.failures}>"

    def another(self) -> Backoff:
        """A fresh backoff of the same shape, told by and telling the same StoreBack."""
        return Backoff(self.first_s, self.max_s, store_back=self.store_back)

    def failed(self) -> float:
        """Count a failure; return how long to wait before the next try."""
        delay_s = self.delay_s
        self.failures += 1
        self.delay_s = min(self.max_s, delay_s * 2)
        return delay_s

    def succeeded(self) -> None:
        if self.failures and self.store_back is not None:
            self.store_back.announce()
        self.failures = 0
        self.delay_s = self.first_s

    async def wait(self, *events: asyncio.Event) -> None:
        """Count a failure and wait its delay, or less: until one of `events` is set, or
        another loop found the store back."""
        delay_s = self.failed()
        back = () if self.store_back is None else (self.store_back.event,)
        await wait_any(*events, *back, timeout_s=delay_s)
