"""Which MySQL-protocol servers the claim is safe on: a pure verdict over a recorded identity.

The claim relies on ``SELECT ... FOR UPDATE SKIP LOCKED`` taking row locks that other
claimers skip. Some servers speak the protocol and break that promise silently:

- TiDB parses ``SKIP LOCKED`` and ignores it (optimistic transactions): two nodes claim and
  fire the same rows.
- MySQL before 8.0.1 and MariaDB before 10.6 reject ``SKIP LOCKED`` (a syntax error at the
  first fetch); refused at open, where the message can say why.
- MariaDB Galera (and Percona XtraDB Cluster) keeps row locks local to a node: engines writing
  through different nodes claim the same row, and one COMMIT fails certification (error
  1213). So engines write through one node unless the operator says otherwise
  (``store.galera_multi_writer``): each engine records in its nodes row the Galera node it
  writes through, and one that would write through another node than the live engines do is
  refused at join (:func:`multi_writer_refusal`). A URL of one host is accepted with a warning
  that it leaves the engine without failover. A node outside the primary
  component (wsrep_ready OFF) refuses queries anyway, and is refused here with the reason.

The I/O that reads a :class:`ServerIdentity` lives in the adapter (repos/mysql/identity.py);
this module only decides, so every case is unit-tested with recorded identities.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: First versions with FOR UPDATE SKIP LOCKED.
MYSQL_MIN = (8, 0, 1)
MARIADB_MIN = (10, 6, 0)
_VERSION = re.compile(r"^(?:5\.5\.5-)?(\d+)\.(\d+)(?:\.(\d+))?")
_AURORA_BASE = {(8, 0): (8, 0, 23), (5, 7): (5, 7, 12)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerIdentity:
    """What a MySQL-protocol server says about itself (VERSION(), variables, wsrep status).

    The wsrep fields keep their defaults on a server without Galera (MySQL has none of them).
    """

    version: str  #: ``SELECT VERSION()``, e.g. ``10.11.6-MariaDB-0+deb12u1``
    version_comment: str = ""  #: ``@@version_comment``, e.g. ``Debian 12``, ``Percona Server``
    wsrep_on: bool = False
    wsrep_provider: str = "none"  #: the provider library's path, or ``none``
    wsrep_node_name: str = ""
    wsrep_cluster_size: int = 0
    wsrep_cluster_status: str = ""  #: ``Primary`` or ``non-Primary``
    wsrep_local_state_comment: str = ""  #: ``Synced``, ``Donor/Desynced``, ``Joining``, ...
    wsrep_ready: bool = False
    #: The members' client addresses (``127.0.0.1:3311,127.0.0.1:3312,...``).
    wsrep_incoming_addresses: str = ""
    #: Since this node started: its transactions that lost certification to a write through
    #: another node, and its transactions aborted by one (evidence of several writer nodes).
    wsrep_local_cert_failures: int = 0
    wsrep_local_bf_aborts: int = 0

    @property
    def flavor(self) -> str:
        """``TiDB``, ``MariaDB`` or ``MySQL`` (Percona, Aurora and other MySQL forks)."""
        text = f"{self.version} {self.version_comment}".lower()
        if "tidb" in text:
            return "TiDB"
        return "MariaDB" if "mariadb" in text else "MySQL"

    @property
    def galera(self) -> bool:
        """A Galera node: replication on, through a loaded provider."""
        return self.wsrep_on and self.wsrep_provider.strip().lower() not in ("", "none")

    def version_tuple(self) -> tuple[int, int, int] | None:
        """(major, minor, patch) from the version string; None if it does not start with one.
        MariaDB's old ``5.5.5-`` compatibility prefix is skipped."""
        found = _VERSION.match(self.version.strip())
        if found is None:
            return None
        major, minor, patch = found.groups()
        if patch is None and ".mysql_aurora." in self.version:
            # Aurora's engine version (``8.0.mysql_aurora.3.05.2``) names no MySQL patch level;
            # Aurora MySQL 3 is built on MySQL 8.0.23 or later, Aurora 2 on 5.7.12.
            return _AURORA_BASE.get((int(major), int(minor)), (int(major), int(minor), 0))
        return int(major), int(minor), int(patch or 0)

    def describe(self) -> str:
        """One line: ``MariaDB 10.11.6-MariaDB (Debian 12), Galera node n1: 3 members, Synced``."""
        text = f"{self.flavor} {self.version}"
        if self.version_comment:
            text += f" ({self.version_comment})"
        if self.galera:
            text += (
                f", Galera node {self.wsrep_node_name or '?'}: {self.wsrep_cluster_size} members,"
                f" {self.wsrep_local_state_comment or 'state unknown'},"
                f" ready {'ON' if self.wsrep_ready else 'OFF'}"
            )
        return text


