#!/usr/bin/env python3
"""What the scheduler costs: the time of one pass of the one-shot (process
start to exit, as cron runs it), of one in-process pass over many due
entries, and the claim rate of each engine.

Usage: python bench/scheduler.py [--entries N] [--engine sqlite|redis|all]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from disqontrol_client.brokers import open_broker  # noqa: E402
from disqontrol_client.config import SchedulerConfig  # noqa: E402
from disqontrold.crontab import parse_crontab  # noqa: E402
from disqontrold.scheduler import Scheduler  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

ENTRIES = 100
CLAIMS = 2000
ONESHOT_RUNS = 5
CATCH_UP_RUNS = 60  # an hour of an every-minute entry (missed_window 3600 s)
MS = 1000
# A fixed instant in the middle of a minute: every pass sees the same runs.
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc).timestamp()
REPO = Path(__file__).resolve().parent.parent


def crontab_text(entries: int, tag: str = "") -> str:
    """Every-minute entries; another ``tag`` makes other entries (other claims)."""
    return "".join(f'* * * * * q{i % 4} {{"entry": {i}{tag}}}\n' for i in range(entries))


def claim_rate(url: str) -> float:
    with open_broker(url) as broker:
        started = time.perf_counter()
        for i in range(CLAIMS):
            broker.claim(f"bench:{time.time_ns()}:{i}", 60)
        return CLAIMS / (time.perf_counter() - started)


def pass_ms(url: str, entries: int, missed_runs: str = "skip") -> tuple[float, float]:
    """One pass adding every entry's due runs (skip: one run each; catch_up:
    the last hour's), then the same pass by a second scheduler, which finds
    every run claimed already."""
    settings = SchedulerConfig(crontab=Path("bench"), timezone="UTC", missed_runs=missed_runs)
    times, added = [], []
    with open_broker(url) as broker:
        for _ in range(2):
            text = crontab_text(entries, f', "policy": "{missed_runs}"')
            scheduler = Scheduler(parse_crontab(text, "bench"), broker, settings, now=NOW)
            started = time.perf_counter()
            runs = scheduler.run_due(NOW)
            times.append((time.perf_counter() - started) * MS)
            added.append(sum(1 for run in runs if run.job_id))
    assert added[0] == entries * (1 if missed_runs == "skip" else CATCH_UP_RUNS) and added[1] == 0, added
    return times[0], times[1]


def oneshot_ms(workdir: Path, entries: int) -> float:
    (workdir / "crontab").write_text(crontab_text(entries))
    queues = "".join(f"    q{i}: {{worker: {{type: command, command: 'true'}}}}\n" for i in range(4))
    config = workdir / "disqontrol.yml"
    config.write_text(
        f"disqontrol:\n  broker: sqlite://{workdir}/oneshot.db\n  log_dir: {workdir}/log\n"
        f"  run_dir: {workdir}/run\n  queues:\n{queues}"
        "  scheduler: {crontab: crontab, missed_runs: skip}\n"
    )
    times = []
    for _ in range(ONESHOT_RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "disqontrold.scheduler_cli", "--config", str(config)],
                       check=True, cwd=REPO)
        times.append((time.perf_counter() - started) * MS)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=ENTRIES)
    parser.add_argument("--engine", choices=("sqlite", "redis", "all"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dq-bench-sched-") as tmp:
        workdir = Path(tmp)
        urls = {}
        server = None
        if args.engine in ("sqlite", "all"):
            urls["sqlite"] = f"sqlite://{workdir}/jobs.db"
        if args.engine in ("redis", "all"):
            server = RedisServer(workdir / "redis").start()
            urls["redis"] = server.url
        try:
            for engine, url in urls.items():
                print(f"{engine:6} claims/s                      {claim_rate(url):10.0f}")
                first, again = pass_ms(url, args.entries)
                print(f"{engine:6} pass adding {args.entries} runs, ms       {first:10.1f}")
                first, again = pass_ms(url, args.entries, "catch_up")
                runs = args.entries * CATCH_UP_RUNS
                print(f"{engine:6} pass adding {runs} runs (catch_up), ms  {first:10.1f}")
                print(f"{engine:6} same pass, all {runs} claimed, ms   {again:10.1f}")
            print(f"one-shot process, {args.entries} entries, sqlite, ms  {oneshot_ms(workdir, args.entries):10.1f}"
                  f"  (median of {ONESHOT_RUNS})")
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
