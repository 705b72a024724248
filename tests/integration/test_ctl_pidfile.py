"""One master per run_dir, --daemonize, and the control socket's permissions,
with the real daemon."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys

import yaml

from disqontrol_client.job import Job
from disqontrold.pidfile import read_pid
from tests.integration.ctl_support import ctl, ctl_json
from tests.support.daemon import DAEMON, Daemon, python_worker, running
from tests.support.procs import wait_for

START_TIMEOUT = 60.0


def _daemon(tmp_path) -> Daemon:
    return Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}})


def test_second_master_on_the_same_run_dir_exits_2_naming_the_pidfile(tmp_path):
    daemon = _daemon(tmp_path).start()
    pidfile = tmp_path / "run" / "disqontrold.pid"
    try:
        assert read_pid(pidfile) == daemon.pid
        # The control socket is for the daemon's user only
        mode = stat.S_IMODE(os.stat(tmp_path / "run" / "disqontrol.sock").st_mode)
        assert mode == 0o600
        # When a second master starts with the same config
        second = subprocess.run(DAEMON + ["--config", str(daemon.config_path), "--no-stderr-log"],
                                capture_output=True, text=True, timeout=START_TIMEOUT, cwd=tmp_path)
        # Then it is refused, naming the pidfile and the running master
        assert second.returncode == 2
        assert str(pidfile) in second.stderr and str(daemon.pid) in second.stderr
        # And the first runs on, its pidfile and socket untouched
        assert running(daemon.pid) and read_pid(pidfile) == daemon.pid
        assert ctl_json(daemon, "status")["master"]["pid"] == daemon.pid
    finally:
        daemon.stop()
    assert not pidfile.exists()


def test_daemonize_detaches_and_ctl_stops_it(tmp_path):
    daemon = _daemon(tmp_path)
    pidfile = tmp_path / "custom.pid"
    env = dict(os.environ, DQ_OUT=str(daemon.out_path),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]))
    # When the master is started with --daemonize
    launcher = subprocess.run(
        DAEMON + ["--config", str(daemon.config_path), "--daemonize", "--pidfile", str(pidfile)],
        capture_output=True, text=True, timeout=START_TIMEOUT, cwd=tmp_path, env=env,
    )
    # Then the launcher returns 0 and the daemon runs under the pid in the pidfile
    assert launcher.returncode == 0, launcher.stderr
    daemon.wait_event("consumer_ready", 1, timeout=START_TIMEOUT)
    pid = wait_for(lambda: read_pid(pidfile), timeout=10)
    try:
        assert running(pid) and os.getsid(pid) != os.getsid(0)
        assert ctl_json(daemon, "status")["master"]["pid"] == pid
        daemon.broker.add("work", Job(5, "work").encode())
        daemon.wait_runs(1)
        # When ctl stops it, it is gone and its pidfile too
        assert ctl(daemon, "stop").returncode == 0
        assert not running(pid) and not pidfile.exists()
    finally:
        if running(pid):
            os.kill(pid, 9)


def test_a_master_killed_by_sigkill_leaves_nothing_in_the_way(tmp_path):
    # Given a master killed without any cleanup (its pidfile and socket stay)
    daemon = _daemon(tmp_path).start()
    pidfile, sock = tmp_path / "run" / "disqontrold.pid", tmp_path / "run" / "disqontrol.sock"
    old_pid = daemon.pid
    try:
        daemon.signal(signal.SIGKILL)
        daemon.wait_exit(10)
        assert read_pid(pidfile) == old_pid and sock.exists()
        wait_for(lambda: not daemon.consumer_pids(), timeout=30, message="the orphaned consumers to exit")
        # When it is started again (start() returns at once: the log already
        # holds the first run's consumer_ready, so wait for this one's events)
        daemon.start()
        daemon.wait_event("consumer_ready", 2, timeout=60)
        # Then the stale pidfile and socket were replaced
        assert read_pid(pidfile) == daemon.pid != old_pid
        assert ctl_json(daemon, "status")["master"]["pid"] == daemon.pid
        # (the pidfile is taken before the log file is set up: its warning goes to stderr)
        assert f"event=pidfile_stale_replaced pidfile={pidfile} old_pid={old_pid} reason=dead" in \
            daemon.stderr_path.read_text()
        assert "control_socket_stale_removed" in daemon.log()
    finally:
        daemon.stop()


def test_a_removed_run_dir_is_made_again_and_still_keeps_a_second_master_off(tmp_path):
    # Given a running daemon whose run_dir is then removed (pidfile and control socket with it)
    daemon = _daemon(tmp_path).start()
    run_dir = tmp_path / "run"
    try:
        shutil.rmtree(run_dir)

        # When a moment passes (the master looks once a second)
        wait_for(lambda: (run_dir / "disqontrol.sock").exists() and read_pid(run_dir / "disqontrold.pid"),
                 timeout=30, message="the pidfile and socket made again")

        # Then disqontrolctl reaches the master again
        assert ctl_json(daemon, "status")["master"]["pid"] == daemon.pid
        assert read_pid(run_dir / "disqontrold.pid") == daemon.pid
        # and a second master is refused
        second = subprocess.run(DAEMON + ["--config", str(daemon.config_path), "--no-stderr-log"],
                                capture_output=True, text=True, timeout=START_TIMEOUT, cwd=tmp_path)
        assert second.returncode == 2, second.stderr
        assert running(daemon.pid)
    finally:
        daemon.stop()


def test_a_run_dir_that_cannot_be_made_exits_2_naming_the_key_and_the_reason(tmp_path):
    # Given a config whose run_dir (or a --pidfile) lies under a plain file
    # (as a run_dir under a directory the daemon's user may not write)
    daemon = _daemon(tmp_path)
    (tmp_path / "blocker").write_text("not a directory\n")
    config = yaml.safe_load(daemon.config_path.read_text())
    config["disqontrol"]["run_dir"] = "blocker/run"
    daemon.config_path.write_text(yaml.safe_dump(config))
    for args, key in (([], "disqontrol.run_dir"), (["--pidfile", str(tmp_path / "blocker" / "d.pid")], "--pidfile")):
        # When the master starts
        started = subprocess.run(DAEMON + ["--config", str(daemon.config_path), "--no-stderr-log", *args],
                                 capture_output=True, text=True, timeout=START_TIMEOUT, cwd=tmp_path)
        # Then it exits 2 (systemd's unit does not restart it every 5 s: exit
        # 1 with a traceback did) with one line naming the key, the path and why
        assert started.returncode == 2, started.stderr
        assert "Traceback" not in started.stderr
        assert f"{key}: cannot create" in started.stderr and str(tmp_path / "blocker") in started.stderr, \
            started.stderr
