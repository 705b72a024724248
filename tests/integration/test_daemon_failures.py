"""Failed jobs: retried on the backoff schedule (shrunk with backoff_scale),
then parked in the failure queue with their last error."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from disqontrol_client.job import LAST_ERROR, ORIGINAL_ID, ORIGINAL_QUEUE, RETRIES
from tests.support.cgroups import needs_pids_cgroup, no_more_processes
from tests.support.daemon import Daemon, command_worker, python_worker
from tests.support.procs import wait_for

SCALE = 0.05  # retry n waits 4**n * SCALE s (+ up to 10 %)
SLACK = 10.0  # s a loaded machine may add to any wait
CPU_WINDOW = 2.0  # s a paused consumer's CPU time is measured over
MAX_CPU_SHARE = 0.2  # of CPU_WINDOW: a sleeping consumer uses next to none


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite://{tmp_path}/jobs.db"


def parked(daemon: Daemon, count: int = 1):
    return wait_for(lambda: len(daemon.failed_jobs()) >= count and daemon.failed_jobs(),
                    timeout=60, message="jobs in the failure queue")


def test_failing_job_is_retried_on_schedule_then_parked_with_its_error(tmp_path, sqlite_url):
    # Given an inline queue allowing 2 retries on a 20x faster schedule
    daemon = Daemon(tmp_path, sqlite_url, {
        "flaky": {"worker": python_worker(), "max_retries": 2, "backoff_scale": SCALE},
    }).start()
    try:
        # When a job that always fails is added
        [job_id] = daemon.add("flaky", [{"n": 7, "fail": True}])

        # Then it runs 3 times, each wait at least its retry delay
        [(body, stored)] = parked(daemon)
        runs = daemon.wait_runs(3)
        assert [b for b, _ in runs] == ["7", "7", "7"]
        gaps = [later[1] - earlier[1] for earlier, later in zip(runs, runs[1:])]
        for n, gap in enumerate(gaps, start=1):
            assert 4**n * SCALE <= gap <= 4**n * SCALE * 1.1 + SLACK, (n, gaps)
        # and lands in the failure queue with its last error
        assert body == {"n": 7, "fail": True}
        assert "asked to fail 7" in stored[LAST_ERROR]["message"]
        assert stored[ORIGINAL_QUEUE] == "flaky"
        assert stored[ORIGINAL_ID] == job_id
        assert stored[RETRIES] == 3
        assert len(daemon.events("job_failed")) == 2
        assert len(daemon.events("job_failed_permanently")) == 1
        assert daemon.broker.length("flaky") == 0
    finally:
        daemon.stop()


def test_retry_immediately_retries_without_waiting(tmp_path, sqlite_url):
    # Given a command queue with retry_immediately and 3 retries
    daemon = Daemon(tmp_path, sqlite_url, {
        "now": {"worker": command_worker(tmp_path), "max_retries": 3,
                "failure_strategy": "retry_immediately"},
    }).start()
    try:
        # When a job whose command exits 3 is added
        daemon.add("now", [{"n": 1, "fail": True}])

        # Then it runs 4 times back to back and is parked with the exit code
        [(_, stored)] = parked(daemon)
        runs = daemon.wait_runs(4)
        assert len(runs) == 4
        assert runs[-1][1] - runs[0][1] < SLACK
        assert "exit code 3" in stored[LAST_ERROR]["message"]
        assert stored[LAST_ERROR]["exit_code"] == 3
    finally:
        daemon.stop()


def test_job_past_its_timeout_is_killed_and_counted_as_failed(tmp_path, sqlite_url):
    # Given a command queue with a 1 s timeout and no retry
    daemon = Daemon(tmp_path, sqlite_url, {
        "slow": {"worker": command_worker(tmp_path), "job_process_timeout": 1, "max_retries": 0},
    }).start()
    try:
        # When its command hangs
        daemon.add("slow", [{"n": 1, "sleep": True}])

        # Then it is killed and parked as a timeout, never recorded as done
        [(_, stored)] = parked(daemon)
        assert "timeout" in stored[LAST_ERROR]["message"]
        assert daemon.runs() == []
        assert not daemon.events("job_done")
        # and the consumer is still the same process, ready for more
        daemon.add("slow", [2])
        assert daemon.wait_runs(1)[0][0] == "2"
    finally:
        daemon.stop()


def test_job_with_foreign_metadata_values_is_retried_then_parked(tmp_path, sqlite_url):
    # Given a job another library wrote in our envelope, its creation time a date string
    daemon = Daemon(tmp_path, sqlite_url, {
        "flaky": {"worker": python_worker(), "max_retries": 1, "backoff_scale": SCALE},
    }).start()
    try:
        payload = json.dumps({"body": {"n": 4, "fail": True},
                              "metadata": {"creation-time": "2026-11-28T10:00:00Z", "retries": "0"}})
        daemon.broker.add("flaky", payload.encode())

        # Then it fails, is retried once and parked, as any job (it used to
        # crash its consumer at the first failure, and again at each delivery)
        [(body, stored)] = parked(daemon)
        assert body == {"n": 4, "fail": True}
        assert stored[RETRIES] == 2 and "asked to fail 4" in stored[LAST_ERROR]["message"]
        assert len(daemon.runs()) == 2
        assert daemon.events("consumer_crashed") == []
    finally:
        daemon.stop()


EXITS_MODULE = """
import sys