def identity_from(variables: Mapping[str, str], status: Mapping[str, str]) -> ServerIdentity:
    """A ServerIdentity from the answers of ``SHOW GLOBAL VARIABLES`` and ``SHOW GLOBAL
    STATUS`` (names lower-cased); a server without Galera answers no wsrep names at all."""
    return ServerIdentity(
        version=variables.get("version", ""),
        version_comment=variables.get("version_comment", ""),
        wsrep_on=variables.get("wsrep_on", "OFF").upper() == "ON",
        wsrep_provider=variables.get("wsrep_provider", "none"),
        wsrep_node_name=variables.get("wsrep_node_name", ""),
        wsrep_cluster_size=_int(status.get("wsrep_cluster_size")),
        wsrep_cluster_status=status.get("wsrep_cluster_status", ""),
        wsrep_local_state_comment=status.get("wsrep_local_state_comment", ""),
        wsrep_ready=status.get("wsrep_ready", "OFF").upper() == "ON",
        wsrep_incoming_addresses=status.get("wsrep_incoming_addresses", ""),
        wsrep_local_cert_failures=_int(status.get("wsrep_local_cert_failures")),
        wsrep_local_bf_aborts=_int(status.get("wsrep_local_bf_aborts")),
    )


def writer_refusal(identity: ServerIdentity) -> str | None:
    """Why a host must not take this process's writes now, or None: a Galera node only while
    ready and Synced (a Donor, Joiner or non-primary node answers, but refuses or lags); a
    server without Galera always may. The failover's probe (repos/mysql/hosts.py) asks."""
    if not identity.wsrep_on:
        return None
    if not identity.wsrep_ready:
        return "wsrep_ready is OFF (not part of a primary component)"
    if identity.wsrep_local_state_comment != "Synced":
        return f"wsrep_local_state_comment is {identity.wsrep_local_state_comment!r}, not 'Synced'"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The guard's decision on one server: refused if any refusal; warnings are logged (and
    printed by ``store check``)."""

    identity: ServerIdentity
    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.refusals

    @property
    def server(self) -> str:
        return self.identity.describe()


def judge(
    identity: ServerIdentity,
    *,
    url_hosts: int,
    galera_multi_writer: bool,
    other_writers: Sequence[GaleraWriter] = (),
) -> Verdict:
    """Accept or refuse `identity` as a store. `url_hosts` counts the hosts the store URL
    names; `galera_multi_writer` is the operator's word that engines write through several
    Galera nodes at once; `other_writers`, the live engines that write through other Galera
    nodes than this one."""
    refusals = _version_refusals(identity)
    warnings: list[str] = []
    if identity.galera:
        refusals += _galera_refusals(identity)
        if not galera_multi_writer:
            elsewhere = multi_writer_refusal(identity.wsrep_node_name, other_writers)
            refusals += [elsewhere] if elsewhere else []
        warnings += _galera_warnings(identity, url_hosts, galera_multi_writer)
    elif galera_multi_writer:
        warnings.append(
            "store.galera_multi_writer is set but the server is no Galera node; it has no effect"
        )
    return Verdict(identity=identity, refusals=tuple(refusals), warnings=tuple(warnings))


@dataclass(frozen=True, slots=True, kw_only=True)
class GaleraWriter:
    """A live engine node and the Galera node (``wsrep_node_name``) it writes through."""

    node_id: str
    epoch: int
    galera_node: str


def multi_writer_refusal(galera_node: str, others: Sequence[GaleraWriter]) -> str | None:
    """Why an engine may not join writing through `galera_node` while the live engine nodes
    `others` write through other Galera nodes (multi-writer, undeclared), or None."""
    if not others:
        return None
    named = ", ".join(f"{w.node_id} (epoch {w.epoch}) through {w.galera_node}" for w in others)
    return (
        f"this engine would write through Galera node {galera_node} while live engine nodes"
        f" write through another: {named}. Engines writing through several Galera nodes claim"
        " the same rows and lose certification as they commit (error 1213): give every engine the"
        " same store hosts in the same order (one writer node), or set"
        " store.galera_multi_writer = true to run multi-writer on purpose"
    )


def _version_refusals(identity: ServerIdentity) -> list[str]:
    flavor = identity.flavor
    if flavor == "TiDB":
        return [
            "TiDB parses the claim's SKIP LOCKED and ignores it: two nodes would claim, and"
            " fire, the same jobs"
        ]
    version = identity.version_tuple()
    if version is None:
        return [
            f"version {identity.version!r} is not one this guard can read, so it cannot tell"
            " whether the server has SKIP LOCKED, which the claim needs"
        ]
    least = MARIADB_MIN if flavor == "MariaDB" else MYSQL_MIN
    if version < least:
        return [
            f"{flavor} {'.'.join(map(str, version))} has no SKIP LOCKED, which the"
            f" claim needs: use {flavor} {'.'.join(map(str, least))} or later"
        ]
    return []


def _galera_refusals(identity: ServerIdentity) -> list[str]:
    primary = identity.wsrep_cluster_status in ("", "Primary")
    if identity.wsrep_ready and primary:
        return []
    return [
        f"Galera node {identity.wsrep_node_name or '?'} is not ready (wsrep_ready"
        f" {'ON' if identity.wsrep_ready else 'OFF'}, cluster status"
        f" {identity.wsrep_cluster_status or '?'}, state {identity.wsrep_local_state_comment or '?'}):"
        " it is outside the primary component and refuses queries; point the store at a synced"
        " node"
    ]


def _galera_warnings(identity: ServerIdentity, url_hosts: int, multi_writer: bool) -> list[str]:
    warnings: list[str] = []
    if identity.wsrep_ready and identity.wsrep_local_state_comment not in ("", "Synced"):
        warnings.append(
            f"Galera node {identity.wsrep_node_name or '?'} is"
            f" {identity.wsrep_local_state_comment}, not Synced: it may lag behind the cluster"
        )
    if multi_writer:
        warnings.append(
            "multi-writer Galera (store.galera_multi_writer): engines write through several"
            " nodes; claims of the same rows collide when they commit (certification conflict, error"
            " 1213) and are retried"
        )
        return warnings
    if identity.wsrep_cluster_size > 1 and url_hosts == 1:
        members = identity.wsrep_incoming_addresses or "HOST1:PORT,HOST2:PORT,..."
        warnings.append(
            f"the store URL names one host of a {identity.wsrep_cluster_size}-node Galera"
            " cluster: the engine cannot fail over when that node stops; name every node,"
            f" e.g. mysql://USER@{members}/DATABASE"
        )
    conflicts = identity.wsrep_local_cert_failures + identity.wsrep_local_bf_aborts
    if conflicts:
        warnings.append(
            f"this Galera node has seen {identity.wsrep_local_cert_failures} certification"
            f" failures and {identity.wsrep_local_bf_aborts} aborts since it started: something"
            " writes the same rows through another node. If that is other engines of this"
            " store, set store.galera_multi_writer = true (and expect conflict retries), or"
            " point them all at the same node"
        )
    return warnings


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
