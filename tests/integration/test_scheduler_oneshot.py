"""`disqontrold scheduler` (the one-shot for the system cron), run for real
as a process on a real config and sqlite file."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from disqontrol_client.brokers import open_broker
from disqontrold.scheduler import SCHEDULED_TIME
from tests.support.procs import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
# Seconds into a minute after which a test waits for the next one, so two
# passes meant to fall in one minute do (each pass takes well under 10 s).
LATEST_START_SECOND = 40


def write_config(tmp_path: Path, crontab: str, broker: str = "", missed_runs: str = "skip") -> Path:
    (tmp_path / "crontab").write_text(crontab)
    broker = broker or f"sqlite://{tmp_path}/jobs.db"
    config = tmp_path / "disqontrol.yml"
    config.write_text(
        "disqontrol:\n"
        f"  broker: {broker}\n"
        f"  log_dir: {tmp_path}/log\n"
        f"  run_dir: {tmp_path}/run\n"
        "  queues:\n"
        "    every: {worker: {type: command, command: 'true'}}\n"
        "    other: {worker: {type: command, command: 'true'}}\n"
        "  scheduler:\n"
        "    crontab: crontab\n"
        f"    missed_runs: {missed_runs}\n"
    )
    return config


def oneshot(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "disqontrold.scheduler_cli", "--config", str(config), *args],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )


def stored(tmp_path: Path, queue: str) -> Counter:
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as broker:
        return Counter(json.loads(d.payload)["metadata"][SCHEDULED_TIME] for d in broker.peek(queue, 1000))


def test_oneshot_run_twice_in_a_minute_adds_the_minute_once(tmp_path):
    # Given an every-minute entry, and a start early enough in a minute
    config = write_config(tmp_path, '* * * * * every {"n": 1}\n')
    wait_for(lambda: time.time() % 60 < LATEST_START_SECOND, timeout=30, interval=0.2,
             message="an early second of a minute")
    minute = time.time() // 60 * 60
    # When the one-shot runs twice
    first, second = oneshot(config, "--verbose"), oneshot(config, "--verbose")
    # Then both succeed, and the minute's job was added by the first only
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert stored(tmp_path, "every") == {int(minute): 1}
    assert first.stdout.count("\n") == 1 and "already-added" not in first.stdout
    assert "already-added" in second.stdout


def test_oneshot_without_verbose_is_silent(tmp_path):
    config = write_config(tmp_path, "* * * * * every\n")
    result = oneshot(config)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert sum(stored(tmp_path, "every").values()) >= 1


def test_oneshot_refuses_a_bad_line_naming_file_and_line(tmp_path):
    config = write_config(tmp_path, "# ok\n* * * * * every\n0 0 * * mon-xyz every\n")
    result = oneshot(config)
    assert result.returncode == 2
    assert f"{tmp_path}/crontab:3: 'mon-xyz' is not a valid day of week" in result.stderr
    assert not (tmp_path / "jobs.db").exists() or stored(tmp_path, "every") == Counter()


def test_oneshot_refuses_an_unknown_queue(tmp_path):
    config = write_config(tmp_path, "* * * * * nope\n")
    result = oneshot(config)
    assert result.returncode == 2
    assert "crontab:1: unknown queue 'nope'; configured queues: every, other" in result.stderr


def test_crontab_option_overrides_the_configured_one(tmp_path):
    config = write_config(tmp_path, "* * * * * nope\n")
    other = tmp_path / "other.crontab"
    other.write_text("* * * * * other\n")
    result = oneshot(config, "--crontab", str(other))
    assert result.returncode == 0, result.stderr
    assert sum(stored(tmp_path, "other").values()) >= 1


def test_oneshot_exits_3_when_the_broker_cannot_be_reached(tmp_path):
    config = write_config(tmp_path, "* * * * * every\n", broker=f"redis://127.0.0.1:{free_port()}/0")
    result = oneshot(config)
    assert result.returncode == 3, result.stderr
    assert "broker" in result.stderr
