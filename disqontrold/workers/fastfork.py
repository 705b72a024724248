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
import gc
import os
import random
import threading

#: libc's fork(2) wrapper, called with the GIL held (PyDLL, not CDLL).
_libc_fork = ctypes.PyDLL(None, use_errno=True).fork
_libc_fork.restype = ctypes.c_int
_libc_fork.argtypes = []
#: glibc's malloc_trim(pad): returns the free pages of every malloc arena.
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
#: Bytes malloc_trim leaves at the top of the heap: none.
TRIM_PAD = 0


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


def settle() -> None:
    """Ready a long-lived forking process: once its setup is done.

    A fork copies one page-table entry per resident page and the child's
    exit tears each down again (two thirds of an isolated job's CPU), so
    the garbage of the setup is collected and malloc's free pages are given
    back first. Then everything left is frozen out of the collector's sight:
    no collection in the parent rewrites (and copies) the pages its children
    share."""
    gc.collect()
    if _malloc_trim is not None:  # not glibc (musl): nothing to trim
        _malloc_trim(TRIM_PAD)
    gc.freeze()