def exits(job):
    sys.exit(3)  # user code calling sys.exit(): a failure of this job, not of the consumer

def interrupts(job):
    raise KeyboardInterrupt("from the worker")
"""


@pytest.mark.parametrize("name, error, line", [
    ("exits", "SystemExit: 3", "sys.exit(3)"),
    ("interrupts", "worker raised KeyboardInterrupt: from the worker", "raise KeyboardInterrupt"),
])
def test_an_inline_job_raising_a_base_exception_fails_alone_with_its_error(tmp_path, sqlite_url, name, error, line):
    # Given an inline queue without retries whose worker raises a BaseException
    (tmp_path / "dqexits.py").write_text(EXITS_MODULE)
    daemon = Daemon(tmp_path, sqlite_url, {
        "exits": {"worker": {"type": "inline_python_worker", "name": f"dqexits:{name}"}, "max_retries": 0},
    }).start()
    try:
        # When a job is added
        [job_id] = daemon.add("exits", [1])

        # Then it is parked at once (not after its 80 s lease) with that error
        [(_, stored)] = wait_for(daemon.failed_jobs, timeout=30, message="the job in the failure queue")
        assert stored[LAST_ERROR]["message"] == error
        assert line in stored[LAST_ERROR]["traceback"]
        assert stored[ORIGINAL_ID] == job_id
        # and the consumer survived it: no crash, no restart
        assert not daemon.events("consumer_crashed")
        assert not daemon.events("consumer_exited")
    finally:
        daemon.stop()


FLAKY_HANDLER_MODULE = """
import os

def handle(job):
    # fails the first time it sees a job, succeeds the second
    mark = os.path.join(os.path.dirname(os.environ["DQ_OUT"]), "handled-once")
    if not os.path.exists(mark):
        open(mark, "w").close()
        raise RuntimeError("transient trouble in the failure handler")
    with open(os.environ["DQ_OUT"], "a") as out:
        out.write(f"handled {job.metadata['original-queue']}\\n")
"""


def test_a_consumed_failure_queue_gives_its_jobs_their_own_retries(tmp_path, sqlite_url):
    # Given a queue parking its jobs in "dead" after 2 retries, and "dead" itself
    # configured as a queue whose handler allows 2 retries and fails once
    (tmp_path / "dqhandler.py").write_text(FLAKY_HANDLER_MODULE)
    daemon = Daemon(tmp_path, sqlite_url, {
        "work": {"worker": command_worker(tmp_path), "max_retries": 2, "backoff_scale": SCALE,
                 "failure_queue": "dead"},
        "dead": {"worker": {"type": "inline_python_worker", "name": "dqhandler:handle"}, "max_retries": 2,
                 "backoff_scale": SCALE, "failure_queue": "dead-dead"},
    }).start(consumers=2)
    try:
        # When a job fails its 3 runs on "work"
        daemon.add("work", [{"n": 1, "fail": True}])

        # Then "dead" retries it after its handler's first failure (its count starts
        # afresh: the 3 failures on "work" are not held against it) and handles it
        wait_for(lambda: "handled work" in daemon.out_path.read_text(), timeout=30,
                 message="the failure handler's second run")
        assert daemon.failed_jobs("dead-dead") == []
        [retried] = daemon.events("job_failed")[-1:]
        assert "queue=dead " in retried and "attempt=1 " in retried
    finally:
        daemon.stop()


SETUP_FAILS_UNTIL_FLAG_BOOTSTRAP = """
import os, time

def setup_environment():
    if not os.path.exists(os.environ["DQ_OUT"] + ".db-up"):
        raise RuntimeError("database is down")
    return {"db": "up"}

WORKERS = {"handler": lambda environment, name: (lambda job: open(os.environ["DQ_OUT"], "a").write(
    f"{job.body}-{environment['db']} {time.time()}\\n"))}
