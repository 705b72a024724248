"""The control server on its own: a real unix socket, real client sockets,
served by process() the way the master's loop serves it."""
from __future__ import annotations

import json
import os
import socket
import stat
import threading

import pytest

from disqontrol_client.errors import ConfigError
from disqontrold.control import ControlError, ControlServer

MAX_REQUEST = 1024


def _handlers():
    def status(request):
        return {"pid": os.getpid()}

    def refuse(request):
        raise ControlError("not now")

    def crash(request):
        raise ZeroDivisionError("boom")

    return {"status": status, "refuse": refuse, "crash": crash}


@pytest.fixture
def server(tmp_path):
    """A server served from a background thread (the test's own 'loop')."""
    srv = ControlServer(tmp_path / "run" / "disqontrol.sock", _handlers(), max_request_bytes=MAX_REQUEST).open()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            srv.process(timeout=0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield srv
    stop.set()
    thread.join(5)
    srv.close()


def _ask(path, raw: bytes, timeout=10.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(raw)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_status_request_gets_the_handlers_reply(server):
    reply = _ask(server.path, b'{"cmd": "status"}\n')
    assert reply == {"ok": True, "pid": os.getpid()}


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "must be an object"),
        (b'{"cmd": 5}\n', "must be an object"),
        (b'{"cmd": "dance"}\n', "unknown cmd 'dance'"),
        (b'{"cmd": "refuse"}\n', "not now"),
        (b'{"cmd": "crash"}\n', "ZeroDivisionError"),
    ],
)
def test_a_bad_request_gets_an_error_and_the_server_keeps_serving(server, raw, expected):
    # When a malformed / refused / crashing request arrives
    reply = _ask(server.path, raw)
    # Then it gets an error reply naming the problem
    assert reply["ok"] is False and expected in reply["error"]
    # And the next client is served normally
    assert _ask(server.path, b'{"cmd": "status"}\n')["ok"] is True


def test_several_requests_on_one_connection_get_replies_in_order(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.path))
        sock.sendall(b'{"cmd": "status"}\n{"cmd": "refuse"}\n')
        data = b""
        while data.count(b"\n") < 2:
            data += sock.recv(65536)
    first, second = (json.loads(line) for line in data.splitlines())
    assert first["ok"] is True and second == {"ok": False, "error": "not now"}


def test_an_oversized_request_is_refused_and_the_connection_closed(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.path))
        sock.sendall(b"x" * (MAX_REQUEST * 4))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    assert reply["ok"] is False and f"longer than {MAX_REQUEST}" in reply["error"]
    assert _ask(server.path, b'{"cmd": "status"}\n')["ok"] is True


def test_an_oversized_line_arriving_at_once_is_refused_too(server):
    # A whole oversized line with its newline, in one send: still refused.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.path))
        sock.sendall(b'{"cmd": "status", "pad": "' + b"x" * (MAX_REQUEST * 2) + b'"}\n')
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["ok"] is False and f"longer than {MAX_REQUEST}" in reply["error"]


def test_a_silent_client_does_not_block_others(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(server.path))
        idle.sendall(b'{"cmd": "sta')  # half a request, never finished
        assert _ask(server.path, b'{"cmd": "status"}\n', timeout=5)["ok"] is True


def test_socket_is_owner_only(server):
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert mode == 0o600
    assert not mode & (stat.S_IRWXO | stat.S_IRWXG)


def test_group_socket_is_0660_with_that_group(tmp_path):
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    srv = ControlServer(tmp_path / "g.sock", _handlers(), group=group).open()
    try:
        st = os.stat(srv.path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
    finally:
        srv.close()


def test_unknown_group_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="no-such-group-xyz"):
        ControlServer(tmp_path / "g.sock", _handlers(), group="no-such-group-xyz").open()


def test_stale_socket_is_replaced_and_removed_at_close(tmp_path):
    path = tmp_path / "disqontrol.sock"
    # Given a socket file left by a dead master (bound, then closed)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    # When a new server opens there
    srv = ControlServer(path, _handlers()).open()
    srv_thread_stop = threading.Event()
    thread = threading.Thread(target=lambda: [srv.process(0.05) for _ in iter(srv_thread_stop.is_set, True)], daemon=True)
    thread.start()
    try:
        # Then it serves on that path
        assert _ask(path, b'{"cmd": "status"}\n')["ok"] is True
    finally:
        srv_thread_stop.set()
        thread.join(5)
        srv.close()
    # And the file is gone after close
    assert not path.exists()


def test_a_live_socket_is_not_taken_over(server):
    with pytest.raises(ConfigError, match="another running master"):
        ControlServer(server.path, _handlers()).open()


def test_a_regular_file_in_the_way_is_refused(tmp_path):
    path = tmp_path / "disqontrol.sock"
    path.write_text("mine")
    with pytest.raises(ConfigError, match="not a socket"):
        ControlServer(path, _handlers()).open()
    assert path.read_text() == "mine"


def test_fileno_is_readable_when_a_client_connects(tmp_path):
    import selectors

    srv = ControlServer(tmp_path / "s.sock", _handlers()).open()
    outer = selectors.DefaultSelector()
    outer.register(srv.fileno(), selectors.EVENT_READ)
    try:
        assert outer.select(0) == []
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(srv.path))
        assert outer.select(5), "the master's selector must wake for a new client"
        client.close()
    finally:
        outer.close()
        srv.close()


def test_a_forked_child_closing_its_copy_does_not_deafen_the_server(tmp_path):
    # Given a server, and a child forked from its process that closes its copy
    # (as every consumer does right after the fork)
    srv = ControlServer(tmp_path / "s.sock", _handlers()).open()
    try:
        pid = os.fork()
        if pid == 0:
            srv.close()
            os._exit(0)
        os.waitpid(pid, 0)
        # Then the socket file is still there and the server still answers
        assert srv.path.exists()
        stop = threading.Event()
        thread = threading.Thread(target=lambda: [srv.process(0.05) for _ in iter(stop.is_set, True)], daemon=True)
        thread.start()
        try:
            assert _ask(srv.path, b'{"cmd": "status"}\n')["ok"] is True
        finally:
            stop.set()
            thread.join(5)
    finally:
        srv.close()
