"""What `make run` shows: example handlers, a producer scheduling jobs a few seconds ahead, a few
recurring schedules (cron, fixed rate, fixed delay), and a one-line live status refreshed in
place."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import sys
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from infinite_scheduler.config import LOCALHOST, SchedulerConfig
from infinite_scheduler.engine import InfiniteScheduler
from infinite_scheduler.errors import ScheduleExists
from infinite_scheduler.jobs import JobContext
from infinite_scheduler.schedules.triggers import CronTrigger, DelayTrigger, RateTrigger, Trigger
from repos.examples import (
    NOTIFICATIONS,
    ORDERS,
    SMS,
    NotificationEntity,
    OrderEntity,
    SmsEntity,
)

logger = logging.getLogger(__name__)
#: Jobs the demo producer schedules per second, spread over the three example types.
DEMO_RATE = 200
#: A small share of demo notifications fail once, to show retries with backoff.
FLAKY_SHARE = 0.02


def demo_config(config: SchedulerConfig) -> SchedulerConfig:
    """The settings `run --demo` runs with: its store is created on first use, so that a fresh
    clone runs without a `store init` first; its API, on 127.0.0.1, answers without a token
    until one is made (api.allow_open)."""
    store = config.store.model_copy(update={"create_missing": True})
    api = config.api
    if api.host == LOCALHOST:
        api = api.model_copy(update={"allow_open": True})
    return config.model_copy(update={"store": store, "api": api})


class LatenessWindow:
    """The last few thousand fire latenesses, for a live p99."""

    def __init__(self, size: int = 5000) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ctx: JobContext[Any]) -> None:
        self._samples.append((ctx.fired_at - ctx.due_at).total_seconds() * 1000)

    def p99_ms(self) -> float:
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def register_examples(engine: InfiniteScheduler, lateness: LatenessWindow) -> None:
    """Handlers for the three example entity types (they only log and measure)."""

    async def send_sms(ctx: JobContext[SmsEntity]) -> None:
        lateness.add(ctx)
        logger.debug("sms %s to %s", ctx.job_id, ctx.entity.phone, extra=ctx.log_context())

    async def expire_order(ctx: JobContext[OrderEntity]) -> None:
        lateness.add(ctx)
        logger.debug("order %s expired", ctx.job_id, extra=ctx.log_context())

    async def push_notification(ctx: JobContext[NotificationEntity]) -> None:
        lateness.add(ctx)
        if ctx.attempt == 1 and ctx.entity.data.get("flaky"):
            raise ConnectionError("push gateway busy (demo: fails once, then retries)")

    engine.register(SMS, send_sms)
    engine.register(ORDERS, expire_order)
    engine.register(NOTIFICATIONS, push_notification)


#: The demo's recurring schedules: name, entity type, trigger, payload template.
DEMO_SCHEDULES: tuple[tuple[str, Any, Trigger, dict[str, Any]], ...] = (
    ("demo-sms-every-10s", SMS, RateTrigger(every_s=10), {"phone": "+15550100", "message": "tick"}),
    (
        "demo-orders-every-minute",
        ORDERS,
        CronTrigger(cron="* * * * *", zone="Europe/Berlin"),
        {"customer_id": 1, "amount_cents": 500},
    ),
    (
        "demo-push-15s-after-each",
        NOTIFICATIONS,
        DelayTrigger(delay_s=15),
        {"user_id": 1, "title": "still here"},
    ),
)


async def demo_schedules(engine: InfiniteScheduler) -> None:
    """Create the demo's schedules unless a previous run did (the demo store is kept)."""
    for name, spec, trigger, template in DEMO_SCHEDULES:
        try:
            await engine.schedules.create(name, spec, trigger, template)
        except ScheduleExists:
            pass


async def produce(engine: InfiniteScheduler, stop: asyncio.Event, rate: int = DEMO_RATE) -> None:
    """Create the demo's schedules, then schedule example jobs 1-5 s ahead at a steady rate
    until stop is set."""
    await demo_schedules(engine)
    ids = itertools.count(time.time_ns() // 1000)
    per_tick = max(3, rate // 10)
    while not stop.is_set():
        now = datetime.now(UTC)
        jobs: list[object] = []
        for _ in range(per_tick // 3):
            at = now + timedelta(milliseconds=random.randint(1000, 5000))
            n = next(ids)
            jobs.append(
                SmsEntity(id=n, scheduled_at=at, phone="+15550100", message=f"code {n % 10**6:06d}")
            )
            jobs.append(
                OrderEntity(
                    order_id=f"ord-{n}", expires_at=at, customer_id=n % 997, amount_cents=1999
                )
            )
            flaky = random.random() < FLAKY_SHARE
            jobs.append(
                NotificationEntity(
                    id=n, deliver_at=at, user_id=n % 7919, title="hello", data={"flaky": flaky}
                )
            )
        await engine.schedule(jobs)
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.1)
        except TimeoutError:
            pass


async def show_status(
    engine: InfiniteScheduler,
    lateness: LatenessWindow,
    stop: asyncio.Event,
    out: TextIO = sys.stdout,
) -> None:
    """Refresh one status line in place twice a second."""
    last_fired, last_t = engine.parts.dispatcher.fired, time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        except TimeoutError:
            pass
        d, now = engine.parts.dispatcher, time.monotonic()
        rate = (d.fired - last_fired) / max(1e-9, now - last_t)
        last_fired, last_t = d.fired, now
        out.write(
            f"\rheld {engine.held():>6}  fired {d.fired:>9}  {rate:>7.0f}/s  "
            f"p99 late {lateness.p99_ms():>6.1f} ms  retried {d.retried:>5}  failed {d.failed:>4} "
        )
        out.flush()
    out.write("\n")
