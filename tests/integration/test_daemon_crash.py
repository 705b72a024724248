"""Crashes: a killed consumer is replaced and its job comes back; a killed
master takes its consumers with it."""
from __future__ import annotations

import collections
import os
import signal

import pytest

from tests.support.daemon import Daemon, python_worker, running
from tests.support.procs import wait_for

LEASE = 3.0  # s: the broker hands a killed consumer's job out again after this
# s: the timeout of the inline queues whose consumer dies: their jobs come
# back RUN_LEASE_GRACE (15 s) past it, the lease the consumer gives them
CRASH_TIMEOUT = 2
ORPHAN_DEADLINE = 5.0  # s: SPEC §8, consumers exit within seconds of the master


def busy_consumer(daemon: Daemon) -> int:
    def find() -> int:
        return next((pid for pid in daemon.consumer_pids() if " busy " in daemon.title(pid)), 0)
    return wait_for(find, timeout=30, message="a busy consumer")


@pytest.mark.timeout(180)
def test_killed_busy_consumer_is_restarted_and_its_job_runs_again(tmp_path, broker_url):
    # Given one consumer busy with a slow job, and more jobs waiting
    daemon = Daemon(tmp_path, broker_url, {
        "work": {"worker": python_worker(), "max_retries": 5, "job_process_timeout": CRASH_TIMEOUT},
    }, consumer_defaults={"job_batch": 1}).start()
    try:
        [slow_id] = daemon.add("work", [{"n": 0, "sleep": 1.5}], lease=LEASE)
        daemon.add("work", list(range(1, 21)), lease=LEASE)
        victim = busy_consumer(daemon)

        # When the consumer is killed with SIGKILL mid-job
        os.kill(victim, signal.SIGKILL)

        # Then a new consumer replaces it
        wait_for(lambda: daemon.consumer_pids() and victim not in daemon.consumer_pids(),
                 timeout=30, message="a replacement consumer")
        # and every job, the interrupted one too, is done exactly once
        runs = daemon.wait_runs(21, timeout=90)
        counts = collections.Counter(body for body, _ in runs)
        assert sorted(int(b) for b in counts) == list(range(21))
        assert max(counts.values()) == 1
        # and the redelivery was counted as a failure of that job
        [redelivered] = daemon.events("job_redelivered")
        assert f"job={slow_id} " in redelivered and "retries=1" in redelivered
        assert daemon.events("consumer_crashed")
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()


def test_consumers_exit_when_the_master_is_killed(tmp_path):
    # Given a master with two consumers, one busy with a long job
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "work": {"worker": python_worker()},
    }, consumer_defaults={"min_processes": 2, "job_batch": 1}).start(consumers=2)
    try:
        daemon.add("work", [{"n": 0, "sleep": 60}])
        busy_consumer(daemon)
        consumers = daemon.consumer_pids()
        assert len(consumers) == 2

        # When the master is killed with SIGKILL
        daemon.signal(signal.SIGKILL)
        daemon.wait_exit(10)

        # Then no consumer is left after 5 s
        wait_for(lambda: not any(running(pid) for pid in consumers), timeout=ORPHAN_DEADLINE,
                 message="consumers to exit after the master's death")
    finally:
        daemon.stop()


def test_a_job_that_kills_its_consumer_ends_in_the_failure_queue_without_a_crash_loop(tmp_path):
    # Given an inline queue allowing 2 retries, and a job whose worker exits the consumer
    # (a short timeout: the consumer leases an inline job for its run, timeout + RUN_LEASE_GRACE,
    # whatever shorter lease its producer chose, so a dead consumer's job comes back after that)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "work": {"worker": python_worker(), "max_retries": 2, "job_process_timeout": CRASH_TIMEOUT},
    }).start()
    try:
        [job_id] = daemon.add("work", [{"n": 1, "exit": True}], lease=1)

        # Then after 3 deliveries that each crash the consumer it is parked, not run a 4th time
        [(body, metadata)] = wait_for(daemon.failed_jobs, timeout=90, message="the job in the failure queue")
        assert body == {"n": 1, "exit": True}
        assert "died mid-job" in metadata["last-error"]["message"]
        assert len(daemon.events("consumer_crashed")) + len(daemon.events("crash_loop")) == 3
        # restarts were spaced by a growing backoff, logged as a crash loop at the third
        [loop] = daemon.events("crash_loop")
        assert "crashes=3" in loop
        # and the daemon goes on with a healthy consumer
        daemon.add("work", [2])
        assert daemon.wait_runs(1, timeout=30)[0][0] == "2"
        assert daemon.broker.show(job_id) is None
    finally:
        daemon.stop()


@pytest.mark.timeout(180)
def test_a_hung_consumer_is_killed_and_its_job_counted_as_failed(tmp_path):
    # Given an inline queue with a 1 s timeout, no retry, and one consumer
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "work": {"worker": python_worker(), "job_process_timeout": 1, "max_retries": 0},
    }).start()
    try:
        # When a job hangs its consumer where the worker's own timeout cannot reach
        daemon.add("work", [{"n": 1, "block": True}], lease=1)
        hung = busy_consumer(daemon)

        # Then the master kills it past timeout + grace, and a new consumer takes over
        [killed] = daemon.wait_event("consumer_hung", timeout=60)
        assert f"pid={hung} " in killed
        wait_for(lambda: daemon.consumer_pids() and hung not in daemon.consumer_pids(), timeout=30,
                 message="a replacement consumer")
        # and the job is parked as a failure, without a crash backoff for the slot
        [(_, metadata)] = wait_for(daemon.failed_jobs, timeout=60, message="the job in the failure queue")
        assert "died mid-job" in metadata["last-error"]["message"]
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()


HANGING_SETUP_BOOTSTRAP = """
import os, time

def setup_environment():
    if not os.path.exists(os.environ["DQ_OUT"] + ".go"):
        time.sleep(600)  # a database connect that never returns
    return {}

WORKERS = {"handler": lambda environment, name: (lambda job: open(os.environ["DQ_OUT"], "a").write(
    f"{job.body} {time.time()}\\n"))}
"""


@pytest.mark.timeout(120)
def test_a_consumer_hung_while_starting_is_killed_and_replaced(tmp_path):
    # Given a bootstrap file whose setup_environment() hangs, and a start_timeout of 2 s
    (tmp_path / "disqontrol_bootstrap.py").write_text(HANGING_SETUP_BOOTSTRAP)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "work": {"worker": {"type": "inline_python_worker", "name": "handler"}},
    }, consumer_defaults={"start_timeout": 2}).start(consumers=0)
    try:
        [first] = wait_for(daemon.consumer_pids, timeout=30, message="a consumer starting")

        # Then the master kills it once it has been starting past start_timeout without a sign of life
        [hung] = daemon.wait_event("consumer_hung", timeout=60)
        assert f"pid={first} " in hung and "starting_s=" in hung

        # and once the setup can complete, the replacement starts and runs jobs
        (tmp_path / "out.txt.go").touch()
        daemon.wait_event("consumer_ready", timeout=60)
        daemon.add("work", [7])
        assert daemon.wait_runs(1, timeout=30)[0][0] == "7"
        assert first not in daemon.consumer_pids()
    finally:
        daemon.stop()
