"""The built-in scheduler in real daemons: a ``* * * * *`` entry runs exactly
once per minute, with one daemon and with two on one sqlite file.

A real minute is too long for a test, so the daemons run with the
scheduler's test hook DISQONTROL_SCHEDULER_TIME_SCALE=60 (a cron minute per
real second; see docs/scheduler.md). The job's command worker appends its
metadata to a file, so the test sees the jobs that actually ran."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from disqontrold.scheduler import SCHEDULED_TIME, TIME_SCALE_ENV
from tests.support.procs import stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
SCALE = 60  # a cron minute per real second
MINUTES = 8  # distinct minutes to see run (up to 5 caught up at start)
MINUTE = 60


def write_config(tmp_path: Path, runs_file: Path) -> Path:
    (tmp_path / "crontab").write_text('* * * * * tick {"every": "minute"}\n')
    # sh -c SCRIPT sh --queue=Q --body=B --metadata=M: $3 is --metadata=...
    command = f"sh -c 'printf \"%s\\\\n\" \"$3\" >> {runs_file}' sh"
    config = tmp_path / "disqontrol.yml"
    config.write_text(
        "disqontrol:\n"
        f"  broker: sqlite://{tmp_path}/jobs.db\n"
        f"  log_dir: {tmp_path}/log\n"
        f"  run_dir: {tmp_path}/run\n"
        "  queues:\n"
        f"    tick: {{worker: {{type: command, command: {json.dumps(command)}}}}}\n"
        "  scheduler:\n"
        "    crontab: crontab\n"
        # catch_up over 5 minutes: a master stalled a few real seconds on a
        # loaded machine still runs every minute, and both daemons race on
        # the missed minutes at start.
        "    missed_runs: catch_up\n"
        "    missed_window: 300\n"
    )
    return config


def start_daemon(config: Path, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, TIME_SCALE_ENV: str(SCALE)}
    run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "disqontrold.cli", "--config", str(config), "--no-stderr-log"],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(run_dir / "stderr.log", "ab"),
    )


def runs_seen(runs_file: Path) -> Counter:
    if not runs_file.exists():
        return Counter()
    prefix = "--metadata="
    return Counter(
        json.loads(line[len(prefix):])[SCHEDULED_TIME]
        for line in runs_file.read_text().splitlines() if line.startswith(prefix)
    )


@pytest.mark.parametrize("daemons", [1, 2])
def test_every_minute_entry_runs_exactly_once_per_minute(tmp_path, daemons):
    # Given one or two daemons on one sqlite file, the same crontab, a fast clock
    runs_file = tmp_path / "runs.txt"
    config = write_config(tmp_path, runs_file)
    procs = [start_daemon(config, tmp_path / f"d{i}") for i in range(daemons)]
    try:
        # When MINUTES scheduler minutes have run
        wait_for(lambda: len(runs_seen(runs_file)) >= MINUTES, timeout=90, interval=0.2,
                 message=f"{MINUTES} minutes of runs in {runs_file}")
    finally:
        for proc in procs:
            stop_process(proc, timeout=30)
    # Then every minute ran once: no minute twice, no gap between the first and last
    seen = runs_seen(runs_file)
    assert max(seen.values()) == 1, seen
    minutes = sorted(seen)
    assert all(t % MINUTE == 0 for t in minutes)
    assert minutes == list(range(minutes[0], minutes[-1] + MINUTE, MINUTE))
