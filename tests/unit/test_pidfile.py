"""The pidfile with real processes: a second holder is refused, stale files
are replaced, and two starters racing cannot both win."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from disqontrold.pidfile import Pidfile, PidfileLocked, read_pid
from tests.support.procs import stop_process, wait_for

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from disqontrold.pidfile import Pidfile, PidfileLocked
    try:
        Pidfile(Path(sys.argv[1])).acquire()
    except PidfileLocked as exc:
        print(exc, flush=True)
        sys.exit(exc.exit_code)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def _holder(path, seconds: float = 60.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )


def test_second_holder_is_refused_naming_the_pidfile(tmp_path):
    path = tmp_path / "run" / "disqontrold.pid"
    # Given a process holding the pidfile
    first = _holder(path)
    try:
        assert first.stdout.readline().strip() == "locked"
        assert read_pid(path) == first.pid
        # When this process tries to take it
        with pytest.raises(PidfileLocked) as info:
            Pidfile(path).acquire()
        # Then it is refused with exit code 2, the path and the holder's pid named
        assert info.value.exit_code == 2
        assert str(path) in str(info.value) and str(first.pid) in str(info.value)
        assert read_pid(path) == first.pid
    finally:
        stop_process(first)


def test_pidfile_of_a_killed_holder_is_replaced(tmp_path):
    path = tmp_path / "disqontrold.pid"
    first = _holder(path)
    assert first.stdout.readline().strip() == "locked"
    # When the holder dies by SIGKILL (no cleanup)
    os.killpg(first.pid, 9)
    first.wait(10)
    assert read_pid(path) == first.pid
    # Then the next master takes the pidfile over
    with Pidfile(path):
        assert read_pid(path) == os.getpid()
    assert not path.exists()


def test_unlocked_pidfile_naming_a_live_non_master_is_stale(tmp_path):
    path = tmp_path / "disqontrold.pid"
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        path.write_text(f"{sleeper.pid}\n")  # pid reuse: alive, but not a disqontrold
        with Pidfile(path):
            assert read_pid(path) == os.getpid()
    finally:
        stop_process(sleeper)


def test_unlocked_pidfile_naming_a_live_master_is_refused(tmp_path):
    path = tmp_path / "disqontrold.pid"
    # A process whose argv says disqontrold, holding no lock.
    fake = subprocess.Popen(["disqontrold", "60"], executable="/bin/sleep", start_new_session=True)
    try:
        path.write_text(f"{fake.pid}\n")
        with pytest.raises(PidfileLocked, match=str(fake.pid)):
            Pidfile(path).acquire()
        assert read_pid(path) == fake.pid
    finally:
        stop_process(fake)


def test_garbage_pidfile_is_replaced(tmp_path):
    path = tmp_path / "disqontrold.pid"
    path.write_text("not a pid")
    with Pidfile(path) as pidfile:
        pidfile.write(12345)
        assert read_pid(path) == 12345


def test_racing_starters_exactly_one_wins(tmp_path):
    path = tmp_path / "disqontrold.pid"
    starters = [_holder(path, seconds=30) for _ in range(6)]
    try:
        outcomes = [p.stdout.readline().strip() for p in starters]
        assert outcomes.count("locked") == 1, outcomes
        losers = [p for p, out in zip(starters, outcomes) if out != "locked"]
        assert all(p.wait(20) == 2 for p in losers)
        winner = starters[outcomes.index("locked")]
        assert read_pid(path) == winner.pid
    finally:
        for proc in starters:
            stop_process(proc)


DAEMONIZER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from disqontrold.daemonize import daemonize
    from disqontrold.pidfile import Pidfile
    pidfile = Pidfile(Path(sys.argv[1]))
    pidfile.acquire()
    daemonize(pidfile)
    Path(sys.argv[2]).write_text("detached")
    time.sleep(60)
    """
)


def test_daemonize_detaches_and_keeps_the_lock(tmp_path):
    path, marker = tmp_path / "disqontrold.pid", tmp_path / "marker"
    # When a process takes the pidfile and daemonizes
    launcher = subprocess.run([sys.executable, "-c", DAEMONIZER, str(path), str(marker)], timeout=30)
    # Then the launcher returns 0 at once and the daemon runs on under another pid
    assert launcher.returncode == 0
    wait_for(marker.exists, timeout=20, message="the daemon to start")
    daemon_pid = wait_for(lambda: read_pid(path), timeout=10)
    try:
        assert daemon_pid != os.getpid()
        assert os.getsid(daemon_pid) != os.getsid(0), "the daemon must leave our session"
        # And the lock went with it: a second master is refused naming the daemon's pid
        with pytest.raises(PidfileLocked, match=str(daemon_pid)):
            Pidfile(path).acquire()
    finally:
        os.kill(daemon_pid, 9)
    wait_for(lambda: not is_master_alive(daemon_pid), timeout=10)


def is_master_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_relative_pidfile_keeps_naming_the_same_file_after_a_chdir(tmp_path, monkeypatch):
    # Given a master's pidfile named relative to where it started
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    pidfile = Pidfile(Path("disqontrold.pid"))
    pidfile.acquire()
    try:
        # When the master changes directory (--daemonize goes to /, a reload re-enters its own)
        monkeypatch.chdir(elsewhere)
        pidfile.keep()

        # Then its once-a-second look still finds its own file and makes none where it now is
        assert not (elsewhere / "disqontrold.pid").exists()
        assert read_pid(start / "disqontrold.pid") == os.getpid()
    finally:
        pidfile.release()
    assert not (start / "disqontrold.pid").exists()
