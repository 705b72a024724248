"""The job window with real command processes: jobs end and are reported one
by one, each keeps its own timeout while others start, and closing the
window leaves no process behind. Plus its reserve pacing (pure logic)."""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from disqontrol_client.job import Job, fresh_metadata
from disqontrold.jobwindow import REFILL_INTERVAL, JobWindow, RefillPace, StartDeferred
from disqontrold.workers.command import CommandWorker
from disqontrold.workers.jobprocs import NEVER
from tests.support.daemon import running
from tests.support.procs import wait_for

LONG = 60.0  # s: a job that would outlive the test if nothing killed it
KILL_GRACE = 0.2  # s: quick escalation to SIGKILL in these tests


def job(body: object, job_id: str) -> Job:
    return Job(body, "q", fresh_metadata(now=1000), id=job_id)


def shell_worker(script: str) -> CommandWorker:
    """A worker running ``sh -c script``; the job's body is $2 (--body=...)."""
    return CommandWorker(f"/bin/sh -c '{script}' sh", "q", kill_grace=KILL_GRACE)


def collect(window: JobWindow, count: int, timeout: float = 30.0) -> dict[str, object]:
    ended: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < count and time.monotonic() < deadline:
        ended.update((j.id, outcome) for j, outcome in window.wait(deadline - time.monotonic()))
    return ended


def test_the_window_knows_which_job_ids_it_runs():
    # (the consumer asks before starting a delivery: a second delivery of a
    # running job must not start it beside itself)
    worker = shell_worker('case "$2" in *long*) sleep 60;; esac')
    window = JobWindow(4)
    try:
        window.start(worker, job("long", "L"), LONG)
        window.start(worker, job(1, "Q1"), LONG)
        assert window.running("L") and window.running("Q1") and not window.running("Q2")

        assert list(collect(window, 1)) == ["Q1"]
        assert not window.running("Q1") and window.running("L")
    finally:
        window.close()
    assert not window.running("L")


def test_jobs_are_reported_as_they_end_while_a_long_one_runs():
    # Given a window running a long job and a quick one
    worker = shell_worker('case "$2" in *long*) sleep 60;; esac')
    window = JobWindow(4)
    try:
        assert window.start(worker, job("long", "L"), LONG) is None
        assert window.start(worker, job(1, "Q1"), LONG) is None
        assert window.free == 2

        # When it waits, Then the quick job comes back alone, successful
        [(first, outcome)] = window.wait(30)
        assert first.id == "Q1" and outcome.ok
        # and another started now also ends before the long one
        window.start(worker, job(2, "Q2"), LONG)
        assert list(collect(window, 1)) == ["Q2"]
        assert len(window) == 1 and window.wait(0) == []
    finally:
        window.close()


def test_each_job_keeps_its_own_timeout_in_the_window():
    # Given a job with a 0.3 s timeout started beside one with a long timeout
    worker = shell_worker('case "$2" in *hang*) sleep 60;; *) sleep 1;; esac')
    window = JobWindow(4)
    try:
        window.start(worker, job("hang", "H"), 0.3)
        window.start(worker, job(1, "OK"), LONG)

        # When the window is tended
        ended = collect(window, 2)

        # Then the hung one is killed for its timeout, the other succeeds
        assert ended["H"].ok is False and ended["H"].error.startswith("killed after 0.3s timeout")
        assert ended["OK"].ok
    finally:
        window.close()


def test_a_job_that_cannot_start_fails_alone(tmp_path: Path):
    # Given a worker whose program lost its execute permission after the check
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    worker = CommandWorker(str(program), "q")
    program.chmod(0o644)
    window = JobWindow(4)
    try:
        # When a job is started, Then it fails at once naming the program
        outcome = window.start(worker, job(1, "J"), LONG)
        assert outcome is not None and not outcome.ok and str(program) in outcome.error
        assert len(window) == 0
    finally:
        window.close()


