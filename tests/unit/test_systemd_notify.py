"""sd_notify to a real datagram socket, as systemd would receive it."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from disqontrold import systemd


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv(systemd.NOTIFY_SOCKET_ENV, str(path))
    yield sock
    sock.close()


def test_ready_with_status(notify_socket):
    assert systemd.ready("2 consumers up")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=2 consumers up"


def test_reload_and_stop_messages(notify_socket):
    systemd.reloading()
    systemd.ready()
    systemd.stopping()
    assert [notify_socket.recv(4096) for _ in range(3)] == [b"RELOADING=1", b"READY=1", b"STOPPING=1"]


def test_abstract_socket(monkeypatch):
    name = f"disqontrol-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv(systemd.NOTIFY_SOCKET_ENV, "@" + name)
        assert systemd.status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv(systemd.NOTIFY_SOCKET_ENV, raising=False)
    assert systemd.ready() is False


def test_a_vanished_socket_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv(systemd.NOTIFY_SOCKET_ENV, str(tmp_path / "gone.sock"))
    assert systemd.ready() is False


def test_watchdog_pings_at_half_the_interval(notify_socket):
    env = {systemd.NOTIFY_SOCKET_ENV: os.environ[systemd.NOTIFY_SOCKET_ENV], systemd.WATCHDOG_USEC_ENV: "4000000"}
    dog = systemd.Watchdog(env)
    assert dog.interval == 2.0
    assert dog.tick() is True  # first ping at once
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert dog.tick() is False  # not due again before 2 s
    assert 0 < dog.timeout() <= 2.0


@pytest.mark.parametrize(
    "env",
    [{}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}],
)
def test_no_watchdog_unless_asked_for_this_pid(env):
    dog = systemd.Watchdog(env)
    assert not dog.enabled and dog.timeout() is None and dog.tick() is False
