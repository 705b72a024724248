"""disqontrolctl never shows a traceback: whatever a control socket does
(reset, close, silence, garbage), a closed stdout or a Ctrl-C, the user gets
one line and an exit code. The stand-in sockets are real Unix sockets served
by a thread; disqontrolctl runs as a real process."""
from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from disqontrol_client import exitcodes
from disqontrold.ctl_client import MasterUnreachable, request
from tests.support.procs import stop_process

CTL = [sys.executable, "-m", "disqontrold.ctl"]
CTL_TIMEOUT = 60.0  # s: a loaded machine starts Python slowly
SILENCE_TIMEOUT = 0.3  # s: the reply timeout given to request() against a silent socket
EXIT_INTERRUPTED = 128 + signal.SIGINT
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)


def _read_then(answer: bytes) -> Callable[[socket.socket], None]:
    def serve(conn: socket.socket) -> None:
        conn.recv(65536)
        if answer:
            conn.sendall(answer)
    return serve


BEHAVIOURS: dict[str, Callable[[socket.socket], None]] = {
    "reset at once": _reset,
    "close at once": lambda conn: None,
    "close unanswered": _read_then(b""),
    "not JSON": _read_then(b"HTTP/1.1 400 Bad Request\r\n\r\n\n"),
    "not UTF-8": _read_then(b"\xff\xfe\n"),
    "a JSON list": _read_then(b"[1, 2]\n"),
}


class StandIn:
    """A Unix socket that treats every connection with ``behaviour`` then closes it."""

    def __init__(self, path: Path, behaviour: Callable[[socket.socket], None]) -> None:
        self.path = path
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by close(): the test is over
                return
            with conn:
                self.behaviour(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], Path]]:
    servers: list[StandIn] = []

    def start(behaviour: Callable[[socket.socket], None]) -> Path:
        servers.append(StandIn(tmp_path / f"s{len(servers)}.sock", behaviour))
        return servers[-1].path

    yield start
    for server in servers:
        server.close()


def _ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CTL + list(args), capture_output=True, text=True, timeout=CTL_TIMEOUT)


