"""Calling a function in a short-lived forked child and getting its
(pickled) return value back.

The master uses it for work whose imports it must not keep: checking the
user's Python workers (the master never imports user code) and validating
a config (yaml, jsonschema and croniter would make every consumer, and each
isolated job's fork, bigger).
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import time
from typing import Any, Callable, Optional

#: Exit code of the child when it could not report.
CHILD_CRASHED = 70
READ_CHUNK = 65536


class NoAnswer(Exception):
    """The child died, or ran past its timeout (then it was killed)."""

    def __init__(self, status: int, timeout: float) -> None:
        super().__init__(f"the checker exited with status {status} or took longer than {timeout:g}s")
        self.status = status


def call_in_child(func: Callable[[], Any], timeout: float) -> Any:
    """``func()`` run in a forked child; raises NoAnswer if it never returned."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report over the pipe, exit without the parent's cleanup
        code = CHILD_CRASHED
        try:
            signal.set_wakeup_fd(-1)  # a signal here must not wake the master's loop
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(func(), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = _read_with_deadline(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if data is None or status != 0:
        raise NoAnswer(status, timeout)
    return pickle.loads(data)


def _read_with_deadline(fd: int, pid: int, timeout: float) -> Optional[bytes]:
    """Everything the child wrote, or None if it hung (then killed) or wrote nothing."""
    deadline = time.monotonic() + timeout
    chunks = []
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                os.kill(pid, signal.SIGKILL)
                return None
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks) or None
