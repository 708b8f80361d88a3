"""Category pause and resume for every node of a store: the one class behind
``engine.categories`` and ``SchedulerClient.categories`` (a management API calls the same).

A pause is a stored fact (the store's ``category_pauses`` table, repos/schedules.py), not a
node's memory: every engine node on the store reads the paused categories at each heartbeat
(infinite_scheduler/control_view.py) and at its start, and starts no job of one of them until it
is resumed. Their jobs wait, claimed or in the store, neither dropped nor failed; those running
when the pause arrives finish.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

from infinite_scheduler.clock import Clock
from infinite_scheduler.errors import UnknownCategory
from repos.schedules import ENGINE_PAUSE, ScheduleStore

logger = logging.getLogger(__name__)


class Categories:
    """Pause, resume and list paused categories on a store. A name the config's
    ``[categories.NAME]`` does not define raises UnknownCategory, and nothing is stored."""

    def __init__(
        self,
        store: ScheduleStore,
        known: Collection[str],
        *,
        clock: Clock,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`changed`: run after a pause or resume went through (an engine applies it to its
        own node at once instead of at its next heartbeat)."""
        self._store = store
        self._known = frozenset(known)
        self._clock = clock
        self._changed = changed

    async def pause(self, name: str) -> None:
        """Start no job of this category on any node until resume(); idempotent."""
        await self._set(name, True)

    async def resume(self, name: str) -> None:
        """Let the category's jobs start again, within its limits; idempotent."""
        await self._set(name, False)

    @property
    def configured(self) -> list[str]:
        """The categories the config defines, by name."""
        return sorted(self._known)

    async def paused(self) -> dict[str, int]:
        """The categories paused now, with when each was paused (epoch ms), by name."""
        paused = await self._store.paused_categories()
        paused.pop(ENGINE_PAUSE, None)
        return paused

    async def _set(self, name: str, paused: bool) -> None:
        if name not in self._known:
            raise UnknownCategory(name, sorted(self._known))
        await self._store.set_category_paused(name, paused, now_ms=self._clock.now_ms())
        logger.info(
            "category %s %s on every node",
            name,
            "paused" if paused else "resumed",
            extra={"action": "pause" if paused else "resume", "category": name},
        )
        if self._changed is not None:
            await self._changed()