def test_a_job_whose_program_is_missing_is_deferred_not_failed(tmp_path: Path):
    # Given a worker whose program vanished after the check (a deploy in progress)
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    worker = CommandWorker(str(program), "q")
    program.unlink()
    window = JobWindow(4)
    try:
        # When a job is started, Then the window says to try later, naming the program
        with pytest.raises(StartDeferred, match=str(program)):
            window.start(worker, job(1, "J"), LONG)
        assert len(window) == 0
    finally:
        window.close()


def test_closing_the_window_kills_what_still_runs(tmp_path: Path):
    # Given a window running a job that started a grandchild
    pid_file = tmp_path / "grandchild.pid"
    worker = shell_worker(f"sleep 60 & echo $! > {pid_file}; wait")
    window = JobWindow(2)
    window.start(worker, job(1, "J"), LONG)
    grandchild = wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30,
                          message="the grandchild's pid")

    # When the window is closed
    window.close()

    # Then the job's whole process group is gone
    wait_for(lambda: not running(int(grandchild)), timeout=30, message="the grandchild killed")
    assert len(window) == 0


def test_reserves_are_paced_by_the_room_and_by_what_the_last_one_got():
    pace = RefillPace(4)
    # A full window has no room: no reserve
    assert pace.next_refill(free=0) == NEVER
    # Half free after a reserve that filled the window: at once
    pace.reserved(100.0, asked=4, got=4)
    assert pace.next_refill(free=2) == 100.0
    # After one that came back short (the queues ran dry): a REFILL_INTERVAL later
    pace.reserved(100.0, asked=4, got=1)
    assert pace.next_refill(free=2) == 100.0 + REFILL_INTERVAL
    # Less than half free: a REFILL_INTERVAL after the last reserve, whatever it got
    pace.reserved(200.0, asked=4, got=4)
    assert pace.next_refill(free=1) == 200.0 + REFILL_INTERVAL
    # After one the broker refused: its backoff, whatever the room
    pace.failed(300.0, backoff=4.0)
    assert pace.next_refill(free=2) == 304.0 and pace.next_refill(free=1) == 304.0
    # and a success ends the backoff
    pace.reserved(305.0, asked=4, got=4)
    assert pace.next_refill(free=2) == 305.0


def test_no_descriptor_leaks_over_many_jobs():
    # Given a window that ran many quick jobs
    jobs = 40
    worker = shell_worker("echo out; echo err >&2")
    before = len(os.listdir("/proc/self/fd"))
    window = JobWindow(8)
    ended = {}
    try:
        for n in range(jobs):
            while window.free == 0:
                ended.update((j.id, outcome) for j, outcome in window.wait(30))
            window.start(worker, job(n, str(n)), LONG)
        ended.update(collect(window, len(window)))
    finally:
        window.close()
    # Then every job's pipes and pidfd are closed, and its output was read
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(ended) == jobs
    assert all(o.ok and o.details["stdout_tail"] == "out\n" and o.details["stderr_tail"] == "err\n"
               for o in ended.values())


def test_a_job_whose_process_cannot_be_watched_fails_and_leaves_nothing(monkeypatch):
    # Given a worker whose job process starts but cannot get a pidfd (EMFILE)
    worker = shell_worker("sleep 60")
    pids: list[int] = []

    def no_pidfd(pid: int) -> int:
        pids.append(pid)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    before = len(os.listdir("/proc/self/fd"))
    window = JobWindow(2)
    try:
        # When a job is started and the window looks at it
        assert window.start(worker, job(1, "J"), LONG) is None
        [(failed, outcome)] = window.wait(30)

        # Then it fails alone, as unable to start
        assert failed.id == "J" and not outcome.ok and outcome.error.startswith("cannot start /bin/sh")
        assert len(window) == 0
    finally:
        window.close()
    # and its process was killed and reaped, its pipes closed
    [pid] = pids
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert len(os.listdir("/proc/self/fd")) == before
