"""infinite-scheduler: an asyncio engine that fires millions of stored jobs at their time.

Jobs live in date-sharded MySQL/MariaDB (or SQLite) tables; only the next lookahead window is
held in memory. Start with ``infinite-scheduler run --config config.toml``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("infinite-scheduler")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"
