"""A queue paused because its jobs cannot start (SPEC difference 31: here
its program is missing, as during a deploy), against a real daemon: status
and metrics show it, why and for how long; the autoscaler does not add
processes for its backlog (at TasksMax each would take more of the pids
that are short)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from tests.integration.ctl_support import ctl, ctl_status
from tests.integration.test_held_queues import HOLD_SH  # a job that runs until ./release exists
from tests.support.daemon import Daemon
from tests.support.procs import wait_for


def paused_daemon(tmp_path: Path, **consumer: object) -> Daemon:
    """One group of a command queue whose program is deleted once started (gone) and one that runs (cmd)."""
    (tmp_path / "hold.sh").write_text(HOLD_SH)
    gone = tmp_path / "bin" / "gone"
    gone.parent.mkdir()
    gone.write_text("#!/bin/sh\n")
    gone.chmod(0o755)
    return Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "gone": {"worker": {"type": "command", "command": str(tmp_path / "bin" / "gone")}},
        "cmd": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'hold.sh'}"},
                "job_process_timeout": 600},
    }, consumers=[{"queues": ["gone", "cmd"]}], consumer_defaults=consumer)


def ctl_showing(daemon: Daemon, command: str, text: str) -> subprocess.CompletedProcess:
    """``disqontrolctl command``'s first answer whose output has ``text``."""
    def answer() -> Optional[subprocess.CompletedProcess]:
        out = ctl(daemon, command)
        return out if text in out.stdout else None
    return wait_for(answer, timeout=30, message=f"{text!r} in {command}")


@pytest.mark.timeout(60)
def test_status_and_metrics_show_a_paused_queue_with_its_errno_and_pause(tmp_path):
    # Given a group whose first queue's program is missing (a deploy under way)
    daemon = paused_daemon(tmp_path).start()
    (tmp_path / "bin" / "gone").unlink()
    try:
        [consumer] = daemon.consumer_pids()

        # When a job of it cannot start (given back, the queue paused)
        daemon.add("gone", ["a"])
        daemon.wait_event("job_start_deferred", timeout=30)
        # (the job is tried again at each pause's end: polled, a look may fall between two pauses)
        status = wait_for(lambda: ctl_status(daemon)["paused"] or None, timeout=30, message="a paused queue")
        text = ctl_showing(daemon, "status", "PAUSED QUEUE")
        metrics = ctl_showing(daemon, "metrics", 'disqontrol_queue_paused{queue="gone"} 1')

        # Then status shows the paused queue, why (the errno and the program), since when and for how long
        [paused] = status
        assert (paused["queue"], paused["group"], paused["consumers"], paused["errno"]) == (
            "gone", "gone+cmd", [consumer], "ENOENT")
        assert str(tmp_path / "bin" / "gone") in paused["error"]
        assert 0.5 <= paused["pause"] <= 30 and paused["paused_for"] >= 0 and paused["resumes_in"] >= 0
        assert text.returncode == 0, text.stderr
        [row] = [line for line in text.stdout.splitlines() if line.startswith("gone ") and "ENOENT" in line]
        assert re.search(r"\bgone\+cmd +\d+ +ENOENT +\d+ s +[\d.]+ s +\d+ s\b", row), text.stdout
        # and the metrics a gauge per queue
        assert 'disqontrol_queue_paused{queue="cmd"} 0' in metrics.stdout
        # and no job failed
        assert not daemon.events("job_failed")
    finally:
        daemon.stop()


@pytest.mark.timeout(90)
def test_the_autoscaler_does_not_count_a_paused_queue_s_backlog(tmp_path):
    # Given an autoscaled group (1..3) whose first queue is paused (its
    # program missing), its only process then busy with a command job
    daemon = paused_daemon(tmp_path, autoscale=True, max_processes=3, job_batch=1,
                           autoscale_idle_seconds=600).start()
    (tmp_path / "bin" / "gone").unlink()
    try:
        daemon.add("gone", list(range(30)))
        daemon.wait_event("job_start_deferred", timeout=30)
        # (reserved from gone first, the hold job starts only while gone is paused)
        daemon.add("cmd", ["hold"])
        wait_for(lambda: (tmp_path / "held").exists(), timeout=30, message="the command job running")

        # When jobs pile up on the command queue too
        daemon.add("cmd", list(range(10)))

        # Then the scaling up that follows counts the command queue's backlog only
        up = daemon.wait_event("autoscale", timeout=30)[0]
        assert "backlog=10 " in up, up
    finally:
        (tmp_path / "release").touch()
        daemon.stop()
