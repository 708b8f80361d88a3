"""This node's view of the store's job-control facts: the categories paused (for every node,
infinite_scheduler/categories.py), the engine pause (infinite_scheduler/engine_control.py: the
fetcher claims nothing) and the blockouts (infinite_scheduler/fire_blockouts.py).

Read at the start, before the first fetch, then every heartbeat interval: a pause or a blockout
made through any node or client reaches every node within about a heartbeat. Two small reads
per interval, off the fire path; a failed read keeps the view it had and is tried again at the
next interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from infinite_scheduler.dispatch import Dispatcher
from infinite_scheduler.fetcher import Fetcher
from infinite_scheduler.fire_blockouts import BlockoutGate
from infinite_scheduler.schedules.blockouts import Blockout
from infinite_scheduler.waits import wait_any
from repos.base import StoreError, category_code
from repos.schedules import ENGINE_PAUSE, InvalidSchedule, ScheduleStore

logger = logging.getLogger(__name__)


class ControlView:
    """Applies the stored pauses to the dispatcher and the blockouts to the fire path."""

    def __init__(
        self,
        store: ScheduleStore,
        *,
        dispatcher: Dispatcher,
        blockouts: BlockoutGate,
        categories: Collection[str],
        interval_s: float,
        node_id: str,
        fetcher: Fetcher | None = None,
    ) -> None:
        """`categories`: those the config defines (the only ones a node limits or pauses)."""
        self._store = store
        self._dispatcher = dispatcher
        self._blockouts = blockouts
        self._categories = tuple(categories)
        self._interval_s = interval_s
        self._node_id = node_id
        self._fetcher = fetcher
        #: The categories this view has paused on the dispatcher.
        self._paused: set[str] = set()

    async def refresh(self) -> None:
        """Read both facts and apply them; StoreError leaves the view as it was."""
        paused = await self._store.paused_categories()
        rows = await self._store.blockouts()
        self._apply_pauses(paused)
        self._apply_engine_pause(ENGINE_PAUSE in paused)
        blockouts = []
        for row in rows:
            try:
                blockouts.append(Blockout.of(row))
            except InvalidSchedule as exc:  # written by hand, or by a newer version
                logger.warning(
                    "blockout %r ignored: %s",
                    row.name,
                    exc,
                    extra={"action": "blockout", "node": self._node_id},
                )
        self._blockouts.set(blockouts)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every interval until `stop` is set."""
        while not stop.is_set():
            await wait_any(stop, timeout_s=self._interval_s)
            if stop.is_set():
                return
            try:
                await self.refresh()
            except StoreError as exc:
                logger.warning(
                    "could not read paused categories and blockouts, keeping the last: %s",
                    exc,
                    extra={"action": "control", "node": self._node_id},
                )

    def _apply_engine_pause(self, paused: bool) -> None:
        if self._fetcher is None or self._fetcher.paused == paused:
            return
        self._fetcher.paused = paused
        if not paused:
            self._fetcher.wake()  # claim at once, not at the next round
        logger.warning(
            "engine %s",
            "paused here: claiming nothing, draining what is held" if paused else "resumed here",
            extra={"action": "engine-pause" if paused else "engine-resume", "node": self._node_id},
        )

    def _apply_pauses(self, paused: Collection[str]) -> None:
        for name in self._categories:
            now_paused = name in paused
            if now_paused == (name in self._paused):
                continue
            self._dispatcher.set_category_paused(category_code(name), now_paused)
            (self._paused.add if now_paused else self._paused.discard)(name)
            logger.info(
                "category %s %s here",
                name,
                "paused" if now_paused else "resumed",
                extra={
                    "action": "pause" if now_paused else "resume",
                    "category": name,
                    "node": self._node_id,
                },
            )
