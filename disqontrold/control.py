"""The control socket: `disqontrolctl` talks to the master through it.

A unix stream socket ``run_dir/disqontrol.sock`` (never a TCP port), mode
0600, or 0660 and chgrp'd to ``control_socket_group``. The protocol is JSON
lines: one request object per line, ``{"cmd": "status", ...}``, one reply
line ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

The server has no thread: every socket is non-blocking and multiplexed on
its own epoll selector, whose single fd the master registers in its loop
(``fileno()`` + ``process()``), so a slow or hostile client can never stall
the master. A malformed request gets an error reply; the master runs on.
"""
from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import selectors
import socket
import stat
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol

from disqontrol_client.errors import ConfigError, DisqontrolError
from disqontrol_client.logfmt import log_event

log = logging.getLogger(__name__)

SOCKET_NAME = "disqontrol.sock"
SOCKET_MODE = 0o600
GROUP_SOCKET_MODE = 0o660
ALL_PERMISSIONS = 0o777  # a umask is the complement of the mode wanted
MAX_REQUEST_BYTES = 64 * 1024  # a request is a short command line, never a job body
MAX_REPLY_BUFFER = 16 * 1024 * 1024  # a client that never reads is dropped past this
LISTEN_BACKLOG = 16
RECV_CHUNK = 65536
MAX_CLIENTS = 64
REQUEST_SNIPPET_CHARS = 200  # of a bad request, quoted back in the error
KEEP_INTERVAL = 1.0  # s between two looks that the socket file is still ours

Handler = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class ControlError(DisqontrolError):
    """A request the master refuses; its message goes back to the client."""


def default_socket_path(run_dir: Path) -> Path:
    return Path(run_dir) / SOCKET_NAME


def error_reply(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(uid)


class _Client:
    """One connection: bytes read so far and the reply bytes not yet sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closing = False  # close once outbuf is flushed


class ControlServer:
    """Serves ``handlers[cmd](request) -> reply`` on a unix socket.

    A handler returns the reply fields (``ok`` is added); it raises
    ControlError (or any DisqontrolError) to refuse with a message."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        group: Optional[str] = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.group = group
        self.max_request_bytes = max_request_bytes
        self._selector = selectors.DefaultSelector()
        self._listener: Optional[socket.socket] = None
        self._clients: dict[int, _Client] = {}
        self._owner_pid: Optional[int] = None  # a forked child closes, never unlinks
        self._bound: Optional[tuple[int, int]] = None  # (st_dev, st_ino) of the socket file we bound

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> "ControlServer":
        """Bind the socket (replacing a stale one) with its final permissions."""
        gid = self._group_id()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # Bind under a umask that leaves no window where the socket is open to all.
        mode = SOCKET_MODE if gid is None else GROUP_SOCKET_MODE
        old_umask = os.umask(ALL_PERMISSIONS & ~mode)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        if gid is not None:
            self._give_to_group(listener, gid)
        os.chmod(self.path, mode)
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._bound = _identity(self.path)
        self._owner_pid = os.getpid()
        self._selector.register(listener, selectors.EVENT_READ, None)
        log_event(log, "control_socket_open", path=self.path, group=self.group)
        return self

    def _group_id(self) -> Optional[int]:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise ConfigError(
                f"disqontrol.control_socket_group: group {self.group!r} does not exist on this machine"
            ) from None

    def _give_to_group(self, listener: socket.socket, gid: int) -> None:
        """chgrp the bound socket; a group the daemon's user is not in is a
        config error (exit 2, one line), not a traceback and a restart loop."""
        try:
            os.chown(self.path, -1, gid)
        except PermissionError:
            listener.close()
            self.path.unlink(missing_ok=True)
            user = _user_name(os.geteuid())
            raise ConfigError(
                f"disqontrol.control_socket_group: cannot give the control socket to group {self.group!r}: "
                f"the daemon's user {user!r} is not a member of it; add it (usermod -aG {self.group} {user}) "
                "or name a group it is in"
            ) from None

    def _remove_stale(self) -> None:
        """A socket file left by a dead master is removed; a live one is not ours
        to take (the pidfile normally refuses that case first)."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"control socket path {self.path} exists and is not a socket; remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)
            log_event(log, "control_socket_stale_removed", path=self.path)
            return
        finally:
            probe.close()
        raise ConfigError(f"control socket {self.path} is served by another running master")

    def close(self) -> None:
        """Close every connection and remove the socket file. Idempotent.

        In a forked consumer (which closes the master's files) only our copies
        of the fds are closed: the epoll instance is shared with the master, so
        unregistering there would deafen the master, and the socket file is
        still the master's."""
        if os.getpid() != self._owner_pid:
            for client in self._clients.values():
                client.sock.close()
            if self._listener is not None:
                self._listener.close()
            self._clients.clear()
            self._listener = None
            self._selector.close()
            return
        for client in list(self._clients.values()):
            self._drop(client)
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
            self.path.unlink(missing_ok=True)
            log_event(log, "control_socket_closed", path=self.path)
        self._selector.close()

    def keep(self) -> float:
        """The master's timer: bind again when the socket file is gone or is
        another's (run_dir removed under the running master). Else
        ``disqontrolctl`` (and ``systemctl reload``) said no master was
        running, and a second master could start beside this one."""
        if self._bound is not None and _identity(self.path) != self._bound:
            log_event(log, "control_socket_lost", logging.WARNING, path=self.path)
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            try:
                self.open()
            except (OSError, DisqontrolError) as exc:  # tried again at the next look
                log_event(log, "control_socket_reopen_failed", logging.ERROR, path=self.path, error=exc)
        return time.monotonic() + KEEP_INTERVAL

    # -- the master's loop ---------------------------------------------------
    def fileno(self) -> int:
        """One fd that is readable whenever a client needs service (the epoll fd)."""
        return self._selector.fileno()  # type: ignore[attr-defined]

    def process(self, timeout: float = 0) -> None:
        """Serve whatever is ready now (or within ``timeout``); never blocks on a client."""
        for key, events in self._selector.select(timeout):
            if key.data is None:
                self._accept()
                continue
            client: _Client = key.data
            if events & selectors.EVENT_READ:
                self._read(client)
            if client.sock.fileno() >= 0 and events & selectors.EVENT_WRITE:
                self._flush(client)

    # -- connections ---------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self._clients) >= MAX_CLIENTS:
                log_event(log, "control_client_refused", logging.WARNING, reason="too_many_clients")
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock)
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log_event(log, "control_client_error", logging.WARNING, error=exc)
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        if client.closing:
            return
        client.inbuf += data
        while b"\n" in client.inbuf and not client.closing:
            line, _, rest = bytes(client.inbuf).partition(b"\n")
            client.inbuf = bytearray(rest)
            if len(line) > self.max_request_bytes:
                self._refuse_oversized(client)
                return
            self._reply(client, self.handle_line(line))
        if len(client.inbuf) > self.max_request_bytes:
            self._refuse_oversized(client)

    def _refuse_oversized(self, client: _Client) -> None:
        """Reply with the error, then hang up: the rest of the stream is garbage."""
        client.inbuf.clear()
        client.closing = True
        self._reply(client, error_reply(f"request longer than {self.max_request_bytes} bytes"))

    def _reply(self, client: _Client, reply: Mapping[str, Any]) -> None:
        client.outbuf += json.dumps(reply, default=str, separators=(",", ":")).encode() + b"\n"
        if len(client.outbuf) > MAX_REPLY_BUFFER:
            log_event(log, "control_client_dropped", logging.WARNING, reason="not_reading")
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbuf) if client.outbuf else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.outbuf[:sent]
        if not client.outbuf and client.closing:
            self._drop(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbuf else 0)
        self._selector.modify(client.sock, events, client)

    def _drop(self, client: _Client) -> None:
        client.closing = True
        fd = client.sock.fileno()
        if fd >= 0:
            self._selector.unregister(client.sock)
            self._clients.pop(fd, None)
        client.sock.close()

    # -- requests ------------------------------------------------------------
    def handle_line(self, line: bytes) -> dict[str, Any]:
        """One request line to one reply; never raises for a bad request."""
        try:
            request = json.loads(line)
        except ValueError as exc:
            return error_reply(f"request is not JSON ({exc}); send one object per line like {{\"cmd\": \"status\"}}")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return error_reply(f"request must be an object with a string \"cmd\"; got {line[:REQUEST_SNIPPET_CHARS]!r}")
        cmd = request["cmd"]
        handler = self.handlers.get(cmd)
        if handler is None:
            return error_reply(f"unknown cmd {cmd!r}; allowed: {', '.join(sorted(self.handlers))}")
        try:
            reply = dict(handler(request))
        except DisqontrolError as exc:
            return error_reply(str(exc))
        except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the master
            log.exception(f"event=control_handler_failed cmd={cmd}")
            return error_reply(f"{cmd} failed in the master: {type(exc).__name__}: {exc}")
        reply.setdefault("ok", True)
        return reply


