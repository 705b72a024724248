"""The real daemon run as systemd runs it: a datagram socket as $NOTIFY_SOCKET
receives READY=1 once the consumers are up, RELOADING=1 then READY=1 on a
reload, STOPPING=1 on stop, and WATCHDOG=1 pings."""
from __future__ import annotations

import signal
import socket
import sqlite3
import time

import pytest

from tests.integration.ctl_support import ctl
from tests.support.daemon import Daemon, python_worker
from tests.unit.test_sqlite_schema import v1_copy

WATCHDOG_USEC = 1_000_000  # 1 s: a ping every 0.5 s
CONSUMERS = 2
RECV_TIMEOUT = 60.0


class Notifications:
    """What the 'systemd' side received, read with a deadline."""

    def __init__(self, path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.watchdog_pings = 0

    def next(self, timeout: float = RECV_TIMEOUT) -> str:
        """The next message that is not a watchdog ping (those are counted),
        nor a note that a slow start step extends the start timeout (a
        loaded machine)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message = self.sock.recv(4096).decode()
            if message == "WATCHDOG=1":
                self.watchdog_pings += 1
                continue
            if message.startswith("EXTEND_TIMEOUT_USEC="):
                continue
            return message

    def wait_pings(self, count: int, timeout: float = RECV_TIMEOUT) -> None:
        """Read until ``count`` pings were seen; anything else fails the test."""
        deadline = time.monotonic() + timeout
        while self.watchdog_pings < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message = self.sock.recv(4096).decode()
            assert message == "WATCHDOG=1", message
            self.watchdog_pings += 1


@pytest.fixture
def notify(tmp_path, monkeypatch):
    channel = Notifications(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield channel
    channel.sock.close()


def test_daemon_speaks_sd_notify(tmp_path, notify):
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": CONSUMERS})
    try:
        daemon.start(consumers=CONSUMERS)
        # READY=1 comes after every consumer reported ready
        ready = notify.next()
        assert ready.startswith("READY=1\nSTATUS=generation 1: 2 consumers"), ready
        assert len(daemon.events("consumer_ready")) >= CONSUMERS
        # The watchdog is pinged from the loop, about every 0.5 s
        notify.wait_pings(3, timeout=30)
        # A reload (SIGHUP, as systemctl reload sends) is framed by RELOADING=1 ... READY=1
        daemon.signal(signal.SIGHUP)
        assert notify.next() == "RELOADING=1"
        assert notify.next().startswith("READY=1\nSTATUS=generation 2")
        assert notify.next().startswith("STATUS=reload taken")
        # A stop through the control socket sends STOPPING=1
        assert ctl(daemon, "stop").returncode == 0
        assert notify.next() == "STOPPING=1"
        assert daemon.wait_exit(10) == 0
    finally:
        daemon.stop()


SLOW_IMPORT = 5.0  # s the bootstrap's import takes once the marker file exists (a big app's imports)
MAX_IMPORT_PING_GAP = 2.0  # s: the watchdog (1 s here) would have killed the master long before the import ended
# Imports slowly when a file "slow" lies beside it: the reload's config check then takes SLOW_IMPORT.
SLOW_BOOTSTRAP = f"""
import os, time
if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow")):
    time.sleep({SLOW_IMPORT})
WORKERS = {{"work": lambda environment, name: (lambda job: None)}}
"""


def test_the_watchdog_is_pinged_while_a_reload_checks_a_slow_config(tmp_path, notify):
    # Given a daemon under a 1 s watchdog whose Python workers import slowly from now on
    (tmp_path / "boot.py").write_text(SLOW_BOOTSTRAP)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {"work": {"worker": {"type": "inline_python_worker", "name": "work"}}})
    try:
        daemon.start(args=["--bootstrap", str(tmp_path / "boot.py")])
        assert notify.next().startswith("READY=1")
        (tmp_path / "slow").touch()
        # When a reload checks the config (importing the workers: SLOW_IMPORT s)
        daemon.signal(signal.SIGHUP)
        assert notify.next() == "RELOADING=1"
        pings = [time.monotonic()]
        while True:
            notify.sock.settimeout(RECV_TIMEOUT)
            message = notify.sock.recv(4096).decode()
            if message != "WATCHDOG=1":
                break
            pings.append(time.monotonic())
        # Then the pings went on meanwhile (systemd keeps the watchdog armed during a
        # reload: a master silent for SLOW_IMPORT s was killed with SIGABRT)
        pings.append(time.monotonic())  # READY=1: the reload is over
        assert message.startswith("READY=1\nSTATUS=generation 2"), message
        assert pings[-1] - pings[0] >= SLOW_IMPORT * 0.9, pings  # the check did take that long
        gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
        assert max(gaps) < MAX_IMPORT_PING_GAP, gaps
    finally:
        # Unread, the socket's queue (10 datagrams) fills and the master's next
        # send blocks, as with a systemd that stopped reading: no listener instead.
        notify.sock.close()
        daemon.stop()


HOLD = 4.0  # s the new broker's write lock is held during the reload (well past the 0.5 s ping interval)
MAX_PING_GAP = 2.5  # s: generous for a loaded machine, yet below HOLD


def test_the_watchdog_is_pinged_while_a_reload_checks_a_slow_broker(tmp_path, notify):
    # Given a daemon run by 'systemd' with a watchdog, and a file of the release before versions
    # whose write lock another process holds (its upgrade at the reload's broker check waits)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}})
    other = tmp_path / "other"
    other.mkdir()
    path = v1_copy(other)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        daemon.start()
        assert notify.next().startswith("READY=1")
        # When a reload names that file
        daemon.broker_url = f"sqlite://{path}"
        daemon.write_config({"work": {"worker": python_worker()}})
        daemon.signal(signal.SIGHUP)
        assert notify.next() == "RELOADING=1"
        # Then the master, blocked in the check, still pings the watchdog (systemd would kill the
        # whole service after WatchdogSec, 30 s, while a check may take 60)
        pings = []
        release = time.monotonic() + HOLD
        while time.monotonic() < release:
            notify.sock.settimeout(max(0.01, release - time.monotonic()))
            try:
                message = notify.sock.recv(4096).decode()
            except socket.timeout:
                break
            assert message == "WATCHDOG=1", message
            pings.append(time.monotonic())
        gaps = [b - a for a, b in zip([release - HOLD, *pings], [*pings, release])]
        assert max(gaps) < MAX_PING_GAP, gaps
        # And once the lock is free, the reload is taken on the upgraded file
        holder.execute("ROLLBACK")
        assert notify.next().startswith("READY=1\nSTATUS=generation 2")
    finally:
        holder.close()
        daemon.stop()
