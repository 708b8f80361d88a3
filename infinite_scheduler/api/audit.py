"""The audit log's writer and reader: one row per change made through the API or the token
commands, with the target's JSON before and after.

The row is written after the change succeeds, on the store's access tables: not in the same
transaction as the change (that is another table's adapter), so a crash between the two loses
the row, never the change.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import orjson

from infinite_scheduler.clock import Clock
from repos.access import MAX_ACTION, MAX_TARGET, AccessStore, AuditRow

#: The request being served, for the rows its changes write (set by the API's middleware).
request_id: ContextVar[str] = ContextVar("infinite_scheduler_request_id", default="")


class Auditor:
    """Writes and pages the audit log of one store."""

    def __init__(self, store: AccessStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> AuditRow:
        row = AuditRow(
            at_ms=self._clock.now_ms(),
            actor=actor,
            action=action[:MAX_ACTION],
            target=target[:MAX_TARGET],
            before_json=None if before is None else _json(before),
            after_json=None if after is None else _json(after),
            request_id=request_id.get(),
        )
        return await self._store.append_audit(row)

    async def page(self, *, before_id: int | None, limit: int) -> list[AuditRow]:
        return await self._store.audit(before_id=before_id, limit=limit)


def _json(value: Mapping[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