class MasterLike(Protocol):
    """What the control commands need of the master (disqontrold.master.Master)."""

    config: Any
    on_stop: list[Callable[[], None]]

    def register(self, fileobj: Any, callback: Callable[[Any], None]) -> None: ...
    def add_timer(self, callback: Callable[[], Optional[float]]) -> None: ...
    def status(self) -> Mapping[str, Any]: ...
    def request_reload(self) -> tuple[bool, str]: ...
    def request_stop(self, fast: bool) -> None: ...


def master_handlers(master: MasterLike) -> dict[str, Handler]:
    """The commands the master serves: status, reload, stop."""

    def status(request: Mapping[str, Any]) -> Mapping[str, Any]:
        reply = dict(master.status())
        # Plug-ins add their part (the built-in scheduler: "scheduler").
        for key, hook in getattr(master, "status_hooks", {}).items():
            part = hook()
            if part is not None:
                reply[key] = part
        return reply

    def reload(request: Mapping[str, Any]) -> Mapping[str, Any]:
        taken, reason = master.request_reload()
        return {"taken": bool(taken), "reason": reason}

    def stop(request: Mapping[str, Any]) -> Mapping[str, Any]:
        fast = request.get("fast", False)
        if not isinstance(fast, bool):
            raise ControlError(f"stop: \"fast\" must be true or false, got {fast!r}")
        master.request_stop(fast)
        return {"pid": os.getpid(), "fast": fast}

    return {"status": status, "reload": reload, "stop": stop}


def _identity(path: Path) -> Optional[tuple[int, int]]:
    """(st_dev, st_ino) of the file at ``path`` itself; None when there is none."""
    try:
        seen = os.lstat(path)
    except FileNotFoundError:
        return None
    return seen.st_dev, seen.st_ino


def attach_to_master(master: MasterLike) -> ControlServer:
    """Plug-in hook (disqontrold.cli): serve the control socket from the
    master's loop; the socket file goes when the master stops."""
    config = master.config
    server = ControlServer(
        default_socket_path(config.run_dir), master_handlers(master), group=config.control_socket_group
    ).open()
    master.register(server, lambda _fileobj: server.process(0))
    master.add_timer(server.keep)
    master.on_stop.append(server.close)
    return server
