"""`disqontrold --daemonize`: detach from the terminal (python-daemon).

Order matters: the master takes its pidfile lock *before* detaching, so a
second master is refused in the foreground where the user sees the message
(exit 2), and the lock travels through the fork (flock belongs to the open
file, which the daemon keeps). After the fork the pidfile gets the daemon's
final pid. Everything opened before this call and not listed in ``preserve``
is closed: daemonize first, then open sockets, logs and the broker.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Optional

import daemon

from disqontrol_client.logfmt import log_event
from disqontrold.pidfile import Pidfile

log = logging.getLogger(__name__)

DAEMON_UMASK = 0o027  # logs and sqlite readable by the group, not by everyone
DAEMON_WORKDIR = "/"  # never keep a mount busy


def daemonize(pidfile: Pidfile, preserve: Iterable[int] = (), workdir: Optional[str] = None) -> int:
    """Detach; returns the daemon's pid (in the daemon; the caller's process
    has exited 0). stdin/stdout/stderr become /dev/null: log to files."""
    if pidfile.fd is None:
        raise RuntimeError("acquire the pidfile before daemonizing")
    context = daemon.DaemonContext(
        working_directory=workdir or DAEMON_WORKDIR,
        umask=DAEMON_UMASK,
        detach_process=True,
        files_preserve=[pidfile.fd, *preserve],
        prevent_core=False,
        signal_map={},  # the master installs its own handlers
    )
    context.open()
    pid = os.getpid()
    pidfile.write(pid)
    log_event(log, "daemonized", pid=pid, pidfile=pidfile.path)
    return pid
