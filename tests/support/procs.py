"""Helpers for tests that run real processes: free ports, waiting with a
deadline instead of sleeping, and cleaning up only what we started."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

T = TypeVar("T")
LOG_TAIL = 2000  # characters of a server's log quoted when it exits at start


class ServerExited(AssertionError):
    """A server we started exited before it answered: most often its port,
    free when free_port() looked, was taken meanwhile (by another test
    worker's server), and the caller may try another."""

    def __init__(self, name: str, port: int, returncode: int, log: Path) -> None:
        tail = log.read_text(errors="replace")[-LOG_TAIL:] if log.exists() else ""
        super().__init__(f"{name} on port {port} exited {returncode} before it answered: {tail}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, message: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or condition!r} (last={last!r})")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """TERM then KILL the process group of a process we started (by its PID)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
