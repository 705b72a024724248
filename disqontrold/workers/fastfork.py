"""fork() for the isolated worker, without Python's at-fork hooks when that
is safe.

On this project's VMs a page fault costs ~5 us, and ``os.fork()`` runs the
``os.register_at_fork`` child hooks of threading, logging and random: they
write to ~200 pages shared with the parent (copy-on-write faults), which
doubled the CPU a no-op job costs (bench/throughput.py; docs/workers.md).
When the consumer runs a single thread those hooks have nothing to repair
(no other thread can hold a lock, the main thread keeps its ident), so we
call libc's fork directly (``ctypes.PyDLL``: the GIL stays held across it)
and only reseed ``random``, so that two jobs never draw the same numbers.
With more than one thread running, ``os.fork()`` does the full job.
"""
from __future__ import annotations

import _random
import ctypes
import os
import random
import threading

#: libc's fork(2) wrapper, called with the GIL held (PyDLL, not CDLL).
_libc_fork = ctypes.PyDLL(None, use_errno=True).fork
_libc_fork.restype = ctypes.c_int
_libc_fork.argtypes = []


def _raw_fork() -> int:
    pid = _libc_fork()
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"fork failed: {os.strerror(errno)}")
    if pid == 0:
        _reseed_random()
    return pid


def _reseed_random() -> None:
    """What random's own at-fork hook (``random.seed()``) does, minus the
    Python frame of Random.seed: ~20 fewer pages touched."""
    _random.Random.seed(random._inst, None)  # type: ignore[attr-defined]
    random._inst.gauss_next = None  # type: ignore[attr-defined]


def fork() -> int:
    """fork(2): 0 in the child, the child's pid in the parent; OSError if it failed."""
    if threading.active_count() > 1:
        return os.fork()
    return _raw_fork()
