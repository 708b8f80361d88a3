"""Store URLs, and the names of the MySQL drivers and layouts: what a setting may say.

A leaf module (it imports only repos.shards, for the database name's check), so that the
adapters, the registry that picks them and the config can all import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from repos.shards import check_identifier

#: The MySQL layouts by name (their classes: repos.mysql.layouts).
LayoutName = Literal["multi-table", "partitioned"]
Driver = Literal["asyncmy", "aiomysql"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SqliteUrl:
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""

    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MysqlUrl:
    """``mysql://user:password@host:port/database``; the password never shows in repr."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_store_url(url: str) -> SqliteUrl | MysqlUrl:
    """Parse a store URL; raise ValueError saying what is wrong and what is expected."""
    expected = "expected sqlite:///PATH or mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite://") :]
        if not path.startswith("/") or len(path) < 2:
            raise ValueError(f"sqlite URL has no path; {expected}")
        return SqliteUrl(path=path[1:])
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"unknown scheme {parts.scheme!r}; {expected}")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError(f"port is not a number; {expected}") from None
    database = parts.path.lstrip("/")
    if not parts.hostname or not parts.username or not database:
        raise ValueError(f"host, user and database are required; {expected}")
    check_identifier("database name", database)
    return MysqlUrl(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
    )
