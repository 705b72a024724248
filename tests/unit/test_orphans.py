"""OrphanedJobs against real processes: the test process plays the master
(they are its children, each in its own session, as job processes are)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from disqontrold.orphans import OrphanedJobs, parent_of
from tests.support.procs import wait_for

GRACE = 2.0  # s: long enough that a stalled machine does not pass it between two lines
IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"


def job_process(code: str = "import time; print(1, flush=True); time.sleep(60)") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"1\n"  # running its code
    return proc


@pytest.mark.timeout(30)
def test_an_orphan_gets_sigterm_and_nothing_else_once_reaped():
    proc = job_process()
    try:
        orphans = OrphanedJobs(os.getpid(), grace=30)
        assert orphans.end([proc.pid], "g") == 1
        assert proc.wait(timeout=10) == -signal.SIGTERM
        orphans.reaped(proc.pid)
        assert not orphans and orphans.tick() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(30)
def test_an_orphan_that_ignores_sigterm_gets_sigkill_after_its_grace():
    proc = job_process(IGNORES_TERM)
    try:
        orphans = OrphanedJobs(os.getpid(), grace=GRACE)
        orphans.end([proc.pid], "g")
        assert orphans.tick() is not None  # within the grace: still waiting
        assert proc.poll() is None  # SIGTERM alone did not end it
        wait_for(lambda: orphans.tick() is None, timeout=10, message="the grace over")
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_is_not_our_child_or_is_skipped_is_left_alone():
    orphans = OrphanedJobs(os.getpid())
    assert parent_of(os.getpid()) == os.getppid()
    assert orphans.end([os.getpid(), 1], "g") == 0  # ourselves and init: not our children
    assert orphans.end([], "g") == 0 and not orphans
    assert parent_of(2 ** 22 + 1) is None  # above any Linux pid: gone
    proc = job_process()
    try:
        assert orphans.end([proc.pid], "g", skip=[proc.pid]) == 0  # e.g. already reaped this round
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
