"""The SPEC §6 retry schedule: counts of retries per time span, jitter bounds."""
from __future__ import annotations

import random

import pytest

from disqontrol_client.errors import UsageError
from disqontrold.backoff import JITTER_FRACTION, MAX_DELAY, retry_delay

MINUTE, HOUR, DAY = 60, 3600, 86400


def retries_within(span: float, jitter: float) -> int:
    """How many retries happen within ``span`` seconds of the first failure."""
    elapsed, n = 0.0, 0
    while True:
        elapsed += retry_delay(n + 1, jitter=lambda: jitter)
        if elapsed > span:
            return n
        n += 1


def test_bare_schedule_is_powers_of_four_then_the_cap():
    assert [retry_delay(n, jitter=lambda: 0) for n in range(1, 11)] == [
        4, 16, 64, 256, 1024, 4096, 16384, 65536, MAX_DELAY, MAX_DELAY]


def test_two_retries_in_the_first_minute_five_in_an_hour_seven_in_a_day():
    assert retries_within(MINUTE, 0) == 2
    assert retries_within(HOUR, 0) == 5
    assert retries_within(DAY, 0) == 7


def test_about_37_retries_in_30_days():
    # The exact count depends on the jitter: 35 with none, 38 with the most,
    # 37 with the average (the SPEC's "about 37", the default max_retries).
    assert retries_within(30 * DAY, 0) == 35
    assert retries_within(30 * DAY, 0.5) == 37
    assert retries_within(30 * DAY, 0.999999) == 38


def test_jitter_adds_up_to_10_percent_then_takes_up_to_10_percent_off_the_cap():
    rng = random.Random(7)
    for n in range(1, 40):
        bare = retry_delay(n, jitter=lambda: 0)
        delay = retry_delay(n, jitter=rng.random)
        if bare < MAX_DELAY:
            assert bare <= delay <= bare * (1 + JITTER_FRACTION)
        else:
            assert MAX_DELAY * (1 - JITTER_FRACTION) <= delay <= MAX_DELAY


def test_default_jitter_is_random_and_bounded():
    delays = {retry_delay(3) for _ in range(50)}
    assert len(delays) > 1
    assert all(64 <= d <= 64 * (1 + JITTER_FRACTION) for d in delays)


def test_scale_shrinks_the_schedule():
    assert retry_delay(2, jitter=lambda: 0, scale=0.01) == pytest.approx(0.16)
    assert retry_delay(20, jitter=lambda: 0, scale=0.5) == MAX_DELAY / 2


def test_huge_retry_numbers_stay_at_the_cap():
    assert retry_delay(10**6, jitter=lambda: 0) == MAX_DELAY


@pytest.mark.parametrize("kwargs, message", [
    ({"retry_number": 0}, "retry_number must be 1 or more, got 0"),
    ({"retry_number": 1, "scale": 0}, "scale must be greater than 0, got 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(UsageError, match=f"^{message}$"):
        retry_delay(kwargs.pop("retry_number"), **kwargs)
