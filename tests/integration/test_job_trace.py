"""A job's life in the log, found by grepping the id `addjob` printed: its
retries, its move to the failure queue and its replay by `failed retry` are
new broker jobs with new ids, so their lines carry `first=<that id>`."""
from __future__ import annotations

import re

from tests.integration.ctl_support import ctl
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

FAILURE_QUEUE = "failed-jobs"
# Fails the first run of each job (no retries yet), succeeds on its retries.
ONCE_MODULE = '''
def work(job):
    if job.metadata["retries"] == 0:
        raise RuntimeError("the first run fails")
'''


def lines_of(daemon: Daemon, job_id: str) -> list[str]:
    """The log lines `grep` finds for ``job_id`` (not S-10 for S-1)."""
    pattern = re.compile(rf"={re.escape(job_id)}(\s|$)")
    return [line for line in daemon.log().splitlines() if pattern.search(line)]


def job_events(lines: list[str]) -> list[str]:
    """The consumer's job_* events of ``lines`` (not the worker's own lines)."""
    found = [re.search(r" event=(\S+)", line).group(1) for line in lines]
    return [event for event in found if event.startswith("job_")]


def test_grepping_the_first_id_shows_every_retry_the_failure_queue_and_the_replay(tmp_path):
    # Given a queue that parks a failing job after one retry, and one whose
    # jobs fail once then succeed, both retrying at once
    (tmp_path / "once.py").write_text(ONCE_MODULE)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "never": {"worker": python_worker(), "max_retries": 1, "failure_strategy": "retry_immediately"},
        "once": {"worker": {"type": "inline_python_worker", "name": "once:work"},
                 "failure_strategy": "retry_immediately"},
    }, consumers=[{"queues": ["never", "once"]}]).start()
    try:
        # When a job of each is added
        [never_id] = daemon.add("never", [{"n": 1, "fail": True}])
        [once_id] = daemon.add("once", ["x"])
        daemon.wait_event("job_done")
        daemon.wait_event("job_failed_permanently")

        # Then the retried job's success is found by its first id
        assert job_events(lines_of(daemon, once_id)) == ["job_failed", "job_done"]
        assert f"first={once_id}" in lines_of(daemon, once_id)[-1]

        # When the parked job is replayed from the failure queue (by its first id)
        retried = ctl(daemon, "failed", "retry", never_id)
        assert retried.returncode == 0, retried.stderr
        daemon.wait_event("job_failed_permanently", 2)
        wait_for(lambda: daemon.broker.length(FAILURE_QUEUE) == 1, timeout=30, message="parked again")

        # Then grepping the id addjob printed shows both lives: each failure,
        # each move to the failure queue, the replayed copy's too
        found = job_events(lines_of(daemon, never_id))
        assert found == ["job_failed", "job_failed_permanently"] * 2, lines_of(daemon, never_id)
    finally:
        daemon.stop()
