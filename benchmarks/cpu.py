"""CPU time per job, of the database server and of the client, over one timed phase.

On a machine whose cores the server and the client share, a figure is bounded by the sum of
the two: jobs/s can never exceed cores / (server + client CPU seconds per job). Reading both
next to a rate tells whether the server's work or ours is what a faster figure would need cut.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from benchmarks.store import MYSQL_PORT

#: Process names of a MySQL-compatible server on this machine.
SERVER_NAMES = frozenset({"mariadbd", "mysqld"})


@dataclass(slots=True)
class CpuUse:
    """CPU seconds used during the phase, None where a process could not be read."""

    server_s: float | None = None
    client_s: float | None = None

    def per_job_us(self, n: int) -> dict[str, float | None]:
        """The result-line fields: microseconds of CPU per job, server and client."""

        def us(seconds: float | None) -> float | None:
            return round(seconds * 1e6 / n, 1) if seconds is not None and n else None

        return {
            "server_cpu_us_per_job": us(self.server_s),
            "client_cpu_us_per_job": us(self.client_s),
        }


def server_process() -> psutil.Process | None:
    """The local MariaDB/MySQL server the benchmarks talk to (the one listening on their port;
    several may run), if it runs on this machine and can be read."""
    servers = [p for p in psutil.process_iter(["name"]) if p.info["name"] in SERVER_NAMES]
    for proc in servers:
        try:
            if any(c.laddr.port == MYSQL_PORT for c in proc.net_connections("tcp")):
                return proc
        except psutil.Error:
            continue
    return servers[0] if len(servers) == 1 else None


@contextmanager
def cpu_use(
    client_pid: int | Sequence[int] | None = None, *, server: bool = True
) -> Iterator[CpuUse]:
    """Measure the server's CPU and the client's (this process unless `client_pid`; several
    processes' summed, for a cluster) over the `with` block; the yielded CpuUse is filled in when
    the block ends. `server=False` for an embedded store (SQLite): its work is the client's, and
    a MariaDB nearby is not involved."""
    server_proc = server_process() if server else None
    pids = [client_pid] if client_pid is None or isinstance(client_pid, int) else client_pid
    clients = [psutil.Process(pid) for pid in pids]
    use = CpuUse()
    before_server = _cpu_s(server_proc)
    before_clients = [_cpu_s(c) for c in clients]
    yield use
    after_server, after_clients = _cpu_s(server_proc), [_cpu_s(c) for c in clients]
    if before_server is not None and after_server is not None:
        use.server_s = after_server - before_server
    pairs = zip(before_clients, after_clients, strict=True)
    spent = [b - a for a, b in pairs if a is not None and b is not None]
    if len(spent) == len(clients):
        use.client_s = sum(spent)


def _cpu_s(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)
