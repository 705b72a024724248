"""The retry schedule of SPEC §6, as a pure function the tests can pin down.

Retry n waits 4**n seconds plus up to 10 % while 4**n <= 90000 (that is 2
retries in the first minute, 5 in the first hour, 7 in a day), then 90000
seconds minus up to 10 %: about one a day. In 30 days that is 35 retries with
no jitter, 37 on average and 38 at most (hence max_retries: 37). The jitter
spreads a burst of failures so the retries do not all land in the same second.
"""
from __future__ import annotations

import random
from typing import Callable

from disqontrol_client.errors import UsageError

BACKOFF_BASE = 4
MAX_DELAY = 90000  # s: 25 hours, the longest wait between two retries
JITTER_FRACTION = 0.10


def retry_delay(retry_number: int, *, jitter: Callable[[], float] = random.random, scale: float = 1.0) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry).

    ``jitter`` returns a value in [0, 1) (0 gives the bare schedule);
    ``scale`` multiplies the result (a queue's ``backoff_scale``).
    """
    if retry_number < 1:
        raise UsageError(f"retry_number must be 1 or more, got {retry_number!r}")
    if scale <= 0:
        raise UsageError(f"scale must be greater than 0, got {scale!r}")
    # Compare exponents, not powers: 4**n for a huge n is a needless bignum.
    if retry_number <= _LAST_GROWING_RETRY:
        delay = BACKOFF_BASE**retry_number
        delay = delay + delay * JITTER_FRACTION * jitter()
    else:
        delay = MAX_DELAY - MAX_DELAY * JITTER_FRACTION * jitter()
    return delay * scale


def _last_growing_retry() -> int:
    """The largest n with 4**n <= MAX_DELAY (8: 65536)."""
    n = 0
    while BACKOFF_BASE ** (n + 1) <= MAX_DELAY:
        n += 1
    return n


_LAST_GROWING_RETRY = _last_growing_retry()
