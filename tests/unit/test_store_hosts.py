"""The writer host of a multi-host URL (repos/mysql/hosts.py): which host is tried next, which
server may take writes, and one switch however many pools see the writer go."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from repos.mysql import hosts as hosts_module
from repos.mysql.hosts import HostSelector, candidates, selector_for
from repos.server_guard import identity_from, writer_refusal
from repos.urls import HostPort, MysqlUrl, parse_store_url

if TYPE_CHECKING:
    from conftest import RecordedEvents

H1, H2, H3 = HostPort("g", 3311), HostPort("g", 3312), HostPort("g", 3313)
SYNCED = {"wsrep_on": "ON", "wsrep_ready": "ON", "wsrep_local_state_comment": "Synced"}


class Servers:
    """The probe's answers by host: None for a host that takes writes, else why not."""

    def __init__(self, **down: str) -> None:
        self.down = {HostPort("g", int(port[1:])): why for port, why in down.items()}
        self.probed: list[HostPort] = []

    async def probe(self, host: HostPort) -> str | None:
        self.probed.append(host)
        await asyncio.sleep(0)
        return self.down.get(host)


def test_candidates_go_round_from_the_next_host_and_end_with_the_failed_one() -> None:
    assert candidates((H1, H2, H3), H1) == [H2, H3, H1]
    assert candidates((H1, H2, H3), H2) == [H3, H1, H2]
    assert candidates((H1, H2, H3), H3) == [H1, H2, H3]


@pytest.mark.parametrize(
    ("variables", "verdict"),
    [
        ({}, None),  # MySQL: no wsrep at all
        ({"wsrep_on": "OFF", "wsrep_ready": "OFF"}, None),  # plain MariaDB
        (SYNCED, None),
        ({**SYNCED, "wsrep_ready": "OFF"}, "wsrep_ready is OFF"),
        ({**SYNCED, "wsrep_local_state_comment": "Donor/Desynced"}, "'Donor/Desynced'"),
        ({**SYNCED, "wsrep_local_state_comment": "Joining: receiving State Transfer"}, "Joining"),
    ],
)
def test_writer_refusal_takes_only_ready_synced_galera_nodes(
    variables: dict[str, str], verdict: str | None
) -> None:
    """The failover's probe reads variables and status as the guard does, and asks this."""
    found = writer_refusal(identity_from(variables, variables))
    if verdict is None:
        assert found is None
    else:
        assert found is not None and verdict in found


async def test_failover_moves_to_the_next_host_that_takes_writes_and_tells_listeners(
    recorded_events: Callable[[], RecordedEvents],
) -> None:
    selector, events = HostSelector((H1, H2, H3)), recorded_events()
    selector.listen(events)
    servers = Servers(p3311="connection refused", p3312="wsrep_ready is OFF")
    assert await selector.failover(H1, "[2013] Lost connection", servers.probe) == H3
    assert servers.probed == [H2, H3]
    assert (selector.writer, selector.generation, selector.switches) == (H3, 1, 1)
    assert events.failovers == [("g:3311", "g:3313", "[2013] Lost connection")]
    assert events.writers == ["g:3311", "g:3313"]  # on listen, then on the switch


async def test_pools_that_see_the_same_writer_go_make_one_switch() -> None:
    selector, servers = HostSelector((H1, H2, H3)), Servers(p3311="gone")
    moved = await asyncio.gather(*(selector.failover(H1, "gone", servers.probe) for _ in range(5)))
    assert moved == [H2] * 5
    assert selector.switches == 1 and servers.probed == [H2]
    # A pool still on H1 that fails later follows H2 without a probe of its own.
    assert await selector.failover(H1, "gone", servers.probe) == H2
    assert servers.probed == [H2]


async def test_no_host_answering_keeps_the_writer_and_backs_off() -> None:
    now = [100.0]
    selector = HostSelector((H1, H2), monotonic=lambda: now[0])
    servers = Servers(p3311="refused", p3312="refused")
    assert await selector.failover(H1, "refused", servers.probe) == H1
    assert servers.probed == [H2, H1] and selector.switches == 0
    assert await selector.failover(H1, "refused", servers.probe) == H1
    assert servers.probed == [H2, H1], "probed again within the backoff"
    now[0] += hosts_module.BACKOFF_FIRST_S
    servers.down.pop(H2)
    assert await selector.failover(H1, "refused", servers.probe) == H2
    assert servers.probed == [H2, H1, H2]


async def test_a_writer_that_answers_its_probe_stays_the_writer(
    recorded_events: Callable[[], RecordedEvents],
) -> None:
    selector, events = HostSelector((H1, H2)), recorded_events()
    selector.listen(events)
    servers = Servers(p3312="refused")  # H1's blip is over by the probe
    assert await selector.failover(H1, "blip", servers.probe) == H1
    assert servers.probed == [H2, H1] and selector.generation == 0 and not events.failovers


async def test_one_selector_per_store_in_the_running_loop() -> None:
    url = parse_store_url("mysql://root@g:3311,g:3312/jobs")
    assert isinstance(url, MysqlUrl)
    other = parse_store_url("mysql://root@g:3311,g:3312/other")
    assert isinstance(other, MysqlUrl)
    assert selector_for(url) is selector_for(url)
    assert selector_for(url) is not selector_for(other)
