"""Shard DDL on the local Galera cluster: the maintenance node makes and drops shards (total
order isolation) while another node claims through its own host; a drop racing with the
claims loses nothing live and lets no row be claimed twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from repos.base import Claimant, ShardPolicy, StoreError
from repos.examples import SMS, SmsEntity
from repos.mysql.driver import error_code
from repos.mysql.live_shards import SHARD_GONE
from repos.registry import make_repository
from repos.shards import Granularity

if TYPE_CHECKING:
    from conftest import Galera

pytestmark = pytest.mark.galera
HOUR_MS = 3_600_000
LIVE = 3_000


async def test_dropping_old_shards_on_one_node_while_another_claims_loses_nothing(
    galera: Galera, galera_database: str
) -> None:
    policy = ShardPolicy(granularity=Granularity.HOUR, retention_ms=2 * HOUR_MS)
    maintainer: Any = make_repository(galera.node_url(1, galera_database), SMS, policy)
    claimer: Any = make_repository(galera.node_url(2, galera_database), SMS, policy)
    await maintainer.open()
    await claimer.open()
    now_ms = int(time.time() * 1000)
    try:
        await maintainer.ensure_shards(now_ms - 5 * HOUR_MS, now_ms + HOUR_MS)
        due = [now_ms - 60_000 + i * 10 for i in range(LIVE)]
        await maintainer.insert(
            [
                SmsEntity(
                    id=i,
                    scheduled_at=datetime.fromtimestamp(at / 1000, UTC),
                    phone="+15550100",
                    message=f"live {i}",
                )
                for i, at in enumerate(due, start=1)
            ],
            now_ms=now_ms,
        )
        claimed: list[int] = []

        async def claim() -> None:
            while len(claimed) < LIVE:
                try:
                    jobs = await claimer.claim_due(
                        Claimant("claimer", 1),
                        now_ms=int(time.time() * 1000),
                        before_ms=now_ms + 1,
                        since_ms=now_ms - 5 * HOUR_MS,  # the window spans the shards dropped
                        limit=100,
                    )
                except StoreError as exc:
                    # A claim tries once more after a drop; this churn makes and drops the same
                    # shards again within that: the fetcher's loop would retry, as here.
                    assert error_code(exc.cause) in SHARD_GONE, exc
                    continue
                claimed.extend(int(j.key) for j in jobs)
                await asyncio.sleep(0)

        async def churn() -> int:
            dropped = 0
            for _ in range(6):
                await maintainer.ensure_shards(now_ms - 5 * HOUR_MS, now_ms - 2 * HOUR_MS)
                dropped += len(await maintainer.drop_shards_before(now_ms - 2 * HOUR_MS))
            return dropped

        async with asyncio.timeout(60):
            _, dropped = await asyncio.gather(claim(), churn())
        assert dropped >= 6
        assert sorted(claimed) == list(range(1, LIVE + 1)), "a live row was lost or claimed twice"
        live = await maintainer.list_shards()
        assert all(s.bounds.end_ms > now_ms - 2 * HOUR_MS for s in live)
    finally:
        await maintainer.close()
        await claimer.close()
