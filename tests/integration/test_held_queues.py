"""A queue held because its worker's setup raises (SPEC differences 26, 30),
against a real daemon: a setup try that hangs holds up nothing else and is
ended at start_timeout; status and metrics show the held queue, why and
when the next try comes; the autoscaler does not add processes for its
backlog."""
from __future__ import annotations

import re
import signal
from pathlib import Path

import psutil
import pytest

from tests.integration.ctl_support import ctl, ctl_status
from tests.support.daemon import Daemon, running
from tests.support.procs import wait_for

START_TIMEOUT = 3  # s: the group's start_timeout, which bounds one setup try
STOP_BOUND = 20.0  # s: a stop that waited for the hanging try would take start_timeout (60 s)
HEARTBEAT_LIMIT = 5.0  # s: an idle consumer beats at least once a second; a loaded machine adds to it

# The first setup (the consumer's, at start) raises at once; each later try
# marks ./trying and hangs, as a connect to a database that is down can,
# unless ./db-up exists (the daemon's cwd is the test's tmp_path).
HANGING_RETRY_BOOTSTRAP = """
import os, time

CALLS = [0]

def setup_environment():
    CALLS[0] += 1
    if os.path.exists("db-up"):
        return {}
    if CALLS[0] > 1:
        open("trying", "w").close()
        time.sleep(600)
    raise RuntimeError("database is down")

WORKERS = {"handler": lambda environment, name: (lambda job: None)}
"""
# A command job creates ./held and runs until ./release exists; each job
# records "<body> <time>" in $DQ_OUT.
HOLD_SH = """
body="${2#--body=}"
case "$body" in
  *hold*) : > held; while [ ! -e release ]; do sleep 0.05; done ;;
esac
printf '%s %s\\n' "$body" "$(date +%s.%N)" >> "$DQ_OUT"
"""


# A command job that waits for ./go before it reads its body from stdin.
STDIN_SH = """
: > started
while [ ! -e go ]; do sleep 0.05; done
wc -c > /dev/null
printf 'read %s\\n' "$(date +%s.%N)" >> "$DQ_OUT"
"""
LARGE_BODY = "x" * (100 * 1024)  # past MAX_BODY_ARG (64 KiB) and what a pipe holds: sent on stdin


def held_daemon(tmp_path: Path, **consumer: object) -> Daemon:
    """A group of a Python queue whose setup fails (py) and a command queue (cmd)."""
    (tmp_path / "disqontrol_bootstrap.py").write_text(HANGING_RETRY_BOOTSTRAP)
    (tmp_path / "hold.sh").write_text(HOLD_SH)
    (tmp_path / "stdin.sh").write_text(STDIN_SH)
    return Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "py": {"worker": {"type": "inline_python_worker", "name": "handler"}},
        "cmd": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'hold.sh'}"},
                "job_process_timeout": 600},
        "stdin": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'stdin.sh'}"},
                  "job_process_timeout": 600},
    }, consumers=[{"queues": ["py", "cmd", "stdin"]}],
        consumer_defaults={"start_timeout": START_TIMEOUT, **consumer})


@pytest.mark.timeout(90)
def test_a_hanging_setup_try_holds_up_nothing_and_ends_at_start_timeout(tmp_path):
    # Given a group whose Python queue is held (its setup raised at start)
    daemon = held_daemon(tmp_path).start()
    try:
        daemon.wait_event("worker_setup_failed")
        # When the next setup try hangs
        wait_for(lambda: (tmp_path / "trying").exists(), timeout=30, message="a setup try hanging")
        [consumer] = daemon.consumer_pids()

        # Then the group's command jobs still run meanwhile
        daemon.add("cmd", ["quick"])
        assert daemon.wait_runs(1, timeout=15)[0][0] == '"quick"'
        # and status shows the consumer alive, and the try running
        status = ctl_status(daemon)
        [shown] = status["consumers"]
        assert shown["pid"] == consumer and shown["heartbeat_age"] < HEARTBEAT_LIMIT
        [held] = status["held"]
        assert held["queue"] == "py" and held["trying_for"] is not None

        # Then the try is ended at start_timeout and counted as a failed one,
        # the consumer is not killed as hung, and the queue is tried again later
        tried = daemon.wait_event("worker_setup_failed", 2, timeout=30)[-1]
        assert "tries=2 " in tried and f"within {START_TIMEOUT} s" in tried and "start_timeout" in tried
        assert daemon.consumer_pids() == [consumer] and not daemon.events("consumer_hung")
        [held] = ctl_status(daemon)["held"]
        assert held["tries"] == 2 and held["trying_for"] is None and 0 < held["next_try_in"] <= 10
    finally:
        daemon.stop()