def _one_clean_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("disqontrolctl: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=list(BEHAVIOURS))
@pytest.mark.parametrize("command", ["status", "stop"])
def test_a_broken_control_socket_is_exit_3_with_one_line(stand_in, behaviour, command):
    # Given a control socket that misbehaves
    path = stand_in(BEHAVIOURS[behaviour])
    # When disqontrolctl talks to it
    result = _ctl("--socket", str(path), command)
    # Then it exits 3 with one line naming the socket, no traceback
    assert result.returncode == exitcodes.UNREACHABLE, result.stderr
    assert str(path) in _one_clean_line(result)


def test_a_stop_reply_without_a_pid_is_exit_3(stand_in):
    path = stand_in(_read_then(b'{"ok": true}\n'))
    result = _ctl("--socket", str(path), "stop")
    assert result.returncode == exitcodes.UNREACHABLE
    assert "without the master's pid" in _one_clean_line(result)


def test_a_silent_master_times_out(stand_in):
    # Given a socket that reads the request and never answers
    answered = threading.Event()
    path = stand_in(lambda conn: (conn.recv(65536), answered.wait(30)))
    # When a request waits for its reply
    try:
        with pytest.raises(MasterUnreachable, match=r"did not answer 'status' within 0.3 s"):
            request(path, "status", timeout=SILENCE_TIMEOUT)
    finally:
        answered.set()


@pytest.fixture
def ctrl_c_not_ignored() -> Iterator[None]:
    """A suite started in the background by a shell without job control
    (``make test &`` in a script) ignores SIGINT, and an ignored signal stays
    ignored through fork and exec: the disqontrolctl the test interrupts would
    never see its Ctrl-C. A handled one is reset to its default by exec, as a
    terminal gives it."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_stop_waits_is_one_line_and_exit_130(stand_in, ctrl_c_not_ignored):
    # Given a "master" that accepts the stop but never goes away
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    replied = threading.Event()
    reply = json.dumps({"ok": True, "pid": sleeper.pid, "fast": False}).encode() + b"\n"

    def accept_stop(conn: socket.socket) -> None:
        _read_then(reply)(conn)
        replied.set()

    try:
        path = stand_in(accept_stop)
        ctl = subprocess.Popen(CTL + ["--socket", str(path), "stop"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            # When the user presses Ctrl-C while disqontrolctl waits for it
            assert replied.wait(CTL_TIMEOUT), "disqontrolctl never asked to stop"
            ctl.send_signal(signal.SIGINT)
            _, stderr = ctl.communicate(timeout=CTL_TIMEOUT)
        finally:
            stop_process(ctl)
        # Then it says so in one line and exits 130
        assert ctl.returncode == EXIT_INTERRUPTED
        assert "Traceback" not in stderr and stderr.strip() == "disqontrolctl: interrupted"
    finally:
        stop_process(sleeper)


def test_a_closed_stdout_ends_quietly():
    # Given a command whose output outgrows a pipe whose reader has gone (`| head`)
    program = ("from disqontrol_client.cli import guarded\n"
               "import sys\n"
               "sys.exit(guarded('x', lambda: [print('y' * 1000) for _ in range(1000)] and 0))\n")
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    # When it runs to the end
    stderr = proc.stderr.read().decode()
    proc.wait(CTL_TIMEOUT)
    # Then it exits 1 without a word
    assert proc.returncode == exitcodes.FAILED
    assert stderr == ""


def test_config_and_socket_work_after_the_command(tmp_path):
    # Given a config of its own (sqlite beside it) and no master on a named socket
    config = tmp_path / "disqontrol.yml"
    config.write_text("disqontrol:\n  queues:\n    q:\n      worker: {type: command, command: /bin/true}\n")
    socket_path = tmp_path / "none.sock"
    # When the options follow the command, as `disqontrol addjob ... --config P` takes them
    queues = _ctl("queues", "--json", "--config", str(config))
    failed = _ctl("failed", "list", "--config", str(config))
    status = _ctl("status", "--socket", str(socket_path), "--config", str(config))
    # Then they are used, not refused as unrecognized arguments
    assert queues.returncode == exitcodes.OK, queues.stderr
    assert [row["queue"] for row in json.loads(queues.stdout)["queues"]] == ["q"]
    assert failed.returncode == exitcodes.OK and failed.stdout.strip() == "no failed jobs", failed.stderr
    assert status.returncode == exitcodes.UNREACHABLE
    assert str(socket_path) in _one_clean_line(status)


def test_an_option_before_the_command_stands_when_none_follows(tmp_path):
    # Given --socket before the command only
    socket_path = tmp_path / "before.sock"
    # When the command has no --socket of its own
    result = _ctl("--socket", str(socket_path), "reload")
    # Then the one given before it is used (not reset by the command's parser)
    assert result.returncode == exitcodes.UNREACHABLE
    assert str(socket_path) in _one_clean_line(result)


@pytest.mark.parametrize("options", ["", "?shards=2"])
def test_a_sqlite_database_that_does_not_exist_yet_is_noted(tmp_path, options):
    # Given a config whose sqlite database was never created (a new install, or a mistyped path)
    config = tmp_path / "disqontrol.yml"
    config.write_text(f"disqontrol:\n  broker: sqlite:typo/jobs.db{options}\n"
                      "  queues:\n    q:\n      worker: {type: command, command: /bin/true}\n")
    # When the queues are asked for twice
    first = _ctl("queues", "--config", str(config))
    second = _ctl("queues", "--config", str(config))
    # Then the first answer (empty queues) says on stderr that there was no database, naming it and the config
    assert first.returncode == exitcodes.OK, first.stderr
    assert f"no sqlite database at {tmp_path / 'typo' / 'jobs.db'} yet" in first.stderr
    assert str(config) in first.stderr and len(first.stderr.splitlines()) == 1
    # and the next does not (the file exists now)
    assert second.returncode == exitcodes.OK and second.stderr == ""
