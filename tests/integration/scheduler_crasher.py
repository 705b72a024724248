"""A scheduler in its own process for the crash test: passes over the
crontab with a hand-driven clock, from START forward by STEP seconds per
pass, printing the number of each pass done, until it is killed (or has done
PASSES). Every process given the same START and STEP walks the same minutes,
so a restarted one meets the claims of the one that was killed.

usage: python -m tests.integration.scheduler_crasher BROKER_URL CRONTAB START STEP PASSES
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from disqontrol_client.brokers import Broker, open_broker
from disqontrol_client.config import SchedulerConfig
from disqontrold.crontab import load_crontab
from disqontrold.scheduler import Scheduler

LOOK_BACK = 3600  # s: the first pass catches up an hour of runs


def passes(broker: Broker, crontab: str, start: float, step: float, count: int,
           done: Callable[[int], None] = lambda k: None) -> None:
    """``count`` passes at start, start + step, ...; ``done(k)`` after pass k."""
    settings = SchedulerConfig(crontab=Path(crontab), timezone="UTC", missed_runs="catch_up",
                               missed_window=LOOK_BACK, catch_up_limit=LOOK_BACK // 60)
    scheduler = Scheduler(load_crontab(crontab), broker, settings, now=start)
    for k in range(count):
        scheduler.run_due(start + k * step)
        done(k)


def main(argv: list[str]) -> int:
    url, crontab, start, step, count = argv[0], argv[1], float(argv[2]), float(argv[3]), int(argv[4])
    with open_broker(url) as broker:
        passes(broker, crontab, start, step, count, lambda k: print(k, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
