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


@dataclass(frozen=True, slots=True)
class HostPort:
    """One server of a MySQL URL."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MysqlUrl:
    """``mysql://user:password@host:port/database``; the password never shows in repr.

    A Galera cluster is named by several hosts, ``mysql://user@h1:3306,h2:3306/database``: the
    store writes through one at a time, the first that answers, and moves to the next when
    that one fails (repos/mysql/hosts.py). `host` and `port` are the first; `hosts` all of
    them in order (just the first for a plain URL).
    """

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)
    hosts: tuple[HostPort, ...] = ()

    def __post_init__(self) -> None:
        if not self.hosts:
            object.__setattr__(self, "hosts", (HostPort(self.host, self.port),))

    @property
    def address(self) -> str:
        """``host:port``, or the hosts of a multi-host URL joined by commas."""
        return ",".join(h.address for h in self.hosts)


EXPECTED = (
    "expected sqlite:///PATH or mysql://USER[:PASSWORD]@HOST[:PORT][,HOST[:PORT]...]/DATABASE"
)


def parse_store_url(url: str) -> SqliteUrl | MysqlUrl:
    """Parse a store URL; raise ValueError saying what is wrong and what is expected."""
    expected = EXPECTED
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite://") :]
        if not path.startswith("/") or len(path) < 2:
            raise ValueError(f"sqlite URL has no path; {expected}")
        return SqliteUrl(path=path[1:])
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"unknown scheme {parts.scheme!r}; {expected}")
    credentials, _, host_list = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":")
    database = parts.path.lstrip("/")
    if not host_list or not user or not database:
        raise ValueError(f"host, user and database are required; {expected}")
    hosts = _parse_hosts(host_list)
    check_identifier("database name", database)
    return MysqlUrl(
        host=hosts[0].host,
        port=hosts[0].port,
        user=unquote(user),
        password=unquote(password),
        database=database,
        hosts=hosts,
    )


def _parse_hosts(host_list: str) -> tuple[HostPort, ...]:
    """``h1:3306,h2,h3:3307`` as HostPorts (port 3306 unless given); each host once."""
    hosts: list[HostPort] = []
    for n, item in enumerate(host_list.split(","), start=1):
        which = f"host {n} of {host_list!r}" if "," in host_list else f"host {item!r}"
        parts = urlsplit(f"//{item}")
        try:
            port = parts.port or 3306
        except ValueError:
            raise ValueError(f"{which}: port is not a number; {EXPECTED}") from None
        if not parts.hostname:
            raise ValueError(f"{which}: host name is empty; {EXPECTED}")
        host = HostPort(parts.hostname, port)
        if host in hosts:
            raise ValueError(f"{which}: {host.address} is listed twice; {EXPECTED}")
        hosts.append(host)
    return tuple(hosts)
