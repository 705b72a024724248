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
import time
from collections import Counter
from pathlib import Path

import pytest

from disqontrold.scheduler import SCHEDULED_TIME, TIME_SCALE_ENV
from tests.support.procs import stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
SCALE = 60  # a cron minute per real second
MINUTES = 5  # minutes to see run after the daemons started (besides those caught up)
MINUTE = 60
FROZEN = 0.001  # a scale that all but stops the scheduler's clock


def write_config(tmp_path: Path, runs_file: Path, name: str) -> Path:
    """A daemon's config: its own run_dir and log_dir, the shared broker and crontab."""
    (tmp_path / "crontab").write_text('* * * * * tick {"every": "minute"}\n')
    # sh -c SCRIPT sh --queue=Q --body=B --metadata=M: $3 is --metadata=...
    command = f"sh -c 'printf \"%s\\\\n\" \"$3\" >> {runs_file}' sh"
    config = tmp_path / f"{name}.yml"
    config.write_text(
        "disqontrol:\n"
        f"  broker: sqlite://{tmp_path}/jobs.db\n"
        f"  log_dir: {tmp_path}/{name}/log\n"
        f"  run_dir: {tmp_path}/{name}/run\n"
        "  queues:\n"
        f"    tick: {{worker: {{type: command, command: {json.dumps(command)}}}}}\n"
        "  scheduler:\n"
        f"    crontab: {tmp_path}/crontab\n"
        # catch_up over 15 minutes: a master stalled up to 15 real seconds on
        # a loaded machine still runs every minute, and both daemons race on
        # the missed minutes at start.
        "    missed_runs: catch_up\n"
        "    missed_window: 900\n"
    )
    return config


def start_daemon(config: Path, origin: float) -> subprocess.Popen:
    # One clock origin for all daemons: their fast clocks agree, so they
    # really race for each minute.
    env = {**os.environ, TIME_SCALE_ENV: f"{SCALE}@{origin}"}
    return subprocess.Popen(
        [sys.executable, "-m", "disqontrold.cli", "--config", str(config), "--no-stderr-log"],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(config.with_suffix(".stderr"), "ab"),
    )


def started_schedulers(tmp_path: Path, daemons: int) -> int:
    logs = [tmp_path / f"d{i}" / "log" / "disqontrol.log" for i in range(daemons)]
    return sum(1 for log in logs if log.exists() and "event=scheduler_started" in log.read_text())


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
    origin = time.time()
    procs = [start_daemon(write_config(tmp_path, runs_file, f"d{i}"), origin) for i in range(daemons)]
    try:
        wait_for(lambda: started_schedulers(tmp_path, daemons) == daemons, timeout=60, interval=0.1,
                 message=f"{daemons} built-in schedulers started")
        # When MINUTES scheduler minutes have run since the start
        wait_for(lambda: len([t for t in runs_seen(runs_file) if t >= origin]) >= MINUTES, timeout=90,
                 interval=0.2, message=f"{MINUTES} minutes of runs in {runs_file}")
        assert all(proc.poll() is None for proc in procs), "a daemon died"
    finally:
        for proc in procs:
            stop_process(proc, timeout=30)
    # Then every minute ran once: no minute twice, no gap between the first and last
    seen = runs_seen(runs_file)
    assert max(seen.values()) == 1, seen
    minutes = sorted(seen)
    assert all(t % MINUTE == 0 for t in minutes)
    assert minutes == list(range(minutes[0], minutes[-1] + MINUTE, MINUTE))


def test_daemon_and_cron_oneshot_in_the_same_minute_add_each_run_once(tmp_path):
    # Given a daemon (real clock) that has added this minute's run and the
    # missed ones of its catch-up window
    runs_file = tmp_path / "runs.txt"
    config = write_config(tmp_path, runs_file, "d0")
    # Both see an all-but-frozen clock one second into the current minute, so
    # they pass in the same minute without the test waiting for a boundary.
    env = {**os.environ, TIME_SCALE_ENV: f"{FROZEN}@{time.time() // MINUTE * MINUTE + 1}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "disqontrold.cli", "--config", str(config), "--no-stderr-log"],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "d0.stderr", "ab"),
    )
    try:
        log = tmp_path / "d0" / "log" / "disqontrol.log"
        wait_for(lambda: log.exists() and "event=schedule_added" in log.read_text(), timeout=60,
                 interval=0.1, message="the daemon's first scheduled run")
        added = lambda: log.read_text().count("event=schedule_added")  # noqa: E731
        wait_for(lambda: len(runs_seen(runs_file)) == added(), timeout=60, interval=0.1,
                 message="the daemon's added runs done")
        # When the system cron's one-shot runs in the same minute
        oneshot = subprocess.run(
            [sys.executable, "-m", "disqontrold.scheduler_cli", "--config", str(config), "--verbose"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
        )
    finally:
        stop_process(proc, timeout=30)
    # Then it finds every run it would add already added by the daemon
    assert oneshot.returncode == 0, oneshot.stderr
    lines = oneshot.stdout.splitlines()
    assert lines and all(line.endswith("already-added") for line in lines), lines
    assert len(lines) == added() and max(runs_seen(runs_file).values()) == 1
