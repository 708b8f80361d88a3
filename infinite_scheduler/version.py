"""The installed version, read in one place: the package exports it, the CLI prints it and every
node writes it into the store's nodes table."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("infinite-scheduler")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"
