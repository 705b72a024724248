"""Supervising the job processes of one batch: pipes, deadlines, exits.

Shared by the command worker (exec'd children) and the isolated Python worker
(forked children). One selector loop watches every child of the batch at
once: a pidfd per child wakes the loop the moment it exits (no polling), the
output pipes are drained as they fill (no deadlock on a chatty child), and
each child has its own deadline after which its whole process group gets
SIGTERM, then SIGKILL after a grace.
"""
from __future__ import annotations

import errno
import os
import selectors
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from disqontrol_client.job import Job
from disqontrold.workers.base import OnStart, Outcome

#: Seconds between SIGTERM and SIGKILL of a timed-out job's process group.
KILL_GRACE = 5.0
#: What a worker's spawn returns: a Child, or a value its adopt makes one of.
Started = Any
#: Bytes read from a pipe per wake-up.
READ_CHUNK = 65536
#: Bytes written to a child's stdin per wake-up (a pipe holds 64 KiB).
WRITE_CHUNK = 65536


@dataclass
class Capture:
    """Bytes read from one pipe of a child; keeps only the last ``limit``
    bytes when a limit is set, so a chatty worker cannot fill our memory."""

    limit: Optional[int] = None
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if self.limit is not None and len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]
            self.truncated = True

    def tail(self) -> bytes:
        if self.limit is not None and len(self.data) > self.limit:
            self.truncated = True
            return bytes(self.data[-self.limit :])
        return bytes(self.data)


@dataclass(eq=False)  # hashed by identity: kept in sets while running
class Child:
    """One running job process. ``outputs`` maps our read end of each of its
    pipes to a Capture; ``stdin`` is our write end of its stdin, if fed."""

    pid: int
    timeout: float
    outputs: dict[int, Capture]
    stdin: Optional[int] = None
    stdin_data: bytes = b""
    started: float = field(default_factory=time.monotonic)
    pidfd: int = -1
    # Filled in by supervise():
    status: Optional[int] = None  # the raw wait status
    timed_out: bool = False
    ended: float = 0.0
    _kill_at: Optional[float] = None
    _written: int = 0

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    @property
    def exit_code(self) -> Optional[int]:
        if self.status is None or not os.WIFEXITED(self.status):
            return None
        return os.WEXITSTATUS(self.status)

    @property
    def signal(self) -> Optional[int]:
        if self.status is None or not os.WIFSIGNALED(self.status):
            return None
        return os.WTERMSIG(self.status)