"""


@pytest.mark.timeout(90)
def test_a_raising_setup_environment_holds_its_queue_s_jobs_and_not_the_group(tmp_path, sqlite_url):
    # Given a group of a Python queue and a command queue, and a bootstrap
    # file whose setup_environment() raises while "the database is down"
    (tmp_path / "disqontrol_bootstrap.py").write_text(SETUP_FAILS_UNTIL_FLAG_BOOTSTRAP)
    daemon = Daemon(tmp_path, sqlite_url, {
        "py": {"worker": {"type": "inline_python_worker", "name": "handler"}, "max_retries": 0},
        "cmd": {"worker": command_worker(tmp_path)},
    }, consumers=[{"queues": ["py", "cmd"]}]).start()
    try:
        # When a job of each queue is added
        daemon.add("py", [1])
        daemon.add("cmd", [2])

        # Then the command job runs, while the Python job waits in its queue,
        # its retries untouched (not failed, not parked), and nothing crash-loops
        assert daemon.wait_runs(1, timeout=30)[0][0] == "2"
        [failed] = daemon.events("worker_setup_failed")
        assert "queue=py " in failed and "RuntimeError: database is down" in failed
        assert daemon.broker.stats(["py"])[0].ready == 1
        assert daemon.failed_jobs() == [] and not daemon.events("job_failed")
        assert not daemon.events("consumer_crashed")

        # When the database is back
        (tmp_path / "out.txt.db-up").touch()

        # Then a later setup try works and the held job runs, once
        runs = daemon.wait_runs(2, timeout=60)
        assert sorted(body for body, _ in runs) == ["1-up", "2"]
        [recovered] = daemon.wait_event("worker_setup_recovered")
        assert "queue=py " in recovered
        wait_for(lambda: daemon.broker.stats(["py"])[0].in_flight == 0, timeout=30, message="the job acked")
        assert daemon.failed_jobs() == []
    finally:
        daemon.stop()


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds the file now at ``path`` open."""
    inode = path.stat().st_ino if path.exists() else None
    fds = Path(f"/proc/{pid}/fd")
    return any(os.stat(fd).st_ino == inode for fd in fds.iterdir() if fd.resolve().name == path.name)


@pytest.mark.timeout(60)
def test_a_consumer_whose_every_queue_is_held_reopens_its_log_after_rotation(tmp_path, sqlite_url):
    # Given a consumer whose only queue is held (its setup_environment() raises)
    (tmp_path / "disqontrol_bootstrap.py").write_text(SETUP_FAILS_UNTIL_FLAG_BOOTSTRAP)
    daemon = Daemon(tmp_path, sqlite_url, {
        "py": {"worker": {"type": "inline_python_worker", "name": "handler"}},
    }).start()
    try:
        daemon.wait_event("worker_setup_failed")
        [consumer] = daemon.consumer_pids()

        # When logrotate moves the log away and sends SIGUSR1
        daemon.log_path.rename(daemon.log_path.with_suffix(".log.1"))
        daemon.signal(signal.SIGUSR1)
        daemon.wait_event("logs_reopened")

        # Then the consumer writes to the new file too: its worker_setup_failed
        # lines, the ones that say why the group runs nothing, are not lost
        wait_for(lambda: _has_open(consumer, daemon.log_path), timeout=15,
                 message="the held consumer has the new log file open")
    finally:
        daemon.stop()


@needs_pids_cgroup
def test_jobs_that_cannot_start_for_want_of_processes_are_given_back_not_failed(tmp_path):
    # Given a daemon with command jobs that retry at once
    queues = {"cmd": {"worker": command_worker(tmp_path), "failure_strategy": "retry_immediately",
                      "max_retries": 3}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues).start()
    try:
        # When jobs are added while no process can be started (its pids cgroup is full)
        with no_more_processes([daemon.pid, *daemon.consumer_pids()], tmp_path.name):
            daemon.add("cmd", range(3))
            wait_for(lambda: len(daemon.events("job_start_deferred")) >= 2 or daemon.events("job_failed"),
                     timeout=30, message="the jobs tried")

            # Then none failed
            assert not daemon.events("job_failed") and not daemon.failed_jobs()

        # and once processes can start again, each runs once
        runs = daemon.wait_runs(3)
        assert sorted(int(body) for body, _ in runs) == [0, 1, 2]
        assert not daemon.events("job_failed")
    finally:
        daemon.stop()


