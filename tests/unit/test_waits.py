"""The backoff of the loops that retry the store: how long each wait is, and the wake-up of
every waiting loop once one of them finds the store back."""

from __future__ import annotations

import asyncio
import time

from infinite_scheduler.waits import STORE_RETRY_MAX_S, Backoff, StoreBack


def test_waits_double_up_to_about_a_second_and_start_over_after_a_success() -> None:
    backoff = Backoff()
    assert [backoff.failed() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert STORE_RETRY_MAX_S == 1.0 and backoff.failures == 7
    backoff.succeeded()
    assert (backoff.failed(), backoff.failures) == (0.1, 1)


async def test_a_success_after_failures_wakes_every_loop_waiting_to_retry() -> None:
    back = StoreBack()
    waiting, finder = Backoff(store_back=back), Backoff(store_back=back)
    for _ in range(5):
        waiting.failed()  # a whole second to wait now
    finder.failed()
    task = asyncio.create_task(waiting.wait(asyncio.Event()))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    finder.succeeded()
    async with asyncio.timeout(0.5):
        await task
    assert time.monotonic() - started < 0.2


async def test_a_success_without_failures_wakes_nobody() -> None:
    back = StoreBack()
    waiting, other = Backoff(0.2, store_back=back), Backoff(store_back=back)
    task = asyncio.create_task(waiting.wait(asyncio.Event()))
    await asyncio.sleep(0.01)
    other.succeeded()  # the usual round: nothing was failing, so nothing to announce
    await asyncio.sleep(0.05)
    assert not task.done()
    async with asyncio.timeout(1):
        await task


async def test_a_wait_ends_at_once_when_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(0.05):
        await Backoff(10.0, 10.0).wait(stop)
