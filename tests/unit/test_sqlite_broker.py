"""What only the sqlite engine promises: clear errors for unusable files,
clean-up of dead waiters' sockets, a connection per process after fork."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.sqlite import SqliteBroker
from disqontrol_client.brokers.sqlite_wake import SOCKET_SUFFIX, WAKE_DIR_SUFFIX
from disqontrol_client.errors import BrokerError, BrokerUnavailable, ConfigError


def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "jobs.db"
    with open_broker(f"sqlite://{path}") as b:
        b.add("q", b"x")
    assert path.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_directory_is_broker_unavailable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BrokerUnavailable, match="locked"):
        open_broker(f"sqlite://{locked}/sub/jobs.db")


def test_uncreatable_directory_is_broker_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(BrokerUnavailable, match=str(blocker)):
        open_broker(f"sqlite://{blocker}/jobs.db")


def test_a_file_that_is_not_a_database_is_broker_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BrokerUnavailable, match="jobs.db"):
        open_broker(f"sqlite://{path}")


def test_url_without_a_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sqlite:///path"):
        open_broker("sqlite://")


@pytest.mark.parametrize("kwargs, allowed", [({"ttl": 0}, "ttl"), ({"delay": -1}, "delay")])
def test_bad_job_values_name_the_value(tmp_path: Path, kwargs: dict, allowed: str) -> None:
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as b:
        with pytest.raises(BrokerError, match=allowed):
            b.add("q", b"x", **kwargs)


def test_a_dead_waiters_socket_is_removed_by_the_next_add(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    wake_dir = Path(str(db) + WAKE_DIR_SUFFIX)
    wake_dir.mkdir()
    stale = wake_dir / f"999999-dead{SOCKET_SUFFIX}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: like a killed consumer

    with open_broker(f"sqlite://{db}") as b:
        b.add("q", b"x")

    assert not stale.exists()


def test_a_waiters_socket_is_removed_on_close(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    b = open_broker(f"sqlite://{db}")
    assert b.reserve(["q"], timeout=0.05) == []
    assert len(list(Path(str(db) + WAKE_DIR_SUFFIX).iterdir())) == 1
    b.close()
    assert list(Path(str(db) + WAKE_DIR_SUFFIX).iterdir()) == []


def test_long_paths_still_wake(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    b = open_broker(f"sqlite://{deep}/jobs.db")
    assert b.reserve(["q"], timeout=0.05) == []  # binds through /proc/self/fd
    job = b.add("q", b"x")
    assert [d.id for d in b.reserve(["q"], timeout=1)] == [job]
    b.close()


def test_child_process_opens_its_own_connection(tmp_path: Path) -> None:
    b = SqliteBroker.from_url(f"sqlite://{tmp_path}/jobs.db")
    b.add("q", b"from parent")
    pid = os.fork()
    if pid == 0:  # the child uses the inherited object: it must reconnect
        code = 1
        try:
            got = b.reserve(["q"], timeout=1)
            b.ack([d.id for d in got])
            code = 0 if [d.payload for d in got] == [b"from parent"] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.length("q") == 0 and b.stats(["q"])[0].in_flight == 0
    b.close()
