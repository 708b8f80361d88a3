"""What a store tells its owner about itself: conflicts retried, writer hosts switched.

The adapters count these where they happen, deep in a driver call whose caller only sees the
result; the engine counts them in its metrics. Repos must not import the engine, so the engine
hands an object of this shape to the adapter it builds (repos/registry.py, ``events=``).
"""

from __future__ import annotations

from typing import Protocol


class StoreEvents(Protocol):
    """Called from the event loop, synchronously: must not block or raise."""

    def conflict(self, operation: str) -> None:
        """A statement of `operation` lost a deadlock, a lock wait or a Galera certification
        (error 1213 at COMMIT) and is run again."""

    def failover(self, from_address: str, to_address: str, reason: str) -> None:
        """The store's writes moved from one host of a multi-host URL to another."""

    def writer(self, address: str) -> None:
        """The store writes through `address` (a multi-host URL's host), from now on."""


class NoEvents:
    """The events of a store nobody listens to (tools, tests, the client)."""

    def conflict(self, operation: str) -> None:
        pass

    def failover(self, from_address: str, to_address: str, reason: str) -> None:
        pass

    def writer(self, address: str) -> None:
        pass


NO_EVENTS = NoEvents()
