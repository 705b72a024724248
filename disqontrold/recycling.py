"""When a consumer should be replaced by a fresh process.

Like gunicorn's ``max_requests`` and Celery's ``max_tasks_per_child`` /
``max_memory_per_child``: a worker's leaks and fragmentation end with its
process. Also when the sqlite file it holds open was deleted or replaced
(Broker.moved): its successor opens the file there now.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

from disqontrol_client.brokers.broker import Broker
from disqontrol_client.config import ConsumerConfig
from disqontrol_client.logfmt import log_event

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


def rss_mib() -> float:
    """Resident memory of this process (from /proc, no psutil import)."""
    with open("/proc/self/statm", "rb") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


class RecycleLimits:
    """A consumer group's recycling limits, checked between jobs."""

    def __init__(self, group: ConsumerConfig) -> None:
        self.group = group
        self._moved_check = 0.0  # monotonic time of the next look at Broker.moved()

    def reason(self, handled: int, broker: Optional[Broker]) -> str:
        """Why this process should be replaced ('' = keep going); logged once."""
        if self.group.max_jobs_per_process and handled >= self.group.max_jobs_per_process:
            reason = "max_jobs_per_process"
        elif self.group.max_memory_per_process and rss_mib() >= self.group.max_memory_per_process:
            reason = "max_memory_per_process"
        elif self._broker_moved(broker):
            reason = "broker_moved"
        else:
            return ""
        log_event(logger, "consumer_recycled", group=self.group.name, reason=reason, jobs=handled,
                  rss_mib=round(rss_mib(), 1))
        return reason

    def _broker_moved(self, broker: Optional[Broker]) -> bool:
        """The sqlite file deleted or replaced under us (Broker.moved), looked
        at once a second at most."""
        now = time.monotonic()
        if broker is None or now < self._moved_check:
            return False
        self._moved_check = now + Broker.MOVED_CHECK_INTERVAL
        how = broker.moved()
        if how:
            log_event(logger, "broker_moved", logging.ERROR, group=self.group.name, how=how,
                      lost="the jobs left in the old file")
        return bool(how)
