"""A real daemon and disqontrolctl on a sharded sqlite database
(``?shards=2``): consumers home on distinct shards, jobs of both shards run,
a failing job of shard 1 is parked and found by id, `metrics` and `queues`
count both shards."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.ctl_support import ctl, ctl_json
from tests.integration.test_ctl_metrics import parse
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

ADDJOB = [str(Path(sys.executable).parent / "disqontrol"), "addjob"]
FAILURE_QUEUE = "failed-jobs"
JOBS = 20


def addjob(daemon: Daemon, queue: str, body: str) -> str:
    """`disqontrol addjob` in its own process: its home shard is a free one."""
    done = subprocess.run([*ADDJOB, queue, body, "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60, cwd=daemon.dir)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_daemon_runs_a_sharded_database_end_to_end(tmp_path: Path) -> None:
    # Given a daemon with two consumers on a ?shards=2 database
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db?shards=2",
                    {"work": {"worker": python_worker(), "max_retries": 0}},
                    consumer_defaults={"min_processes": 2}).start(consumers=2)
    try:
        homes = daemon.wait_event("sqlite_home_shard", 2)
        assert sorted(line.split("shard=")[1].split()[0] for line in homes) == ["0", "1"], homes
        # When jobs are added on shard 0 (this process) and on shard 1 (addjob, another process)
        ids = daemon.add("work", range(JOBS))
        failing = addjob(daemon, "work", '{"n": 99, "fail": true}')
        assert ids[0].startswith("S-") and failing.startswith("S1-")
        # Then they all run, and the failing one is parked in shard 1
        wait_for(lambda: len(daemon.runs()) == JOBS + 1 and daemon.broker.length(FAILURE_QUEUE) == 1,
                 timeout=60, interval=0.1, message="every job run and the failing one parked")
        # And the metrics count the parked job
        done = ctl(daemon, "metrics")
        assert done.returncode == 0, done.stderr
        metrics = parse(done.stdout)
        assert metrics[("failure_queue_jobs", f'queue="{FAILURE_QUEUE}"')] == 1
        assert metrics[("queue_ready_jobs", 'queue="work"')] == 0
    finally:
        daemon.stop()
    [parked] = daemon.broker.peek(FAILURE_QUEUE, 10)
    assert parked.id.startswith("S1-")

    # And disqontrolctl finds it by its id and by the id addjob printed
    for job_id in (parked.id, failing):
        shown = ctl(daemon, "failed", "show", job_id)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["body"] == {"n": 99, "fail": True}

    # And `queues` counts the jobs of both shards
    daemon.add("work", [1, 2, 3])
    addjob(daemon, "work", "4")
    listed = ctl_json(daemon, "queues")
    [row] = [r for r in listed["queues"] if r["queue"] == "work"]
    assert (row["ready"], row["failed"]) == (4, 1)
    assert listed["failure_queues"] == [{"queue": FAILURE_QUEUE, "length": 1}]
