"""Structured logs: one JSON object per line, carrying job id, entity, shard, node, epoch, lease."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

#: Extra fields a record may carry (set through `extra=` by the engine's loops).
CONTEXT_FIELDS = (
    "action",
    "job_id",
    "entity",
    "shard",
    "shard_at_ms",
    "node",
    "epoch",
    "lease",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str) -> None:
    """Send JSON lines to stderr at `level` (UTC timestamps)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
