"""Signal handling without work in the handler (gunicorn's lesson): the
handler only records the signal; ``signal.set_wakeup_fd`` writes a byte to a
non-blocking pipe the loop's selector watches, and the loop dispatches."""
from __future__ import annotations

import collections
import os
import signal
from typing import Iterable

MASTER_SIGNALS = (
    signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD,
)
READ_CHUNK = 4096


class SignalQueue:
    """Signals received, in order, plus a pipe that becomes readable on each."""

    def __init__(self, signals: Iterable[signal.Signals] = MASTER_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.pending: collections.deque[int] = collections.deque()
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup = -1

    def install(self) -> None:
        self._previous_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in self.signals:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: object) -> None:
        self.pending.append(signum)  # nothing else: no logging, no locks

    def fileno(self) -> int:
        return self.read_fd

    def drain_pipe(self) -> None:
        """Empty the wakeup pipe (the deque holds the signals)."""
        try:
            while os.read(self.read_fd, READ_CHUNK):
                pass
        except BlockingIOError:
            pass

    def pop_all(self) -> list[int]:
        out = []
        while self.pending:
            out.append(self.pending.popleft())
        return out

    def close(self) -> None:
        """Forget the handlers and the pipe (in a freshly forked child)."""
        signal.set_wakeup_fd(-1)
        for signum in self.signals:
            signal.signal(signum, signal.SIG_DFL)
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)
