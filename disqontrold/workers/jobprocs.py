"""Supervising job processes: pipes, deadlines, exits.

Shared by the command worker (exec'd children) and the isolated Python worker
(forked children), for one batch (``run_batch``) or for the consumer's sliding
window of jobs (``Supervisor``, see disqontrold/jobwindow.py). One epoll loop
watches every child at once: a pidfd per child wakes the loop the moment it
exits (no polling), the output pipes are drained as they fill (no deadlock on
a chatty child), and each child has its own deadline after which its whole
process group gets SIGTERM, then SIGKILL after its grace.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
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
#: A time that never comes (no deadline pending).
NEVER = float("inf")


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
    grace: float = KILL_GRACE  # s between the timeout's SIGTERM and SIGKILL
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


def signal_group(pid: int, sig: int) -> None:
    """Signal a job's process group (it runs in its own session); it may
    already be gone."""
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
        _nonblocking(fd)
    if child.stdin is not None:
        _nonblocking(child.stdin)
    return child


def discard(child: Child) -> None:
    """Kill and reap a started child that cannot be supervised (``prepare``
    failed, e.g. out of descriptors): no orphan, no zombie, no descriptor left."""
    signal_group(child.pid, signal.SIGKILL)
    try:
        os.waitpid(child.pid, 0)
    except ChildProcessError:
        pass
    for fd in [child.pidfd, *child.outputs, -1 if child.stdin is None else child.stdin]:
        if fd >= 0:
            _close(fd)
    child.stdin = None


def _nonblocking(fd: int) -> None:
    """O_NONBLOCK on our end of a fresh pipe: one F_SETFL, where
    ``os.set_blocking`` reads the flags first (the only other flag of a
    fresh pipe end is its access mode, which F_SETFL leaves alone)."""
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)


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


def _feed(child: Child) -> bool:
    """Write the next piece of the child's stdin; True when it is all sent
    or the child stopped reading (EPIPE): then the pipe can be closed."""
    assert child.stdin is not None
    try:
        child._written += os.write(child.stdin, child.stdin_data[child._written : child._written + WRITE_CHUNK])
    except BlockingIOError:
        return False
    except BrokenPipeError:
        return True
    return child._written >= len(child.stdin_data)


def _enforce(child: Child, now: float) -> None:
    if not child.timed_out and now >= child.deadline:
        child.timed_out = True
        signal_group(child.pid, signal.SIGTERM)
        child._kill_at = now + child.grace
    elif child._kill_at is not None and now >= child._kill_at:
        signal_group(child.pid, signal.SIGKILL)
        child._kill_at = None


def _next_wake(child: Child) -> float:
    if child._kill_at is not None:
        return child._kill_at
    return child.deadline if not child.timed_out else NEVER


class Supervisor:
    """The epoll loop over a changing set of children: one batch
    (``supervise``) or a consumer's sliding job window. Children are added
    while others run; ``wait`` returns those that ended, reaped.

    Two savings per job, for the many short ones: a child's pipes are only
    watched from the first ``wait`` that finds it still running (pipes are
    only read inside ``wait`` anyway, so nothing waits longer; a job that
    is over by then costs no epoll registration), and deadlines are checked
    only when the earliest one is due, not on every wake-up."""

    def __init__(self, before_reap: Optional[Callable[[int], None]] = None) -> None:
        self._before_reap = before_reap  # called with a pid just before it is reaped
        self._poll = select.epoll()
        self._fds: dict[int, Child] = {}  # every watched fd -> its child
        self.running: dict[Child, None] = {}  # insertion-ordered set
        self._new: list[Child] = []  # added since the last wait: pipes not watched yet
        self._at_eof: set[int] = set()  # output pipes read to their end
        self._check_at = NEVER  # the earliest deadline / SIGKILL time of a running child

    def __len__(self) -> int:
        return len(self.running)

    def _watch(self, fd: int, child: Child, events: int) -> None:
        self._poll.register(fd, events)
        self._fds[fd] = child

    def _unwatch(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def add(self, child: Child) -> None:
        """Watch a prepared child (see ``prepare``) until it ends."""
        self._watch(child.pidfd, child, select.EPOLLIN)
        self.running[child] = None
        self._new.append(child)
        self._check_at = min(self._check_at, _next_wake(child))

    def _watch_pipes(self) -> None:
        """Watch the pipes of the children added since the last look that still run."""
        for child in self._new:
            if child in self.running:
                for fd in child.outputs:
                    self._watch(fd, child, select.EPOLLIN)
                if child.stdin is not None:
                    self._watch(child.stdin, child, select.EPOLLOUT)
        self._new = []

    def _enforce_all(self, now: float) -> None:
        if now < self._check_at:
            return
        for child in self.running:
            _enforce(child, now)
        self._check_at = min(map(_next_wake, self.running), default=NEVER)

    def wait(self, timeout: Optional[float] = None) -> list[Child]:
        """Wait until at least one child ends, or ``timeout`` seconds pass
        (None: no limit; 0: only look), killing the overdue meanwhile.
        Returns the children that ended, reaped, their descriptors closed."""
        now = time.monotonic()
        end = NEVER if timeout is None else now + timeout
        ended: list[Child] = []
        if self._new:
            self._dispatch(self._poll.poll(0), ended)  # reap the already gone first
            self._watch_pipes()
        while self.running and not ended:
            self._enforce_all(now)
            wake = min(self._check_at, end)
            self._dispatch(self._poll.poll(-1 if wake == NEVER else max(0.0, wake - now)), ended)
            now = time.monotonic()
            if now >= end:
                break
        return ended

    def _dispatch(self, events: list[tuple[int, int]], ended: list[Child]) -> None:
        for fd, _mask in events:
            child = self._fds.get(fd)
            if child is None:
                continue  # closed earlier in this batch of events
            if fd == child.pidfd:
                self._finish(child)
                ended.append(child)
            elif fd == child.stdin:
                if _feed(child):
                    self._unwatch(fd)
                    _close(fd)
                    child.stdin = None
            elif _drain(fd, child.outputs[fd]):
                self._unwatch(fd)  # closed when the child is reaped
                self._at_eof.add(fd)

    def _finish(self, child: Child) -> None:
        """The child has exited: collect the rest of its output, mop up its
        group if it was killed, reap it, release every descriptor."""
        for fd, capture in child.outputs.items():
            if fd not in self._at_eof:
                _drain(fd, capture)
        if child.timed_out:
            # The leader is a zombie until reaped, so its pgid is still ours:
            # kill any grandchild that outlived the SIGTERM.
            signal_group(child.pid, signal.SIGKILL)
        if self._before_reap is not None:
            self._before_reap(child.pid)  # while the zombie still holds the pid
        try:
            _, child.status = os.waitpid(child.pid, 0)
        except ChildProcessError:
            child.status = None  # reaped by someone else: counted as a failure
        child.ended = time.monotonic()
        for fd in [child.pidfd, *child.outputs, *([child.stdin] if child.stdin is not None else [])]:
            self._unwatch(fd)
            self._at_eof.discard(fd)
            _close(fd)
        child.stdin = None
        del self.running[child]

    def kill_all(self) -> None:
        """SIGKILL every running child's group and reap it: nothing is left
        behind when the loop is interrupted or the consumer gives up."""
        for child in list(self.running):
            signal_group(child.pid, signal.SIGKILL)
            self._finish(child)
        self._new = []

    def close(self) -> None:
        self.kill_all()
        self._poll.close()


def supervise(children: Sequence[Child], grace: float = KILL_GRACE) -> None:
    """Run until every child has exited and been reaped."""
    supervisor = Supervisor()
    try:
        for child in children:
            child.grace = grace
            supervisor.add(child)
        while supervisor:
            supervisor.wait()
    finally:
        supervisor.close()  # interrupted (e.g. KeyboardInterrupt): leave no orphan


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
