"""The master's operations API through the real control socket client."""
from __future__ import annotations

import os
import re
import signal

import pytest

from tests.integration.ctl_support import ctl, ctl_status
from tests.support.daemon import Daemon, command_worker, python_worker
from tests.support.procs import wait_for


def test_status_reload_and_stop_through_disqontrolctl(tmp_path):
    # Given a daemon with two consumers that has done a job
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": 2}).start(consumers=2)
    try:
        daemon.add("work", [1])
        daemon.wait_runs(1)
        daemon.wait_event("control_socket_open")

        # When status is asked
        status = ctl_status(daemon)

        # Then it shows the master and both consumers with their counters
        assert status["master"]["pid"] == daemon.pid
        assert status["master"]["generation"] == 1
        consumers = status["consumers"]
        assert sorted(c["pid"] for c in consumers) == sorted(daemon.consumer_pids())
        assert sum(c["done"] for c in consumers) == 1
        assert {c["state"] for c in consumers} == {"idle"}

        # When a reload is asked, it is taken and a new generation runs
        reloaded = ctl(daemon, "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "taken" in reloaded.stdout
        assert ctl_status(daemon)["master"]["generation"] == 2

        # When a stop is asked, the master is gone with exit code 0
        assert ctl(daemon, "stop").returncode == 0
        assert daemon.wait_exit(30) == 0
    finally:
        daemon.stop()


LONG_JOB_AGE = 3  # s job A has run before B starts


@pytest.mark.timeout(120)
def test_status_names_the_oldest_running_job_of_a_job_window(tmp_path):
    # Given a consumer whose job window runs a long command job A
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"cmd": {"worker": command_worker(tmp_path)}},
                    consumer_defaults={"job_batch": 4}).start()
    try:
        [job_a] = daemon.add("cmd", [{"n": 1, "sleep": True}])
        [pid_a] = wait_for(lambda: ctl_status(daemon)["consumers"][0]["job_pids"], timeout=30,
                           message="job A's process")
        wait_for(lambda: ctl_status(daemon)["consumers"][0]["oldest_job_age"] >= LONG_JOB_AGE, timeout=30,
                 message="job A running a while")
        # When a second long job B starts beside it, later
        [job_b] = daemon.add("cmd", [{"n": 2, "sleep": True}])
        wait_for(lambda: len(ctl_status(daemon)["consumers"][0]["job_pids"]) == 2, timeout=30,
                 message="job B's process beside A's")

        # Then status names A, the one that has run longest (a stuck job
        # among others that come and go was never named: the latest was)
        assert ctl_status(daemon)["consumers"][0]["job"] == job_a
        table = ctl(daemon, "status")
        age = re.search(rf"busy {job_a} for (\d+) s", table.stdout)
        assert age and int(age.group(1)) >= LONG_JOB_AGE, table.stdout  # A's age, not B's
        # and once A has ended, B
        os.kill(pid_a, signal.SIGKILL)
        wait_for(lambda: ctl_status(daemon)["consumers"][0]["job"] == job_b, timeout=30,
                 message=f"status naming {job_b} after {job_a} ended")
    finally:
        daemon.signal(signal.SIGQUIT)  # fast: the sleeping jobs need not finish
        daemon.stop()
