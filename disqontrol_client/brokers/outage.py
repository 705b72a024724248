"""How a consumer's broker connection logs an outage: the first failure at
once, then at growing intervals, and one line when the broker answers again.

A consumer retries every second or so while the broker is down (its reserve
must keep returning, to notice a stop); a line per try made twenty consumers
write twenty lines a second for as long as the outage lasted."""
from __future__ import annotations

import logging
import time
from typing import Any

from disqontrol_client.logfmt import log_event

FIRST_REPEAT = 1.0  # s between the first and the second line of one outage
MAX_REPEAT = 60.0  # s: the interval doubles up to this


class Outage:
    """The state of one connection's outage (``down`` is cheap to test on a hot path)."""

    def __init__(self, logger: logging.Logger, **fields: Any) -> None:
        self._logger = logger
        self._fields = fields  # named in every line (the broker, the queues)
        self.down = False
        self._since = 0.0
        self._next_line = 0.0
        self._repeat = FIRST_REPEAT
        self._tries = 0

    def failed(self, error: str, retry_in: float, **context: Any) -> None:
        """One more failed try; logs ``broker_unreachable`` when a line is due."""
        now = time.monotonic()
        if not self.down:
            self.down, self._since, self._next_line, self._repeat, self._tries = True, now, now, FIRST_REPEAT, 0
        self._tries += 1
        if now < self._next_line:
            return
        log_event(self._logger, "broker_unreachable", logging.WARNING, **self._fields, **context,
                  down_for=f"{now - self._since:.1f}", tries=self._tries, retry_in=f"{retry_in:.2f}", error=error)
        self._next_line = now + self._repeat
        self._repeat = min(self._repeat * 2, MAX_REPEAT)

    def answered(self) -> None:
        """The broker answered: ends the outage with one ``broker_reachable`` line."""
        if self.down:
            self.down = False
            log_event(self._logger, "broker_reachable", **self._fields,
                      down_for=f"{time.monotonic() - self._since:.1f}", tries=self._tries)