@pytest.mark.timeout(90)
def test_a_setup_try_does_not_keep_a_running_job_s_stdin_open(tmp_path):
    # Given a held queue whose setup tries hang (ended only at a start_timeout of 60 s),
    # and a job of the group with a large body, sent on its stdin, not read yet
    daemon = held_daemon(tmp_path, start_timeout=60).start()
    try:
        daemon.wait_event("worker_setup_failed")
        daemon.add("stdin", [LARGE_BODY])
        wait_for(lambda: (tmp_path / "started").exists(), timeout=30, message="the stdin job running")
        # When a setup try is forked while the consumer still holds that stdin pipe
        wait_for(lambda: (tmp_path / "trying").exists(), timeout=30, message="a setup try hanging")
        (tmp_path / "go").touch()

        # Then the job reads its whole body and ends: the hanging try holds no copy of the pipe
        assert daemon.wait_runs(1, timeout=20)[0][0] == "read"
        assert not daemon.events("job_failed")
    finally:
        daemon.stop()


@pytest.mark.timeout(60)
def test_status_and_metrics_show_a_held_queue_with_its_error_and_next_try(tmp_path):
    # Given a group whose Python queue is held (its setup raised at start)
    daemon = held_daemon(tmp_path).start()
    try:
        daemon.wait_event("worker_setup_failed")
        [consumer] = daemon.consumer_pids()

        # When the operator asks for the status, as JSON and as text, and the metrics
        status = ctl_status(daemon)
        text, metrics = ctl(daemon, "status"), ctl(daemon, "metrics")

        # Then the held queue is there with the setup's error and its next try
        [held] = status["held"]
        assert (held["queue"], held["group"], held["consumers"], held["tries"]) == ("py", "py+cmd+stdin", [consumer], 1)
        assert held["error"] == "RuntimeError: database is down"
        # (the next try in at most 5 s; on a slow machine it may be running already)
        assert 0 <= held["next_try_in"] <= 5 if held["trying_for"] is None else held["next_try_in"] is None
        assert [h["queue"] for h in status["consumers"][0]["held"]] == ["py"]
        assert text.returncode == 0, text.stderr
        [row] = [line for line in text.stdout.splitlines() if line.startswith("py ") and "RuntimeError" in line]
        assert re.search(r"\b(in|trying for) \d+ s\b", row), text.stdout
        assert "HELD QUEUE" in text.stdout
        assert 'disqontrol_queue_held{queue="py"} 1' in metrics.stdout
        assert 'disqontrol_queue_held{queue="cmd"} 0' in metrics.stdout
    finally:
        daemon.stop()


@pytest.mark.timeout(90)
def test_the_autoscaler_does_not_count_a_held_queue_s_backlog(tmp_path):
    # Given an autoscaled group (1..3) whose Python queue is held, its only
    # process busy with a command job
    daemon = held_daemon(tmp_path, autoscale=True, max_processes=3, job_batch=1,
                         autoscale_idle_seconds=600).start()
    try:
        daemon.wait_event("worker_setup_failed")
        daemon.add("cmd", ["hold"])
        wait_for(lambda: (tmp_path / "held").exists(), timeout=30, message="the command job running")

        # When jobs pile up on the held queue, then on the command queue
        daemon.add("py", list(range(30)))
        daemon.add("cmd", list(range(10)))

        # Then the scaling up that follows counts the command queue's backlog only
        up = daemon.wait_event("autoscale", timeout=30)[0]
        assert "backlog=10 " in up, up
    finally:
        (tmp_path / "release").touch()
        daemon.stop()


# setup_environment() works; the "flaky" factory raises until ./ok exists,
# and notes the pid of each process it runs in.
FACTORY_FAILS_BOOTSTRAP = """
import os

def setup_environment():
    return {"connection": object()}

def flaky(environment, name):
    with open("factory-pids", "a") as out:
        out.write(f"{os.getpid()}\\n")
    if not os.path.exists("ok"):
        raise RuntimeError("cache not warm")
    return lambda job: None

WORKERS = {"fine": lambda environment, name: (lambda job: None), "flaky": flaky}
"""


