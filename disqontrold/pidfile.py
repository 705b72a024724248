"""The master's pidfile: one master per run_dir, even when two start at once.

The pidfile is held under an exclusive ``flock`` for the master's whole life,
so the lock (not the pid written inside) decides who wins: the kernel drops it
when the holder dies, however it dies. The pid inside is for people and for
tools; a pidfile left by a dead master, or naming a live process that is not a
disqontrold (pid reuse), is stale and replaced.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from disqontrol_client.errors import ConfigError, DisqontrolError
from disqontrol_client.logfmt import log_event

log = logging.getLogger(__name__)

PIDFILE_NAME = "disqontrold.pid"
PIDFILE_MODE = 0o644
MASTER_NAME = "disqontrold"
# Another starter may unlink the file between our open and our lock; retry a
# few times rather than lock a file nobody else can see.
MAX_LOCK_ATTEMPTS = 5
KEEP_INTERVAL = 1.0  # s between two looks that the pidfile is still the one we lock


class PidfileLocked(DisqontrolError):
    """Another master holds the pidfile (exit code 2: a usage error)."""

    exit_code = 2


def default_pidfile(run_dir: Path) -> Path:
    return Path(run_dir) / PIDFILE_NAME


def read_pid(path: Path) -> Optional[int]:
    """The pid written in ``path``, or None (missing, empty or garbage)."""
    try:
        text = Path(path).read_text().strip()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def is_master(pid: int) -> bool:
    """Whether ``pid`` is a live disqontrold (by process title or argv)."""
    # Imported here: psutil (~2 MiB resident) would be carried by every
    # consumer the master forks, and slow each isolated job's fork.
    import psutil  # noqa: PLC0415

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        words = [proc.name()] + proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(MASTER_NAME in os.path.basename(word) or word.startswith(MASTER_NAME) for word in words)


class Pidfile:
    """``acquire()`` at start, ``write(pid)`` once the final pid is known
    (after daemonizing), ``release()`` at exit."""

    def __init__(self, path: Path, key: str = "--pidfile") -> None:
        # Absolute now: --daemonize goes to / and a reload re-enters the
        # working directory; a relative path would then name another file.
        self.path = Path(os.path.abspath(path))
        self.key = key  # where the path comes from, for errors: --pidfile or disqontrol.run_dir
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        """Lock the pidfile or raise PidfileLocked naming it and its holder;
        ConfigError (exit 2, as a refused config: the systemd unit does not
        restart it) when the file or its directory cannot be made."""
        for _ in range(MAX_LOCK_ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise PidfileLocked(
                    f"pidfile {self.path} is held by a running master (pid {read_pid(self.path)}); "
                    "stop it first or give this one another run_dir / --pidfile"
                ) from None
            if self._still_linked(fd):
                break
            os.close(fd)
        else:
            raise PidfileLocked(f"pidfile {self.path} keeps being replaced by another starting master")
        self.fd = fd
        self._check_previous()
        self.write(os.getpid())

    def _create(self) -> int:
        """The pidfile, opened (made with its directory if need be); OSError if it cannot be."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PIDFILE_MODE)

    def _open(self) -> int:
        try:
            return self._create()
        except OSError as exc:
            raise ConfigError(f"{self.key}: cannot create {str(exc.filename or self.path)!r}: {exc.strerror} "
                              "(the daemon's user must be able to make and write it)") from exc

    def _still_linked(self, fd: int) -> bool:
        """Whether the file we locked is still the one at ``path``."""
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _check_previous(self) -> None:
        """Log a stale pidfile; refuse a live unlocked master (an old one that
        lost its lock, e.g. its file was deleted and recreated)."""
        old = read_pid(self.path)
        if old is None or old == os.getpid():
            return
        import psutil  # noqa: PLC0415 (see is_master)

        if psutil.pid_exists(old) and is_master(old):
            self.release(unlink=False)
            raise PidfileLocked(
                f"pidfile {self.path} names pid {old}, a running disqontrold; "
                "stop it first or give this one another run_dir / --pidfile"
            )
        reason = "not_disqontrold" if psutil.pid_exists(old) else "dead"
        log_event(log, "pidfile_stale_replaced", logging.WARNING, pidfile=self.path, old_pid=old, reason=reason)

    def keep(self) -> float:
        """The master's timer: lock and write a new pidfile when ours was
        removed (run_dir removed under the running master): until then a
        second master found no lock and started beside this one."""
        if self.fd is not None and not self._still_linked(self.fd):
            try:
                fd = self._create()
            except OSError as exc:
                log_event(log, "pidfile_lost", logging.ERROR, pidfile=self.path, error=exc)
                return time.monotonic() + KEEP_INTERVAL
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                log_event(log, "pidfile_lost", logging.ERROR, pidfile=self.path, error=exc,
                          holder=read_pid(self.path))
                return time.monotonic() + KEEP_INTERVAL
            os.close(self.fd)
            self.fd = fd
            self.write(os.getpid())
            log_event(log, "pidfile_restored", logging.WARNING, pidfile=self.path)
        return time.monotonic() + KEEP_INTERVAL

    def write(self, pid: int) -> None:
        """Write ``pid`` into the locked file (again after a daemonizing fork)."""
        if self.fd is None:
            raise RuntimeError("pidfile not acquired")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self, unlink: bool = True) -> None:
        """Remove the pidfile (if still ours) and drop the lock. Idempotent.
        A forked child never removes its master's pidfile."""
        if self.fd is None:
            return
        if unlink and self._still_linked(self.fd) and read_pid(self.path) in (os.getpid(), None):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def forget(self) -> None:
        """In a forked child: close our copy of the fd, so the lock dies with
        the master and not with the last of its children."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "Pidfile":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def prepare(args: Any, config: Any) -> Pidfile:
    """Hook of disqontrold.cli, before logging and the master start: take the
    pidfile (``--pidfile`` or run_dir/disqontrold.pid), then detach if
    ``--daemonize``. PidfileLocked (exit 2) refuses a second master."""
    if getattr(args, "pidfile", None):
        pidfile = Pidfile(Path(args.pidfile))
    else:
        pidfile = Pidfile(default_pidfile(config.run_dir), key="disqontrol.run_dir")
    pidfile.acquire()
    if getattr(args, "daemonize", False):
        from disqontrold.daemonize import daemonize  # noqa: PLC0415 (python-daemon only when asked)

        daemonize(pidfile)
    os.register_at_fork(after_in_child=pidfile.forget)
    atexit.register(pidfile.release)
    return pidfile
