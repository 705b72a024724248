"""Deploys: new worker code on disk plus a reload (SIGHUP) must run the new
code, the way releases are usually laid out (``current -> releases/N``)."""
from __future__ import annotations

import os
import shutil
import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

#: s an idle consumer waits through (its reserves end every 1 s, MAX_SLEEP 2 s).
IDLE_WAITS = 3.0
#: s within which a woken consumer starts a job (~1 ms when woken; a consumer
#: that nobody wakes finds it at its next check, up to 2 s later).
PROMPT_START = 1.0

# A bootstrap whose worker records which release it came from.
BOOTSTRAP = '''
import os

RELEASE = {release!r}

def make(environment, name):
    def run(job):
        with open(os.environ["DQ_OUT"], "a") as out:
            out.write(f"{{job.body}}-{{RELEASE}} 0\\n")
    return run

WORKERS = {{"release": make}}
'''


def _release(root: Path, name: str) -> Path:
    directory = root / "releases" / name
    directory.mkdir(parents=True)
    (directory / "disqontrol_bootstrap.py").write_text(textwrap.dedent(BOOTSTRAP.format(release=name)))
    return directory


def _point_current(root: Path, release: Path) -> None:
    """Swap ``current`` atomically, as deploy tools do (symlink + rename)."""
    staged = root / "current.new"
    staged.symlink_to(release)
    os.replace(staged, root / "current")


