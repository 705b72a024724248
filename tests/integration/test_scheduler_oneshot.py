"""`disqontrold scheduler` (the one-shot for the system cron), run for real
as a process on a real config and sqlite file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from disqontrol_client.brokers import open_broker
from disqontrold.crontab import parse_crontab
from disqontrold.scheduler import SCHEDULED_TIME, TIME_SCALE_ENV, claim_key

REPO = Path(__file__).resolve().parents[2]
MINUTE = 60
FROZEN = 0.001  # a time scale that all but stops the scheduler's clock (test hook)


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


def oneshot(config: Path, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "disqontrold.scheduler_cli", "--config", str(config), *args],
        capture_output=True, text=True, cwd=REPO, timeout=60, env=env,
    )


def stored(tmp_path: Path, queue: str) -> Counter:
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as broker:
        return Counter(json.loads(d.payload)["metadata"][SCHEDULED_TIME] for d in broker.peek(queue, 1000))


def test_oneshot_run_twice_in_a_minute_adds_the_minute_once(tmp_path):
    # Given an every-minute entry, and a scheduler clock held one second
    # into the current minute (so both runs fall in it without waiting)
    config = write_config(tmp_path, '* * * * * every {"n": 1}\n')
    minute = time.time() // MINUTE * MINUTE
    env = {**os.environ, TIME_SCALE_ENV: f"{FROZEN}@{minute + 1}"}
    # When the one-shot runs twice
    first, second = oneshot(config, "--verbose", env=env), oneshot(config, "--verbose", env=env)
    # Then both succeed, and the minute's job was added by the first only
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert stored(tmp_path, "every") == {int(minute): 1}
    assert first.stdout.count("\n") == 1 and "already-added" not in first.stdout
    assert "already-added" in second.stdout


def test_oneshot_without_verbose_is_silent_and_logs_to_the_log_file(tmp_path):
    config = write_config(tmp_path, "* * * * * every\n")
    result = oneshot(config)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert sum(stored(tmp_path, "every").values()) >= 1
    log = (tmp_path / "log" / "disqontrol.log").read_text()
    assert "event=schedule_added job=" in log and "queue=every" in log


def test_oneshot_with_an_unwritable_log_dir_still_schedules(tmp_path):
    config = write_config(tmp_path, "* * * * * every\n")
    (tmp_path / "log").write_text("a file where the log dir should be")
    result = oneshot(config)
    assert result.returncode == 0, result.stderr
    assert "event=scheduler_log_file_unusable" in result.stderr
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
    result = oneshot(config, f"--crontab={other}")  # the PHP Disqontrol's spelling
    assert result.returncode == 0, result.stderr
    assert sum(stored(tmp_path, "other").values()) >= 1


def test_oneshot_exits_3_when_the_broker_cannot_be_reached(tmp_path, refused_port):
    config = write_config(tmp_path, "* * * * * every\n", broker=f"redis://127.0.0.1:{refused_port}/0")
    result = oneshot(config)
    assert result.returncode == 3, result.stderr
    assert "broker" in result.stderr


def test_oneshot_without_any_crontab_is_a_usage_error(tmp_path):
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().split("  scheduler:")[0])
    result = oneshot(config)
    assert result.returncode == 2
    assert "no crontab: give --crontab PATH, or set disqontrol.scheduler.crontab" in result.stderr


def test_oneshot_on_disque_adds_the_minute_once(tmp_path, disque_cluster):
    # Given a config on a disque broker (skipped unless $DISQUE_SERVER is set),
    # whose claims are taken on a majority of the Disque nodes
    disque_cluster.flush()
    config = write_config(tmp_path, "* * * * * every\n", broker=disque_cluster.url)
    minute = time.time() // MINUTE * MINUTE
    env = {**os.environ, TIME_SCALE_ENV: f"{FROZEN}@{minute + 1}"}
    # When the one-shot runs twice in a minute
    assert [oneshot(config, env=env).returncode for _ in range(2)] == [0, 0]
    # Then the minute was added once
    with open_broker(disque_cluster.url) as broker:
        runs = Counter(json.loads(d.payload)["metadata"][SCHEDULED_TIME] for d in broker.peek("every", 1000))
    assert runs == {int(minute): 1}


def test_claim_store_holds_the_claims_and_still_adds_each_run_once(tmp_path):
    # Given jobs in one sqlite file and the scheduler's claims in another
    config = write_config(tmp_path, "* * * * * every\n")
    config.write_text(config.read_text() + "    claim_store: sqlite://claims.db\n")
    minute = time.time() // MINUTE * MINUTE
    env = {**os.environ, TIME_SCALE_ENV: f"{FROZEN}@{minute + 1}"}
    # When the one-shot runs twice in a minute
    assert [oneshot(config, env=env).returncode for _ in range(2)] == [0, 0]
    # Then the minute was added once, and its claim is in the claim store
    assert stored(tmp_path, "every") == {int(minute): 1}
    entry = parse_crontab("* * * * * every\n", "c")[0]
    with open_broker(f"sqlite://{tmp_path}/claims.db") as claims:
        assert claims.claim(claim_key(entry, minute), 60) is False
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as jobs:
        assert jobs.claim(claim_key(entry, minute), 60) is True
