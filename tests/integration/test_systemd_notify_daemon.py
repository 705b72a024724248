"""The real daemon run as systemd runs it: a datagram socket as $NOTIFY_SOCKET
receives READY=1 once the consumers are up, RELOADING=1 then READY=1 on a
reload, STOPPING=1 on stop, and WATCHDOG=1 pings."""
from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.integration.ctl_support import ctl
from tests.support.daemon import Daemon, python_worker

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
