"""Trying a held queue's worker setup in a forked child.

A held queue's setup (``setup_environment()`` and the factory) is tried again
every 5 s to 60 s (held_queues.py). Run in the consumer itself, a try that
hangs (a connect to a database that is down, 30 s until its timeout) stopped
everything the consumer does meanwhile: its other queues' jobs, the
deadlines and output of the jobs its window runs, its heartbeat (so the
master killed it as hung). So each retry runs in a child forked for it,
watched without blocking and killed past the group's ``start_timeout``;
only once a child's setup has worked does the consumer build the worker
itself (the environment must live in the process that runs the jobs).
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from disqontrold.children import describe_exit, set_parent_death_signal

#: Bytes of the child's traceback sent back (a pipe holds 64 KiB unread).
TRACEBACK_BYTES = 16384
READ_CHUNK = 65536
#: The consumer's signals the child must not run the consumer's handlers for.
RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP,
                 signal.SIGTTIN, signal.SIGTTOU)
STDERR = 2
EXIT_REPORTED = 0
EXIT_UNREPORTED = 70


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    error: str = ""
    traceback: str = ""


class SetupProbe:
    """``build()`` running in a child of its own session; ``poll`` never blocks."""

    def __init__(self, build: Callable[[], object], timeout: float) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(build, parent, read_fd, write_fd)  # never returns
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.pid = pid
        self._read_fd: Optional[int] = read_fd
        self._report = b""

    def poll(self, now: float) -> Optional[ProbeResult]:
        """The outcome once the child has ended (or was killed at the deadline); None while it runs."""
        self._drain()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            if now < self.deadline:
                return None
            self.kill()
            return ProbeResult(False, f"the setup did not return within {self.timeout:g} s "
                                      f"(the group's start_timeout); killed")
        self._drain()
        self._close()
        code, _, how = describe_exit(status)
        if code == EXIT_REPORTED:
            report = json.loads(self._report) if self._report else {}
            if not report:
                return ProbeResult(True)
            return ProbeResult(False, report["error"], report["traceback"])
        return ProbeResult(False, f"the setup's process ended ({how}) without answering")

    def kill(self) -> None:
        """End the child and whatever it started (its session), and reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:  # not its own session yet (just forked): the child alone
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(self.pid, 0)
        self._close()

    def _drain(self) -> None:
        while self._read_fd is not None:
            try:
                chunk = os.read(self._read_fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._report += chunk

    def _close(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None


def _child(build: Callable[[], object], parent: int, read_fd: int, write_fd: int) -> None:
    """In the child: build, send back {} or the error, and _exit (no cleanup of the consumer's)."""
    code = EXIT_UNREPORTED
    try:
        os.close(read_fd)
        _close_pipe_write_ends(keep=write_fd)
        os.setsid()  # a kill at the deadline takes what the setup started along
        set_parent_death_signal()
        if os.getppid() != parent:
            os._exit(EXIT_UNREPORTED)
        signal.set_wakeup_fd(-1)  # a signal here must not wake the consumer's loop
        for signum in RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        try:
            build()
            report = {}
        except BaseException as exc:  # noqa: BLE001 -- the user's setup: its error is the answer
            report = {"error": f"{type(exc).__name__}: {exc}"[:TRACEBACK_BYTES],
                      "traceback": traceback.format_exc()[-TRACEBACK_BYTES:]}
        with os.fdopen(write_fd, "wb") as out:  # the whole report (under what a pipe holds)
            out.write(json.dumps(report).encode())
        code = EXIT_REPORTED
    finally:
        os._exit(code)


def _close_pipe_write_ends(keep: int) -> None:
    """In the child: close the write ends of pipes inherited from the
    consumer (our report's ``keep`` aside): a window job reading its body
    on stdin sees its end only once every copy of that write end is closed,
    and a try may run for start_timeout."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= STDERR or fd == keep:
            continue
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                os.close(fd)
        except OSError:  # the directory's own descriptor, gone by now
            continue