def test_jobs_whose_program_is_missing_for_a_moment_are_given_back_not_failed(tmp_path):
    # Given command jobs that retry at once, whose program a deploy removes and then puts back
    program = tmp_path / "bin" / "worker"
    program.parent.mkdir()
    program.write_text('#!/bin/sh\nprintf "%s 0\\n" "${2#--body=}" >> "$DQ_OUT"\n')
    program.chmod(0o755)
    queues = {"cmd": {"worker": {"type": "command", "command": str(program)},
                      "failure_strategy": "retry_immediately", "max_retries": 3}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues).start()
    try:
        kept = program.read_bytes()
        program.unlink()

        # When jobs are added meanwhile
        daemon.add("cmd", range(3))
        wait_for(lambda: len(daemon.events("job_start_deferred")) >= 2 or daemon.events("job_failed"),
                 timeout=30, message="the jobs tried")

        # Then none failed; once the program is back, each runs once
        assert not daemon.events("job_failed") and not daemon.failed_jobs()
        program.write_bytes(kept)
        program.chmod(0o755)
        runs = daemon.wait_runs(3)
        assert sorted(int(body) for body, _ in runs) == [0, 1, 2]
        assert not daemon.events("job_failed")
    finally:
        daemon.stop()


def test_a_queue_whose_program_is_missing_does_not_hold_back_the_rest_of_its_group(tmp_path):
    # Given one group of two command queues, the first one's program missing (a deploy under way)
    missing = tmp_path / "bin" / "gone"
    missing.parent.mkdir()
    missing.write_text("#!/bin/sh\n")
    missing.chmod(0o755)
    queues = {"a": {"worker": {"type": "command", "command": str(missing)}}, "b": {"worker": command_worker(tmp_path)}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues, consumers=[{"queues": ["a", "b"]}],
                    consumer_defaults={"job_batch": 4}).start()
    try:
        missing.unlink()

        # When both queues get jobs, the first queue's first
        daemon.add("a", range(20))
        daemon.add("b", range(100, 110))

        # Then the second queue's jobs all run meanwhile, none of the first's failed
        runs = daemon.wait_runs(10, timeout=30)
        assert sorted(int(body) for body, _ in runs) == list(range(100, 110))
        assert not daemon.events("job_failed")
    finally:
        daemon.stop()


def test_jobs_whose_program_stays_missing_fail_and_are_parked_not_held_for_ever(tmp_path):
    # Given a command queue whose script names an interpreter that does not
    # exist (a typo in its shebang: exec fails with ENOENT, as for a program
    # deleted for good); backoff_scale shrinks the grace a deploy gets
    program = tmp_path / "worker"
    program.write_text("#!/no/such/interpreter\n")
    program.chmod(0o755)
    queues = {"cmd": {"worker": {"type": "command", "command": str(program)},
                      "backoff_scale": SCALE, "max_retries": 1}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues).start()
    try:
        # When a job is added
        daemon.add("cmd", ["x"])

        # Then it is first given back (a deploy may put the program back) ...
        daemon.wait_event("job_start_deferred")
        # ... and, the program still missing past the grace, fails and is parked
        # with the reason, where an operator looks, instead of waiting for ever
        (body, metadata), = parked(daemon)
        assert body == "x"
        assert "No such file or directory" in metadata[LAST_ERROR]["message"]
    finally:
        daemon.stop()


def test_a_consumer_whose_every_queue_is_paused_waits_for_its_running_job_without_spinning(tmp_path):
    # Given a one-queue consumer running a long job (job_batch 2: one place left)
    program = tmp_path / "worker"
    started, ended = tmp_path / "started", tmp_path / "ended"
    program.write_text(f'#!/bin/sh\ncase "$2" in *long*) touch {started}\n'
                       f'  while [ ! -e {ended} ]; do sleep 0.1; done ;; esac\n')
    program.chmod(0o755)
    queues = {"cmd": {"worker": {"type": "command", "command": str(program)}}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues,
                    consumer_defaults={"job_batch": 2}).start()
    try:
        daemon.add("cmd", ["long"])
        wait_for(started.exists, timeout=30, message="the long job started")
        [consumer] = daemon.consumer_pids()

        # When a deploy removes the program and the next job cannot start (the queue is paused)
        program.unlink()
        daemon.add("cmd", ["next"])
        daemon.wait_event("job_start_deferred")

        # Then, while the long job runs and the pause lasts, the consumer sleeps:
        # a busy loop of empty reserves took a whole core
        process = psutil.Process(consumer)
        before = sum(process.cpu_times()[:2])
        wall = time.monotonic()
        wait_for(lambda: time.monotonic() - wall >= CPU_WINDOW, timeout=CPU_WINDOW + SLACK)
        used = sum(process.cpu_times()[:2]) - before
        assert used < CPU_WINDOW * MAX_CPU_SHARE, f"{used:.2f} s of CPU in {CPU_WINDOW} s"
    finally:
        ended.touch()
        daemon.stop()
