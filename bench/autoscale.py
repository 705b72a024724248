#!/usr/bin/env python3
"""Autoscaling under a bursty load: time and processes used, on vs off.

The same load runs three times on a real daemon (sqlite broker): BURSTS
bursts of slow jobs (each sleeps JOB_SECONDS), the next burst added PAUSE
seconds after the previous one drained. Configurations:
- autoscale: min 1, max --max, autoscale true;
- fixed min: 1 process, autoscale false;
- fixed max: --max processes, autoscale false.
For each it prints the total time (first job added to last job run), the
process-seconds of consumers alive during it (sampled), and the peak count.

Usage: python bench/autoscale.py [--bursts 3] [--jobs 24] [--job-seconds 0.5]
       [--pause 5] [--max 4] [--idle-seconds 2]
Every run is bounded by --run-timeout seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.daemon import Daemon, python_worker  # noqa: E402

BURSTS = 3
JOBS_PER_BURST = 24
JOB_SECONDS = 0.5
PAUSE = 5.0  # s between the end of a burst and the next one
MAX_PROCESSES = 4
IDLE_SECONDS = 2.0  # autoscale_idle_seconds of the autoscaled run
RUN_TIMEOUT = 300.0  # s per configuration
SAMPLE = 0.1  # s between two counts of the consumer processes
QUEUE = "work"


@dataclass
class Result:
    name: str
    seconds: float
    process_seconds: float
    peak: int


class Meter:
    """Integrates the number of live consumers over time."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.process_seconds = 0.0
        self.peak = 0
        self.at = time.monotonic()

    def sample(self) -> None:
        now = time.monotonic()
        count = len(self.daemon.consumer_pids())
        self.process_seconds += count * (now - self.at)
        self.peak = max(self.peak, count)
        self.at = now

    def wait(self, until: float, done: Any = None) -> None:
        """Sample until the monotonic deadline ``until`` or until ``done()`` is true."""
        while time.monotonic() < until and not (done and done()):
            self.sample()
            time.sleep(SAMPLE)
        self.sample()


def run(name: str, consumer: dict[str, Any], args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="dq-bench-autoscale-") as tmp:
        path = Path(tmp)
        daemon = Daemon(path, f"sqlite://{path}/jobs.db", {QUEUE: {"worker": python_worker()}},
                        consumer_defaults={"job_batch": 1, **consumer})
        daemon.start(consumers=consumer["min_processes"])
        try:
            meter = Meter(daemon)
            deadline = time.monotonic() + args.run_timeout
            started = time.monotonic()
            for burst in range(args.bursts):
                if burst:
                    meter.wait(time.monotonic() + args.pause)
                first = burst * args.jobs
                daemon.add(QUEUE, [{"n": n, "sleep": args.job_seconds} for n in range(first, first + args.jobs)])
                wanted = first + args.jobs
                meter.wait(deadline, lambda: len(daemon.runs()) >= wanted)  # noqa: B023 (used at once)
                if len(daemon.runs()) < wanted:
                    raise SystemExit(f"{name}: burst {burst + 1} did not drain within {args.run_timeout:g} s")
            return Result(name, time.monotonic() - started, meter.process_seconds, meter.peak)
        finally:
            daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=BURSTS)
    parser.add_argument("--jobs", type=int, default=JOBS_PER_BURST, help="jobs per burst")
    parser.add_argument("--job-seconds", type=float, default=JOB_SECONDS)
    parser.add_argument("--pause", type=float, default=PAUSE)
    parser.add_argument("--max", type=int, default=MAX_PROCESSES)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS)
    parser.add_argument("--run-timeout", type=float, default=RUN_TIMEOUT)
    args = parser.parse_args()
    configs = [
        ("autoscale", {"min_processes": 1, "max_processes": args.max, "autoscale": True,
                       "autoscale_idle_seconds": args.idle_seconds}),
        ("fixed min", {"min_processes": 1, "max_processes": args.max, "autoscale": False}),
        ("fixed max", {"min_processes": args.max, "max_processes": args.max, "autoscale": False}),
    ]
    work = args.bursts * args.jobs * args.job_seconds
    print(f"load: {args.bursts} bursts x {args.jobs} jobs x {args.job_seconds:g} s "
          f"({work:g} process-seconds of work), {args.pause:g} s pauses; max {args.max} processes", flush=True)
    print(f"{'config':<10} {'total s':>8} {'process-s':>10} {'peak':>5} {'work share':>11}", flush=True)
    for name, consumer in configs:
        result = run(name, consumer, args)
        share = work / result.process_seconds if result.process_seconds else float("nan")
        print(f"{result.name:<10} {result.seconds:>8.1f} {result.process_seconds:>10.1f} {result.peak:>5} "
              f"{share:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