@pytest.mark.parametrize("named", ["by --bootstrap", "as ./disqontrol_bootstrap.py"])
def test_sighup_after_a_symlink_swapped_release_runs_the_new_bootstrap(tmp_path, named):
    # Given a daemon whose bootstrap is under current -> releases/1 (named, or found in its directory)
    _point_current(tmp_path, _release(tmp_path, "1"))
    queues = {"work": {"worker": {"type": "inline_python_worker", "name": "release"}}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues)
    current = tmp_path / "current"
    if named == "by --bootstrap":
        daemon.start(args=["--bootstrap", str(current / "disqontrol_bootstrap.py")])
    else:
        daemon.start(cwd=current)
    try:
        daemon.add("work", ["a"])
        assert daemon.wait_runs(1)[0][0] == "a-1"

        # When release 2 is deployed (current -> releases/2) and the daemon reloaded
        _point_current(tmp_path, _release(tmp_path, "2"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")
        daemon.wait_event("consumer_ready", 2)
        wait_for(lambda: len(daemon.consumer_pids()) == 1, timeout=60, message="the old consumer gone")

        # Then the new generation runs release 2's code
        daemon.add("work", ["b"])
        assert daemon.wait_runs(2)[1][0] == "b-2"
    finally:
        daemon.stop()


def test_sighup_after_a_symlink_swapped_release_runs_commands_in_the_new_release(tmp_path):
    # Given a daemon started in current -> releases/1 whose command runs a script by a relative path
    for name in ("1", "2"):
        script = _release(tmp_path, name) / "run.sh"
        script.write_text(f'printf "%s-{name} 0\\n" "${{2#--body=}}" >> "$DQ_OUT"\n')
    _point_current(tmp_path, tmp_path / "releases" / "1")
    queues = {"work": {"worker": {"type": "command", "command": "/bin/sh run.sh"}}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues)
    daemon.start(cwd=tmp_path / "current")
    try:
        daemon.add("work", [1])
        assert daemon.wait_runs(1)[0][0] == "1-1"

        # When release 2 is deployed and the daemon reloaded
        before = daemon.consumer_pids()
        _point_current(tmp_path, tmp_path / "releases" / "2")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")
        wait_for(lambda: daemon.consumer_pids() and not set(before) & set(daemon.consumer_pids()),
                 timeout=60, message="release 1's consumer retired")

        # Then the new generation's commands run in release 2
        daemon.add("work", [2])
        assert daemon.wait_runs(2)[1][0] == "2-2"
    finally:
        daemon.stop()


def test_a_release_whose_bootstrap_does_not_compile_is_refused_and_the_old_one_runs_on(tmp_path):
    # Given a daemon running release 1 through current -> releases/1
    _point_current(tmp_path, _release(tmp_path, "1"))
    queues = {"work": {"worker": {"type": "inline_python_worker", "name": "release"}}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues)
    daemon.start(args=["--bootstrap", str(tmp_path / "current" / "disqontrol_bootstrap.py")])
    try:
        before = daemon.consumer_pids()

        # When release 2, whose bootstrap has a syntax error, is deployed and the daemon reloaded
        broken = _release(tmp_path, "2")
        (broken / "disqontrol_bootstrap.py").write_text("WORKERS = {\n")
        _point_current(tmp_path, broken)
        daemon.signal(signal.SIGHUP)

        # Then the reload is refused naming the error, and release 1 runs on
        [refused] = daemon.wait_event("reload_refused")
        assert "SyntaxError" in refused and "disqontrol_bootstrap.py" in refused
        assert daemon.consumer_pids() == before
        daemon.add("work", ["a"])
        assert daemon.wait_runs(1)[0][0] == "a-1"
        # and the fixed release 3 is taken
        _point_current(tmp_path, _release(tmp_path, "3"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")
        wait_for(lambda: not set(before) & set(daemon.consumer_pids()), timeout=60, message="release 1 retired")
        daemon.add("work", ["b"])
        assert daemon.wait_runs(2)[1][0] == "b-3"
    finally:
        daemon.stop()


def test_a_wake_directory_deleted_under_a_running_daemon_is_made_again(tmp_path):
    # Given an idle daemon on sqlite and a long-lived producer that has added a job
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}}).start()
    wake_dir = tmp_path / "jobs.db.wake"
    try:
        daemon.add("work", [0])
        daemon.wait_runs(1)

        # When the wake directory is deleted (a tmp cleaner, an operator's rm -r)
        gone = tmp_path / "deleted.wake"
        wake_dir.rename(gone)  # at once: a consumer binding while rmtree() runs would make it fail
        shutil.rmtree(gone)

        # Then the consumer makes it again and waits in it, one socket at a time
        wait_for(lambda: daemon.events("wake_dir_reopened"), timeout=30, message="the directory reopened")
        time.sleep(IDLE_WAITS)  # several idle reserves of the consumer: each binds and removes a socket
        assert len(list(wake_dir.glob("*.sock"))) <= 1
        # without a line per idle wait in the log (it was 20 a second, polling the database as often)
        assert not daemon.events("wake_dir_unusable") and not daemon.events("wake_bind_failed")
        # and the long-lived producer, which held the deleted one, wakes it at once
        for n in range(1, 4):
            added = time.time()
            daemon.add("work", [n])
            assert daemon.wait_runs(n + 1)[-1][1] - added < PROMPT_START
    finally:
        daemon.stop()


def test_a_database_file_deleted_under_a_running_daemon_is_followed(tmp_path):
    # Given an idle daemon on sqlite that has run a job
    db = tmp_path / "jobs.db"
    daemon = Daemon(tmp_path, f"sqlite://{db}", {"work": {"worker": python_worker()}}).start()
    try:
        daemon.add("work", [0])
        daemon.wait_runs(1)
        daemon.stop_broker()

        # When its database is deleted (an operator starting afresh) and a new producer adds a job
        for path in tmp_path.glob("jobs.db*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        daemon.add("work", [1])

        # Then the consumer leaves the deleted file for the new one, and the job runs
        assert daemon.wait_runs(2, timeout=30)[1][0] == "1"
        [moved] = daemon.events("broker_moved")
        assert "how=deleted" in moved or "how=replaced" in moved  # the add may make the new file first
        assert "reason=broker_moved" in daemon.events("consumer_recycled")[0]
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()
