"""The daemon run as its own user, as under the systemd unit (User=disqontrol).

Here the daemon's user is nobody and the daemon a real process: a sqlite
database that root touched first still serves it, and a control socket
group it cannot use is one clear config error."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from disqontrol_client.brokers import open_broker
from tests.support.procs import stop_process, wait_for

NOBODY = 65534
DAEMON = [sys.executable, "-m", "disqontrold.cli"]
CTL = [sys.executable, "-m", "disqontrold.ctl"]
CLI = [str(Path(sys.executable).parent / "disqontrol")]  # the installed producer command
COMMAND_TIMEOUT = 60.0  # s: a loaded machine starts Python slowly
DONE_TIMEOUT = 60.0  # s for the daemon to start and run one job

SETPRIV = shutil.which("setpriv")  # util-linux: run the daemon as another user
AS_NOBODY = [SETPRIV or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as another user"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A directory the daemon's user owns, where that user can reach it
    (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="dq-root-files-", dir="/tmp"))
    path.chmod(0o755)
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_daemon_runs_jobs_from_a_database_root_created(state_dir):
    # Given a config whose sqlite database lives in the daemon user's directory
    config = state_dir / "disqontrol.yml"
    config.write_text(yaml.safe_dump({"disqontrol": {
        "broker": "sqlite:jobs.db", "log_dir": "log", "run_dir": "run",
        "queues": {"q": {"worker": {"type": "command", "command": "/bin/true"}}},
    }}))
    # And root opening it first, as an operator trying the tools would
    for command in (CTL + ["--config", str(config), "queues"], CLI + ["addjob", "--config", str(config), "q", "1"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        assert result.returncode == 0, result.stderr
    broker = open_broker(f"sqlite://{state_dir}/jobs.db")
    assert broker.length("q") == 1
    # When the daemon runs as its own user
    daemon = subprocess.Popen(AS_NOBODY + DAEMON + ["--config", str(config), "--no-stderr-log"],
                              cwd=state_dir, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Then it runs the job root added (it used to fail every reserve: a readonly database)
        wait_for(lambda: daemon.poll() is not None or broker.length("q") == 0, timeout=DONE_TIMEOUT,
                 interval=0.1, message="the job done by the daemon's user")
        assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
    finally:
        broker.close()
        stop_process(daemon)
    # And every file beside the database is the daemon user's
    owners = {p.name: p.stat().st_uid for p in state_dir.iterdir() if p.name.startswith("jobs.db")}
    assert owners and set(owners.values()) == {NOBODY}, owners


def test_a_control_socket_group_the_user_is_not_in_is_a_config_error(state_dir):
    # Given a config giving the control socket to a group nobody is not a member of
    config = state_dir / "disqontrol.yml"
    config.write_text(yaml.safe_dump({"disqontrol": {
        "broker": "sqlite:jobs.db", "log_dir": "log", "run_dir": "run", "control_socket_group": "root",
        "queues": {"q": {"worker": {"type": "command", "command": "/bin/true"}}},
    }}))
    # When the daemon starts as nobody
    result = subprocess.run(AS_NOBODY + DAEMON + ["--config", str(config), "--no-stderr-log"], cwd=state_dir,
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    # Then it exits 2 with one line naming the key and the group (it was a traceback, exit 1)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("disqontrold: disqontrol.control_socket_group:") and "'root'" in line, line
    # And leaves no socket nor pidfile behind
    assert list((state_dir / "run").iterdir()) == []
