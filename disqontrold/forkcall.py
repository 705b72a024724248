"""Calling a function in a short-lived forked child and getting its
(pickled) return value back.

The master uses it for work whose imports it must not keep: checking the
user's Python workers (the master never imports user code) and validating
a config (yaml, jsonschema and croniter would make every consumer, and each
isolated job's fork, bigger).

Whatever the child raises comes back as text (type, message, traceback), so
an unexpected error is shown as itself rather than as a bare exit status.
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import time
import traceback
from typing import Any, Callable, Optional

from disqontrol_client.errors import DisqontrolError
from disqontrold.children import describe_exit

#: Exit code of the child when it could not report at all.
CHILD_CRASHED = 70
READ_CHUNK = 65536
RETURNED, RAISED = "returned", "raised"


class NoAnswer(DisqontrolError):
    """The child gave no value: it raised, died, or ran past its timeout
    (then it was killed). ``traceback`` is the child's, when it raised."""

    exit_code = 2

    def __init__(self, doing: str, why: str, child_traceback: str = "") -> None:
        super().__init__(f"{doing}: {why}")
        self.doing = doing
        self.traceback = child_traceback


def call_in_child(func: Callable[[], Any], timeout: float, doing: str) -> Any:
    """``func()`` run in a forked child; raises NoAnswer (its message starts
    with ``doing``, e.g. "validating the config") if it never returned."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:  # EAGAIN at systemd's TasksMax, ENOMEM: a reload refused, not a dead master
        os.close(read_fd)
        os.close(write_fd)
        raise NoAnswer(doing, f"cannot fork the checker: {exc}") from None
    if pid == 0:  # the child: report over the pipe, exit without the parent's cleanup
        code = CHILD_CRASHED
        try:
            signal.set_wakeup_fd(-1)  # a signal here must not wake the master's loop
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as out:
                out.write(_run_reported(func))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = _read_with_deadline(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if data is None or status != 0:  # nothing, or cut short: no report to trust
        raise NoAnswer(doing, _no_report(status, timeout))
    kind, value = pickle.loads(data)
    if kind == RAISED:
        name, message, child_traceback = value
        raise NoAnswer(doing, f"the checker raised {name}: {message}{_where(child_traceback)}", child_traceback)
    return value


def _run_reported(func: Callable[[], Any]) -> bytes:
    """In the child: the pickled (RETURNED, value), or (RAISED, (type, message,
    traceback)) for anything ``func`` raised or that cannot be pickled."""
    try:
        return pickle.dumps((RETURNED, func()))
    except BaseException as exc:  # noqa: BLE001 -- the parent must learn of any error, then the child exits
        return pickle.dumps((RAISED, (type(exc).__name__, str(exc), traceback.format_exc())))


def _where(child_traceback: str) -> str:
    """`` (at FILE:LINE in FUNC)`` of the innermost frame, from a traceback's text."""
    frames = [line.strip() for line in child_traceback.splitlines() if line.lstrip().startswith('File "')]
    return f" (at {frames[-1]})" if frames else ""


def _no_report(status: int, timeout: float) -> str:
    """Why the child sent nothing: killed at the deadline, or how it ended."""
    _, signum, how = describe_exit(status)
    if signum == signal.SIGKILL:
        return f"the checker was killed (took longer than {timeout:g}s, or killed from outside)"
    return f"the checker ended ({how}) without answering"


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
