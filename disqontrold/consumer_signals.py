"""What the master's signals ask of a consumer (SPEC §8).

The handlers only record the request (a flag, or the jobs' fast-quit guard);
the consumer's loop acts on it between jobs. A signal also wakes the
consumer's waits that take no job (a broker down, every queue held) through
a self-pipe, so a stop is not held up by them.
"""
from __future__ import annotations

import os
import select
import signal
from typing import Callable

from disqontrold.log import reopen_logs
from disqontrold.signals import MASTER_SIGNALS

PIPE_READ = 4096  # bytes drained from the self-pipe per read


class ConsumerSignals:
    """The consumer's signal handlers and the flags they set."""

    def __init__(self, on_quit: Callable[[], None]) -> None:
        self.stopping = False  # SIGTERM / SIGINT: finish the jobs in hand, then exit
        self.reopen_requested = False  # SIGUSR1: logrotate moved the log file
        self._on_quit_request = on_quit  # SIGQUIT: fast quit
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        for ignored in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(ignored, self._on_ignored)  # a handler, not SIG_IGN: exec resets it
        # Blocked since the fork (children.fork_consumer): what the master sent
        # meanwhile is delivered now, to these handlers.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_quit(self, signum: int, frame: object) -> None:
        self._on_quit_request()

    def _on_reopen(self, signum: int, frame: object) -> None:
        self.reopen_requested = True

    def _on_ignored(self, signum: int, frame: object) -> None:
        pass

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, woken early by any handled signal. The
        waits that take no job reopen the log here: their lines must not go
        to a rotated file."""
        select.select([self._wake_r], [], [], seconds)
        try:
            while os.read(self._wake_r, PIPE_READ):
                pass
        except BlockingIOError:
            pass
        self.reopen_logs_if_asked()

    def reopen_logs_if_asked(self) -> None:
        if self.reopen_requested:
            self.reopen_requested = False
            reopen_logs()
