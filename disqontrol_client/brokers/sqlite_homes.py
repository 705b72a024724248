"""Which shard of a sharded sqlite database a process calls home.

A process adds its jobs to one shard, so the jobs it adds are reserved in
the order it added them (per-producer FIFO), and a consumer leases from one
shard first, so two consumers on two shards run in parallel instead of
queueing on one file's write lock. Homes are spread by ``flock``: a process
takes the first free lock file of its role in ``<db>.homes/`` (consumer0,
consumer1, ... and producer0, ...) and keeps it for its life; the kernel
drops a dead process's lock, so its shard is free again. When every lock of
a role is held (more consumers than shards), the process homes on
``pid % shards``.

Chosen lazily, per role, and again after a fork: the child closes its copy
of the parent's lock (flock belongs to the open file, which the parent still
holds, so the parent keeps its lock) and picks a home of its own.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import Optional

from disqontrol_client.brokers.sqlite_store import give_to_dir_owner
from disqontrol_client.logfmt import log_event

log = logging.getLogger(__name__)

HOMES_DIR_SUFFIX = ".homes"
LOCK_SUFFIX = ".lock"
LOCK_FILE_MODE = 0o644  # flock needs only a read-only open: any user may lock a file root created
TAKE_PASSES = 2  # another process's probe (``unowned``) holds a free lock for a moment
PASS_PAUSE = 0.001  # s between two passes
CONSUMER = "consumer"
PRODUCER = "producer"


class Homes:
    """This process's home shards, one per role."""

    def __init__(self, db_path: str, shards: int) -> None:
        self.path = db_path + HOMES_DIR_SUFFIX
        self.shards = shards
        self._held: dict[str, tuple[int, Optional[int]]] = {}  # role -> (shard, lock fd)
        self._pid = os.getpid()
        self._lock = threading.Lock()  # threads of one process share its homes

    def home(self, role: str) -> int:
        """The shard of ``role`` (CONSUMER or PRODUCER) for this process."""
        held = self._held.get(role)
        if held is not None and self._pid == os.getpid():
            return held[0]
        with self._lock:
            if self._pid != os.getpid():
                self._forget_parents()
            if role not in self._held:
                self._held[role] = self._take(role)
            return self._held[role][0]

    def _take(self, role: str) -> tuple[int, Optional[int]]:
        fallback = os.getpid() % self.shards
        if self.shards == 1:
            return 0, None
        try:
            os.makedirs(self.path, exist_ok=True)
            give_to_dir_owner([self.path])
            for attempt in range(TAKE_PASSES):
                if attempt:
                    time.sleep(PASS_PAUSE)
                free = self._first_free(role)
                if free is not None:
                    return free
        except OSError as exc:
            # Homes only spread the load: any shard works, so the jobs still flow.
            log_event(log, "sqlite_home_unlocked", logging.WARNING, path=self.path, role=role,
                      error=exc, shard=fallback)
            return fallback, None
        # every shard has a process of this role already
        log_event(log, "sqlite_home_shard", path=self.path, role=role, shard=fallback, shared=True)
        return fallback, None

    def _first_free(self, role: str) -> Optional[tuple[int, int]]:
        """Lock the first free home of ``role``: (shard, fd), logged."""
        for shard in range(self.shards):
            fd = self._flock(os.path.join(self.path, f"{role}{shard}{LOCK_SUFFIX}"))
            if fd is not None:
                log_event(log, "sqlite_home_shard", path=self.path, role=role, shard=shard)
                return shard, fd
        return None

    def settle(self, role: str = CONSUMER) -> int:
        """``home(role)``; a home taken without a lock (every lock was held)
        is traded for a lock freed since. After a reload the new consumers
        start while the old ones still hold every lock: without this they
        would share shards for life once the old ones left. For consumers
        only: a producer that changed shards would lose its jobs' order."""
        shard = self.home(role)
        if self._held[role][1] is not None or self.shards == 1:
            return shard
        with self._lock:
            try:
                free = self._first_free(role)
            except OSError:
                return shard  # _take logged why the locks cannot be used
            if free is not None:
                self._held[role] = free
                return free[0]
        return shard

    @staticmethod
    def _flock(name: str) -> Optional[int]:
        """The fd of ``name`` locked by us, or None if another process holds it."""
        fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return fd

    def unowned(self, role: str = CONSUMER) -> set[int]:
        """Shards no live process of ``role`` calls home (its lock is free):
        a dead or missing consumer's shard, which the others must share.
        A probe holds the lock for two system calls (``_take`` allows for it)."""
        free = set()
        for shard in range(self.shards):
            if self._held.get(role, (None,))[0] == shard:
                continue
            try:
                fd = self._flock(os.path.join(self.path, f"{role}{shard}{LOCK_SUFFIX}"))
            except OSError:
                continue  # unknown: leave it to its owner
            if fd is not None:
                os.close(fd)
                free.add(shard)
        return free

    def _forget_parents(self) -> None:
        """In a forked child: close our copies of the parent's lock files
        (closing a copy leaves the parent's flock held) and choose anew."""
        for _, fd in self._held.values():
            if fd is not None:
                os.close(fd)
        self._held = {}
        self._pid = os.getpid()

    def close(self) -> None:
        """Free this process's homes for the next process."""
        if self._pid != os.getpid():
            self._forget_parents()
            return
        for _, fd in self._held.values():
            if fd is not None:
                os.close(fd)
        self._held = {}
