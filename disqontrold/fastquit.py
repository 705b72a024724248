"""A consumer's fast stop (SIGQUIT): leave at once, but first tell the broker
what need not wait for a lease.

Exiting straight from the signal handler left two kinds of jobs leased: the
successes not acked yet (they ride on the next reserve), which ran again once
their lease ran out, and the jobs of an inline batch not started yet, which
came back counted as a failure (with ``max_retries: 0``, parked unrun). The
handler now acks the first and nacks the second before ``os._exit``, through
the consumer's own connection, so only when that connection is idle: a
SIGQUIT that lands inside a broker call waits for the call to return (a
reserve blocks 1 s at most; the master SIGKILLs after 5 s anyway).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn


class FastQuit:
    """Runs ``hand_back`` then exits with ``exit_code``, now or, when asked
    inside a broker call, as that call ends."""

    def __init__(self, hand_back: Callable[[], None], exit_code: int) -> None:
        self._hand_back = hand_back
        self._exit_code = exit_code
        self._calls = 0  # broker calls in progress (nesting allowed)
        self._pending = False
        # A job process forked from the consumer has this handler until it
        # resets its signals: it must never use the consumer's connection.
        self._pid = os.getpid()

    @contextmanager
    def broker_call(self) -> Iterator[None]:
        """Mark a use of the consumer's broker connection."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1
            if self._pending and not self._calls:
                self.now()

    def request(self) -> None:
        """From the SIGQUIT handler."""
        if self._calls:
            self._pending = True
        else:
            self.now()

    def now(self) -> NoReturn:
        try:
            if os.getpid() == self._pid:
                self._hand_back()
        finally:
            os._exit(self._exit_code)
