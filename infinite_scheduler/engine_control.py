"""Engine pause and resume for every node of a store: the class behind ``engine.engine_control``
and ``SchedulerClient.engine_control`` (the HTTP API and ``infinite-scheduler engine`` call it).

A pause is a stored fact, as a category's is (one row, repos/schedules.py ENGINE_PAUSE): every
node reads it at its start and at each heartbeat (infinite_scheduler/control_view.py) and then
claims nothing: no fetch, no near poll, and jobs it stores for itself go to the store PENDING.
What a node holds already drains: those jobs fire at their times (at most lookahead_s ahead),
their outcomes are written, and the node stays up (heartbeat, /health, the API; /ready says
paused). Resume: the next fetch claims again, overdue jobs first, by their misfire policy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from infinite_scheduler.clock import Clock
from repos.schedules import ENGINE_PAUSE, ScheduleStore

logger = logging.getLogger(__name__)


class EngineControl:
    """Pause, resume and read the engine pause of a store; both changes are idempotent."""

    def __init__(
        self,
        store: ScheduleStore,
        *,
        clock: Clock,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`changed`: run after a change went through (an engine applies it to its own node
        at once instead of at its next heartbeat)."""
        self._store = store
        self._clock = clock
        self._changed = changed

    async def pause(self) -> None:
        """Every node stops claiming and drains what it holds, within about a heartbeat."""
        await self._set(True)

    async def resume(self) -> None:
        """Every node claims again, within about a heartbeat."""
        await self._set(False)

    async def paused_since(self) -> int | None:
        """When the engine was paused (epoch ms), or None: it runs."""
        return (await self._store.paused_categories()).get(ENGINE_PAUSE)

    async def _set(self, paused: bool) -> None:
        await self._store.set_category_paused(ENGINE_PAUSE, paused, now_ms=self._clock.now_ms())
        logger.info(
            "engine %s on every node",
            "paused" if paused else "resumed",
            extra={"action": "engine-pause" if paused else "engine-resume"},
        )
        if self._changed is not None:
            await self._changed()