def _killpg(pid: int, sig: int) -> None:
    """Signal the child's process group; it may already be gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise


def prepare(child: Child) -> Child:
    """Open the child's pidfd and make our pipe ends non-blocking.

    Called right after the child starts: its pid cannot be reused before we
    reap it, so the pidfd names the right process."""
    child.pidfd = os.pidfd_open(child.pid)
    for fd in child.outputs:
        os.set_blocking(fd, False)
    if child.stdin is not None:
        os.set_blocking(child.stdin, False)
    return child


def _drain(fd: int, capture: Capture) -> bool:
    """Read what the pipe holds now; True at end of file."""
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        capture.add(chunk)


def _finish(child: Child, sel: selectors.BaseSelector) -> None:
    """The child has exited: collect the rest of its output, mop up its
    group if it was killed, reap it, release every descriptor."""
    for fd, capture in child.outputs.items():
        _drain(fd, capture)
    if child.timed_out:
        # The leader is a zombie until reaped, so its pgid is still ours:
        # kill any grandchild that outlived the SIGTERM.
        _killpg(child.pid, signal.SIGKILL)
    try:
        _, child.status = os.waitpid(child.pid, 0)
    except ChildProcessError:
        child.status = None  # reaped by someone else: counted as a failure
    child.ended = time.monotonic()
    for fd in [child.pidfd, *child.outputs, *([child.stdin] if child.stdin is not None else [])]:
        try:
            sel.unregister(fd)
        except KeyError:
            pass
        _close(fd)
    child.stdin = None


def _feed(child: Child, sel: selectors.BaseSelector) -> None:
    """Write the next piece of the child's stdin; close it when all is sent
    or the child stopped reading (EPIPE)."""
    assert child.stdin is not None
    done = False
    try:
        child._written += os.write(child.stdin, child.stdin_data[child._written : child._written + WRITE_CHUNK])
        done = child._written >= len(child.stdin_data)
    except BlockingIOError:
        return
    except BrokenPipeError:
        done = True
    if done:
        sel.unregister(child.stdin)
        _close(child.stdin)
        child.stdin = None


def _enforce(child: Child, now: float, grace: float) -> None:
    if not child.timed_out and now >= child.deadline:
        child.timed_out = True
        _killpg(child.pid, signal.SIGTERM)
        child._kill_at = now + grace
    elif child._kill_at is not None and now >= child._kill_at:
        _killpg(child.pid, signal.SIGKILL)
        child._kill_at = None


def _next_wake(child: Child) -> float:
    if child._kill_at is not None:
        return child._kill_at
    return child.deadline if not child.timed_out else float("inf")


def supervise(children: Sequence[Child], grace: float = KILL_GRACE) -> None:
    """Run until every child has exited and been reaped."""
    sel = selectors.DefaultSelector()
    pending = set(children)
    try:
        for child in children:
            sel.register(child.pidfd, selectors.EVENT_READ, (child, None))
            for fd in child.outputs:
                sel.register(fd, selectors.EVENT_READ, (child, fd))
            if child.stdin is not None:
                sel.register(child.stdin, selectors.EVENT_WRITE, (child, child.stdin))
        while pending:
            now = time.monotonic()
            for child in pending:
                _enforce(child, now, grace)
            wake = min(_next_wake(child) for child in pending)
            events = sel.select(None if wake == float("inf") else max(0.0, wake - now))
            for key, _mask in events:
                child, fd = key.data
                if child not in pending:
                    continue  # finished earlier in this batch of events
                if fd is None:
                    _finish(child, sel)
                    pending.discard(child)
                elif fd == child.stdin:
                    _feed(child, sel)
                elif _drain(fd, child.outputs[fd]):
                    sel.unregister(fd)  # EOF; closed when the child is reaped
    finally:
        for child in pending:  # interrupted (e.g. KeyboardInterrupt): leave no orphan
            _killpg(child.pid, signal.SIGKILL)
            _finish(child, sel)
        sel.close()


def run_batch(
    jobs: Sequence[Job],
    on_start: OnStart,
    spawn: Callable[[Job], Started],
    outcome: Callable[[Job, Child], Outcome],
    grace: float,
    cannot_start: str,
    adopt: Optional[Callable[[Started], Child]] = None,
) -> list[Outcome]:
    """Start every job of a batch, supervise them all, and return their
    outcomes in order. A job that cannot start (EAGAIN, ENOMEM, a vanished
    binary) fails alone with ``cannot_start: <error>``; the others run.

    The start loop does as little as it can: after each fork every page the
    parent writes is a copy-on-write fault (~5 us here), so ``spawn`` may
    return a bare value (a pid and a pipe) that ``adopt`` turns into a Child
    once the whole batch is started; pidfds are opened then too."""
    if on_start is not None:
        for job in jobs:
            on_start(job)
    started: list[Started | Outcome] = []
    for job in jobs:
        try:
            started.append(spawn(job))
        except OSError as exc:
            started.append(Outcome(False, error=f"{cannot_start}: {exc}"))
    children = [value if isinstance(value, Outcome) else prepare(adopt(value) if adopt else value)
                for value in started]
    supervise([child for child in children if isinstance(child, Child)], grace)
    return [child if isinstance(child, Outcome) else outcome(job, child) for job, child in zip(jobs, children)]