@pytest.mark.timeout(60)
def test_a_held_factory_is_retried_in_the_consumer_once_it_has_its_environment(tmp_path):
    # Given a group whose environment was set up, and one queue whose factory raised
    (tmp_path / "disqontrol_bootstrap.py").write_text(FACTORY_FAILS_BOOTSTRAP)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "fine": {"worker": {"type": "inline_python_worker", "name": "fine"}},
        "flaky": {"worker": {"type": "inline_python_worker", "name": "flaky"}},
    }, consumers=[{"queues": ["fine", "flaky"]}]).start()
    try:
        daemon.wait_event("worker_setup_failed")
        [consumer] = daemon.consumer_pids()
        # When the factory is tried again, and works
        (tmp_path / "ok").touch()
        daemon.wait_event("worker_setup_recovered", timeout=30)
        # Then every try ran in the consumer: a forked try would share the
        # environment's connections with it
        pids = (tmp_path / "factory-pids").read_text().split()
        assert len(pids) == 2 and set(pids) == {str(consumer)}, pids
    finally:
        daemon.stop()


# setup_environment() hangs, as a connect to a database that is down can,
# until ./db-up exists; the handler records its job.
ALWAYS_HANGING_BOOTSTRAP = """
import os, time

def setup_environment():
    while not os.path.exists("db-up"):
        time.sleep(0.05)
    return {}

def handler(environment, name):
    return lambda job: open(os.environ["DQ_OUT"], "a").write(f"py-{job.body} {time.time()}\\n")

WORKERS = {"handler": handler}
"""


def hanging_at_start(tmp_path: Path) -> Daemon:
    """held_daemon, started, whose Python setup hangs at every start until ./db-up exists."""
    daemon = held_daemon(tmp_path)
    (tmp_path / "disqontrol_bootstrap.py").write_text(ALWAYS_HANGING_BOOTSTRAP)
    return daemon.start(consumers=0)


@pytest.mark.timeout(90)
def test_a_start_hung_in_setup_is_followed_by_one_that_runs_the_other_queues(tmp_path):
    # Given a group of a Python queue and a command queue whose setup hangs at start
    daemon = hanging_at_start(tmp_path)
    try:
        # When the master kills the consumer as hung past start_timeout
        [hung] = daemon.wait_event("consumer_hung", timeout=30)
        assert "starting_s=" in hung

        # Then its replacement starts with the Python queue held, and runs the command queue
        daemon.wait_event("consumer_ready", timeout=30)
        [held] = daemon.wait_event("worker_setup_failed", timeout=30)
        assert "queue=py " in held and "at the consumer's start" in held
        daemon.add("cmd", ["quick"])
        assert daemon.wait_runs(1, timeout=15)[0][0] == '"quick"'
        assert len(daemon.events("consumer_hung")) == 1

        # and once the database is up, a setup try works and the Python queue runs too
        (tmp_path / "db-up").touch()
        daemon.wait_event("worker_setup_recovered", timeout=30)
        daemon.add("py", [7])
        assert [body for body, _ in daemon.wait_runs(2, timeout=15)] == ['"quick"', "py-7"]
    finally:
        daemon.stop()


@pytest.mark.timeout(90)
def test_after_a_reload_a_setup_that_hung_at_start_is_held_at_once_not_hung_again(tmp_path):
    # Given a group whose Python setup hung at start, its replacement running the command queue
    daemon = hanging_at_start(tmp_path)
    try:
        daemon.wait_event("consumer_hung", timeout=30)
        daemon.wait_event("worker_setup_failed", timeout=30)

        # When the daemon is reloaded (a deploy) while the setup still hangs
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken", timeout=30)

        # Then the new generation holds the Python queue from its start and
        # runs the command queue: it does not hang a start_timeout first, running nothing
        daemon.wait_event("worker_setup_failed", count=2, timeout=30)
        daemon.add("cmd", ["after-reload"])
        assert daemon.wait_runs(1, timeout=30)[0][0] == '"after-reload"'
        assert len(daemon.events("consumer_hung")) == 1
    finally:
        daemon.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT])
def test_a_stop_while_a_setup_try_hangs_ends_the_try_with_the_daemon(tmp_path, signum):
    # Given a held queue whose setup try hangs in its child (ended only at a start_timeout of 60 s)
    daemon = held_daemon(tmp_path, start_timeout=60).start()
    try:
        wait_for(lambda: (tmp_path / "trying").exists(), timeout=30, message="a setup try hanging")
        [consumer] = daemon.consumer_pids()
        [probe] = psutil.Process(consumer).children()

        # When the daemon is stopped (gracefully, or fast)
        daemon.signal(signum)

        # Then it exits at once, not after the try's start_timeout, and the try's process is gone
        assert daemon.wait_exit(timeout=STOP_BOUND) == 0
        wait_for(lambda: not running(probe.pid), timeout=10, message="the setup try ended")
    finally:
        daemon.stop()
