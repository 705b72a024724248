"""A scheduler in its own process, for the race tests: builds a Scheduler on
the broker URL and crontab given, says "ready", waits for a line on stdin (the
start gun, so every racer passes at the same moment), then passes once at the
given ``now`` and prints the runs it won as JSON.

usage: python -m tests.integration.scheduler_racer BROKER_URL CRONTAB NOW MISSED_RUNS
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from disqontrol_client.brokers import open_broker
from disqontrol_client.config import SchedulerConfig
from disqontrold.crontab import load_crontab
from disqontrold.scheduler import Scheduler


def main(argv: list[str]) -> int:
    url, crontab, now, missed_runs = argv[0], argv[1], float(argv[2]), argv[3]
    settings = SchedulerConfig(crontab=Path(crontab), timezone="UTC", missed_runs=missed_runs)
    broker = open_broker(url)
    scheduler = Scheduler(load_crontab(crontab), broker, settings, now=now)
    print("ready", flush=True)
    sys.stdin.readline()
    runs = scheduler.run_due(now)
    broker.close()
    print(json.dumps([[run.entry.queue, run.time, run.job_id] for run in runs if run.job_id]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
