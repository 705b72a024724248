"""Autoscaling with the real daemon: a burst of slow jobs raises a group to
max_processes, an idle stretch brings it back to min, ``autoscale: false``
stays at min, and SIGTTIN/SIGTTOU work within the bounds either way."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from typing import Any

from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

MAX = 3
IDLE_SECONDS = 1.0  # autoscale_idle_seconds: keeps the way down short
BURST = 36  # x JOB_SECONDS: 18 s of work, well past DRAIN_SECONDS for 1 or 2 processes
JOB_SECONDS = 0.5
SCALE_TIMEOUT = 30.0  # s: generous on a loaded 2-core machine
LONG_JOB_SECONDS = 8  # outlasts the hold and two idle stretches of IDLE_SECONDS


def parse_fields(line: str) -> dict[str, str]:
    """key=value pairs of a log line, quoted values unquoted."""
    return {key: value.strip('"') for key, value in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)}


def sqlite(tmp_path) -> str:
    return f"sqlite://{tmp_path}/jobs.db"


def start(tmp_path, **consumer: Any) -> Daemon:
    settings = {"min_processes": 1, "max_processes": MAX, "job_batch": 1, "autoscale": True,
                "autoscale_idle_seconds": IDLE_SECONDS, **consumer}
    return Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}},
                  consumer_defaults=settings).start()


def ctl_status(daemon: Daemon) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "disqontrold.ctl", "--config", str(daemon.config_path),
                          "status", "--json"], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def test_a_burst_of_slow_jobs_scales_up_to_max_then_idle_brings_it_back_to_min(tmp_path):
    # Given an autoscaled group of 1..3 processes running 1
    daemon = start(tmp_path)
    try:
        assert len(daemon.consumer_pids()) == 1
        # When a burst of slow jobs arrives
        daemon.add("work", [{"n": n, "sleep": JOB_SECONDS} for n in range(BURST)])

        # Then the group reaches max within seconds, and the change is logged with its figures
        wait_for(lambda: len(daemon.consumer_pids()) == MAX, timeout=SCALE_TIMEOUT, message=f"{MAX} consumers")
        up = parse_fields(daemon.wait_event("autoscale")[0])
        assert (up["group"], up["from"]) == ("work", "1") and 1 < int(up["to"]) <= MAX
        assert "backlog=" in up["reason"] and "busy=1/1" in up["reason"]
        [group] = ctl_status(daemon)["groups"]
        assert (group["group"], group["min"], group["max"], group["autoscale"]) == ("work", 1, MAX, True)
        assert group["last_scaling"]["reason"].startswith("autoscale: backlog=")

        # and every job runs once; once the queue is drained and the processes idle,
        # the group steps back down to min, one process at a time
        daemon.wait_runs(BURST, timeout=60)
        wait_for(lambda: len(daemon.consumer_pids()) == 1, timeout=SCALE_TIMEOUT, message="back to 1 consumer")
        downs = [parse_fields(line) for line in daemon.events("autoscale") if "reason=\"backlog=0" in line]
        assert [(d["from"], d["to"]) for d in downs][-2:] == [("3", "2"), ("2", "1")]
        [group] = ctl_status(daemon)["groups"]
        assert (group["processes"], group["target"]) == (1, 1)
        assert sorted(int(body) for body, _ in daemon.runs()) == list(range(BURST))
        assert not daemon.events("consumer_crashed") and not daemon.events("job_failed")
    finally:
        daemon.stop()


def test_autoscale_false_stays_at_min_under_a_backlog(tmp_path):
    # Given a group of 1..3 processes with autoscale off
    daemon = start(tmp_path, autoscale=False)
    try:
        # When slow jobs pile up, for long enough that an autoscaler would have acted
        daemon.add("work", [{"n": n, "sleep": JOB_SECONDS} for n in range(8)])
        daemon.wait_runs(4, timeout=60)
        # Then one process ran them all and no scaling happened
        assert len(daemon.consumer_pids()) == 1
        assert not daemon.events("autoscale") and not daemon.events("consumers_scaled")
        [group] = ctl_status(daemon)["groups"]
        assert (group["autoscale"], group["processes"], group["last_scaling"]) == (False, 1, None)
    finally:
        daemon.stop()


def send(daemon: Daemon, signum: int, expected: int) -> None:
    handled = len(daemon.events("signal_received"))
    daemon.signal(signum)
    wait_for(lambda: len(daemon.events("signal_received")) > handled, timeout=10,
             message="the master to handle the signal")
    wait_for(lambda: len(daemon.consumer_pids()) == expected, timeout=SCALE_TIMEOUT,
             message=f"{expected} consumers")


def test_sigttin_sigttou_work_within_the_bounds_with_autoscale_on(tmp_path):
    # Given an idle autoscaled group of 1..3 that steps down only after a long idle stretch
    daemon = start(tmp_path, autoscale_idle_seconds=60)
    try:
        # When SIGTTIN comes three times, then SIGTTOU three times
        for expected in (2, 3, 3):
            send(daemon, signal.SIGTTIN, expected)
        held = daemon.wait_event("autoscale_held")
        assert "processes=" in held[-1]
        [group] = ctl_status(daemon)["groups"]
        assert (group["target"], group["last_scaling"]["reason"]) == (MAX, "SIGTTIN")
        for expected in (2, 1, 1):
            send(daemon, signal.SIGTTOU, expected)
        # Then the count stayed within 1..3, the autoscaler held the manual
        # targets instead of undoing them, and the last consumer still works
        assert len(daemon.events("consumers_scaled")) == 4
        assert not daemon.events("autoscale")
        daemon.add("work", [5])
        assert daemon.wait_runs(1)[0][0] == "5"
    finally:
        daemon.stop()


def test_stepping_down_retires_idle_processes_and_leaves_the_busy_one_its_job(tmp_path):
    # Given an autoscaled group raised to 3 by hand, one of them busy with a long job
    daemon = start(tmp_path)
    try:
        for expected in (2, 3):
            send(daemon, signal.SIGTTIN, expected)
        daemon.add("work", [{"n": 7, "sleep": LONG_JOB_SECONDS}])
        busy_pid = wait_for(lambda: [p for p in daemon.consumer_pids() if " busy " in daemon.title(p)],
                            timeout=SCALE_TIMEOUT, message="a busy consumer")[0]

        # When the group idles otherwise: the hold ends and the autoscaler steps down
        wait_for(lambda: daemon.consumer_pids() == [busy_pid], timeout=SCALE_TIMEOUT,
                 message="only the busy consumer left")

        # Then the idle ones went first, while the busy one kept its job, which ran once
        assert daemon.runs() == [], "the scale-down came after the job instead of during it"
        assert [body for body, _ in daemon.wait_runs(1, timeout=60)] == ["7"]
        assert not daemon.events("consumer_kill") and not daemon.events("job_failed")
    finally:
        daemon.stop()
