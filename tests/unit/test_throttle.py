"""The throttle's decision (infinite_scheduler/throttle.py): both limits, the recovery band,
and the process sampler that feeds it (infinite_scheduler/throttle_monitor.py)."""

from __future__ import annotations

import time

import pytest

from infinite_scheduler.throttle import RECOVER_SHARE, Limits, Readings, throttle_reason
from infinite_scheduler.throttle_monitor import ProcessSampler, rss_bytes

CPU_50 = Limits(cpu_percent=50)
MEMORY_100 = Limits(memory_mb=100)
BOTH = Limits(cpu_percent=50, memory_mb=100)


def read(cpu: float = 0.0, memory: float = 0.0) -> Readings:
    return Readings(cpu_percent=cpu, memory_mb=memory)


def test_no_limits_never_throttle() -> None:
    assert not Limits().any
    assert throttle_reason(read(cpu=900, memory=10**6), Limits(), throttled=False) is None
    assert throttle_reason(read(cpu=900, memory=10**6), Limits(), throttled=True) is None


@pytest.mark.parametrize(
    ("limits", "under", "over", "says"),
    [
        (CPU_50, read(cpu=50), read(cpu=51), "cpu 51% of one core, limit 50%"),
        (MEMORY_100, read(memory=100), read(memory=101), "memory 101 MB, limit 100 MB"),
    ],
    ids=["cpu", "memory"],
)
def test_each_limit_throttles_once_passed_and_says_which(
    limits: Limits, under: Readings, over: Readings, says: str
) -> None:
    assert throttle_reason(under, limits, throttled=False) is None  # at the limit: not past it
    assert throttle_reason(over, limits, throttled=False) == says


def test_a_limit_of_zero_is_none_while_the_other_applies() -> None:
    assert throttle_reason(read(cpu=10_000, memory=50), MEMORY_100, throttled=False) is None
    assert throttle_reason(read(cpu=10, memory=10**6), CPU_50, throttled=False) is None


def test_both_limits_passed_name_both() -> None:
    reason = throttle_reason(read(cpu=80, memory=150), BOTH, throttled=False)
    assert reason == "cpu 80% of one core, limit 50%; memory 150 MB, limit 100 MB"


def test_throttled_stays_so_until_every_reading_is_below_the_recovery_share() -> None:
    """Hysteresis: a reading between RECOVER_SHARE of the limit and the limit neither starts
    a throttle nor ends one, so a load hovering at the limit does not flap."""
    band = read(cpu=50 * RECOVER_SHARE + 1)  # 41%: under the limit, over the band
    assert throttle_reason(band, CPU_50, throttled=False) is None
    assert throttle_reason(band, CPU_50, throttled=True) == "cpu 41% of one core, limit 50%"
    at_share = read(cpu=50 * RECOVER_SHARE)
    assert throttle_reason(at_share, CPU_50, throttled=True) is not None
    below = read(cpu=50 * RECOVER_SHARE - 1)
    assert throttle_reason(below, CPU_50, throttled=True) is None


def test_throttled_by_one_limit_stays_so_while_the_other_is_in_its_band() -> None:
    readings = read(cpu=10, memory=90)  # cpu recovered, memory still over 80 MB
    assert throttle_reason(readings, BOTH, throttled=True) == "memory 90 MB, limit 100 MB"
    assert throttle_reason(read(cpu=10, memory=70), BOTH, throttled=True) is None


def test_a_sequence_of_readings_turns_the_throttle_on_once_and_off_once() -> None:
    cpu = [10, 45, 55, 45, 42, 48, 39, 45, 49, 60]
    state: list[bool] = []
    throttled = False
    for percent in cpu:
        throttled = throttle_reason(read(cpu=percent), CPU_50, throttled=throttled) is not None
        state.append(throttled)
    assert state == [False, False, True, True, True, True, False, False, False, True]


def test_the_sampler_measures_this_process_cpu_and_memory() -> None:
    """Real readings: a busy loop reads as a good share of one core (less on a loaded machine),
    a sleep as next to none; RSS as a plausible size."""
    sampler = ProcessSampler()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    busy = sampler.sample()
    time.sleep(0.3)
    idle = sampler.sample()
    assert busy.cpu_percent > 20 and idle.cpu_percent < 10
    assert 10 < busy.memory_mb < 100_000 and rss_bytes() > 10 * 1024 * 1024
