"""Cross-process wake-ups for the sqlite broker: unix datagram sockets in a
directory beside the database (``<db>.wake/``).

Why sockets: a consumer blocked in ``reserve`` must learn of an add by another
process within milliseconds, and polling the database that often costs every
idle consumer a read per few ms. A waiter binds one datagram socket in the
directory and sleeps in ``select()``; a producer, after its commit, sends one
byte to each socket there. The kernel does the rest: no disk polling, no
daemon, and a dead waiter's socket is found (ECONNREFUSED) and removed by the
next producer. A waiter binds *before* it checks the database, so an add
committed between its check and its sleep still leaves a byte to wake it.

Unix socket paths are limited to ~107 bytes, so long paths are reached
through ``/proc/self/fd/<dir fd>/name`` (Linux resolves the directory fd).
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from typing import Callable, Optional, TypeVar

from disqontrol_client.brokers.sqlite_store import give_to_dir_owner
from disqontrol_client.logfmt import log_event

log = logging.getLogger(__name__)
T = TypeVar("T")

WAKE_DIR_SUFFIX = ".wake"
SOCKET_SUFFIX = ".sock"
MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 including the NUL
WAKE_BYTE = b"w"
DRAIN_CHUNK = 64
COARSE_MTIME_NS = 50_000_000  # a listing this long after the dir's mtime is complete
RETRY_UNUSABLE = 60.0  # s before an unusable directory is tried again
_GONE = (errno.ECONNREFUSED, errno.ENOENT)
_FULL = (errno.EAGAIN, errno.ENOBUFS)


class WakeDir:
    """The directory of waiting consumers of one database."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + WAKE_DIR_SUFFIX
        self._dir_fd: Optional[int] = None
        self._sender: Optional[socket.socket] = None
        self._names: list[str] = []
        self._listed_mtime = -1
        self._listed_at_ns = 0
        self._pid = os.getpid()
        self._retry_at = 0.0  # monotonic time before which an unusable dir is not retried
        self._identity = (0, 0)  # (st_dev, st_ino) of the directory _dir_fd holds
        self._lock = threading.Lock()

    def _forked(self) -> None:
        """After a fork the fd is shared and the sockets are the parent's."""
        if self._pid != os.getpid():
            self._dir_fd = None
            self._sender = None
            self._lock = threading.Lock()  # another thread may have held it at fork
            self._pid = os.getpid()

    def ensure(self) -> Optional[os.stat_result]:
        """The directory's stat, created or opened if need be; None (logged)
        if it cannot be used."""
        self._forked()
        with self._lock:
            return self._usable()

    def _usable(self) -> Optional[os.stat_result]:
        """``ensure``, under the lock: threads sharing one broker (a web app's
        producer) must not reopen the directory under each other.

        Looked up by path each time: a directory deleted or replaced under a
        running process (a tmp cleaner, an operator's ``rm -r``) is made
        again and reopened. Held by its old descriptor, every idle consumer
        failed to bind, logged it and polled the database 20 times a second,
        and the sockets it bound in a directory made again were never
        removed, nor woken by a producer still holding the old one."""
        if time.monotonic() < self._retry_at:
            return None
        if self._dir_fd is not None:
            try:
                seen = os.stat(self.path)
            except FileNotFoundError:
                seen = None
            except OSError as exc:
                self.unusable(exc)
                return None
            if seen is not None and (seen.st_dev, seen.st_ino) == self._identity:
                return seen
            self.close()
            log_event(log, "wake_dir_reopened", logging.WARNING, path=self.path,
                      reason="replaced" if seen is not None else "deleted")
        try:
            os.makedirs(self.path, exist_ok=True)
            give_to_dir_owner([self.path])
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            seen = os.stat(dir_fd)
        except OSError as exc:
            self.unusable(exc)
            return None
        self._dir_fd, self._identity = dir_fd, (seen.st_dev, seen.st_ino)
        self._listed_mtime = -1
        return seen

    def unusable(self, error: OSError) -> None:
        """Poll instead for RETRY_UNUSABLE s: one log line then, not one per
        add or per wait (a full disk refuses every bind)."""
        self._retry_at = time.monotonic() + RETRY_UNUSABLE
        log_event(log, "wake_dir_unusable", logging.WARNING, path=self.path, error=error, fallback="poll",
                  retry_in=RETRY_UNUSABLE)

    def address(self, name: str) -> str:
        """A bindable/sendable path of ``name`` in the directory."""
        full = os.path.join(self.path, name)
        if len(os.fsencode(full)) <= MAX_SOCKET_PATH:
            return full
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def notify(self) -> None:
        """Wake every waiter (call after a commit that made a job due sooner)."""
        self._forked()
        with self._lock:
            self._wake_all()

    def _wake_all(self) -> None:
        """``notify``, under the lock."""
        seen = self._usable()  # never raises: the add is committed, and raising would
        if seen is None:       # make its caller add it again; waiters find it at their next poll
            return
        mtime = seen.st_mtime_ns
        # Directory times tick coarsely (a few ms): a listing taken in the
        # same tick as a bind may miss it, so it is trusted only once taken
        # well after the tick it saw.
        if mtime != self._listed_mtime or self._listed_at_ns - mtime < COARSE_MTIME_NS:
            self._listed_at_ns = time.time_ns()
            self._names = [n for n in os.listdir(self._dir_fd) if n.endswith(SOCKET_SUFFIX)]  # type: ignore[arg-type]
            self._listed_mtime = mtime
        if not self._names:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for name in self._names:
            try:
                self._sender.sendto(WAKE_BYTE, self.address(name))
            except OSError as exc:
                if exc.errno in _GONE:
                    self._remove_stale(name)
                elif exc.errno not in _FULL:  # full: that waiter has a wake-up pending
                    raise

    def _remove_stale(self, name: str) -> None:
        """A socket nobody listens on: its process died without cleaning up."""
        try:
            os.unlink(name, dir_fd=self._dir_fd)
            log_event(log, "wake_socket_removed", path=os.path.join(self.path, name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._sender is not None and self._pid == os.getpid():
            self._sender.close()
        self._sender = None
        if self._dir_fd is not None and self._pid == os.getpid():
            os.close(self._dir_fd)
        self._dir_fd = None


class Waiter:
    """One consumer's wake-up socket, bound only while it waits: producers
    send to every socket in the directory, so a busy consumer's socket would
    cost each add a syscall for nothing (8 of them cut adds from 47,000/s
    to 16,000/s)."""

    def __init__(self, wake_dir: WakeDir) -> None:
        self._dir = wake_dir
        self._sock: Optional[socket.socket] = None
        self._name = ""
        self._pid = os.getpid()

    def arm(self) -> bool:
        """Bind (if not bound) and swallow pending wake-ups, before checking
        the db. False when the directory is unusable: the caller then polls."""
        if self._pid != os.getpid():
            self._sock = None  # the parent's socket: leave it to the parent
            self._pid = os.getpid()
        if self._sock is None:
            if self._dir.ensure() is None:
                return False
            self._name = f"{os.getpid()}-{os.urandom(4).hex()}{SOCKET_SUFFIX}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._dir.address(self._name))
            except OSError as exc:
                sock.close()
                self._dir.unusable(exc)
                return False
            sock.setblocking(False)
            self._sock = sock
        self._drain()
        return True

    def _drain(self) -> None:
        assert self._sock is not None
        try:
            while self._sock.recv(DRAIN_CHUNK):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> None:
        """Sleep until a wake-up arrives or ``timeout`` seconds pass."""
        if self._sock is None:
            select.select([], [], [], max(timeout, 0))
            return
        select.select([self._sock], [], [], max(timeout, 0))

    def disarm(self) -> None:
        """Stop waiting: remove the socket so producers skip us."""
        if self._sock is None or self._pid != os.getpid():
            self._sock = None
            return
        if self._dir._dir_fd is not None:
            try:
                os.unlink(self._name, dir_fd=self._dir._dir_fd)
            except FileNotFoundError:
                pass
        self._sock.close()
        self._sock = None


def lease_or_wait(waiter: Waiter, lease: Callable[[], list[T]], until_next_due: Callable[[bool], float],
                  deadline: float) -> list[T]:
    """A blocking reserve's wait, after a first ``lease()`` came back empty:
    bind the waiter, try again (an add between the first try and the bind
    left its wake-up byte), then sleep until a wake-up, the next due time
    (``until_next_due(armed)``) or ``deadline`` (monotonic), and try again."""
    armed = waiter.arm()
    try:
        while True:
            got = lease()
            if got:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            waiter.wait(min(remaining, until_next_due(armed)))
            armed = waiter.arm()
    finally:
        waiter.disarm()
