"""Job processes left running by a consumer that died first (kill -9, the
OOM killer, a hung consumer the master killed, a SIGQUIT fast stop): the
master ends them.

An isolated Python job dies with its consumer (PR_SET_PDEATHSIG); a
command job is an exec'd program and cannot be tied that way. Left running,
it would do its job while the broker, once the lease expires, hands the same
job to another consumer: two runs at once, the first one's result lost.

The master is the child subreaper of its consumers (PR_SET_CHILD_SUBREAPER),
so such a process becomes the master's child: its pid cannot be reused
before the master reaps it, which makes signalling it safe. Each consumer
notes its running job processes in its scoreboard; when the master reaps a
consumer, those still alive get SIGTERM on their process group, then SIGKILL
after the job grace, as on a job timeout. A process a finished job left
behind on purpose (``nohup something &``) is adopted the same way but never
noted, so it runs on; the master reaps it when it ends.
"""
from __future__ import annotations

import logging
import signal
import time
from typing import Iterable, Optional

from disqontrol_client.logfmt import log_event
from disqontrold.workers.jobprocs import KILL_GRACE, signal_group

logger = logging.getLogger(__name__)

#: Field of /proc/PID/stat (after the command name) holding the parent pid.
STAT_PPID = 1


def parent_of(pid: int) -> Optional[int]:
    """The parent pid of a live process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[STAT_PPID])
    except (OSError, IndexError, ValueError):
        return None


class OrphanedJobs:
    """The master's side: end the noted job processes of a dead consumer."""

    def __init__(self, master_pid: int, grace: float = KILL_GRACE) -> None:
        self.master_pid = master_pid
        self.grace = grace
        self._kill_at: dict[int, float] = {}  # pid -> when it gets SIGKILL

    def __bool__(self) -> bool:
        return bool(self._kill_at)

    def end(self, pids: Iterable[int], group: str, skip: Iterable[int] = ()) -> int:
        """SIGTERM the processes of ``pids`` that are now our children (not
        ``skip``: already reaped, or consumers); how many got it."""
        skipped = set(skip)
        ended = 0
        for pid in pids:
            if pid in skipped or pid in self._kill_at or parent_of(pid) != self.master_pid:
                continue  # ended with its consumer, or already reaped and its pid taken by another
            signal_group(pid, signal.SIGTERM)
            self._kill_at[pid] = time.monotonic() + self.grace
            ended += 1
            log_event(logger, "orphaned_job_ended", logging.WARNING, pid=pid, group=group,
                      signal="SIGTERM", kill_in=self.grace)
        return ended

    def before_reap(self, pid: int) -> None:
        """``pid`` exited and is about to be reaped: if it is a job process we
        ended, SIGKILL what is left of its group now, while its zombie still
        names the group (as jobprocs does for a timed-out job). A helper of the
        job that ignored the SIGTERM ran on, doing the job beside its
        redelivery, once the job's own process was gone."""
        if pid in self._kill_at:
            signal_group(pid, signal.SIGKILL)
            log_event(logger, "orphaned_job_exited", pid=pid, group_signal="SIGKILL")

    def reaped(self, pid: int) -> None:
        """The master reaped ``pid``: nothing left to kill."""
        self._kill_at.pop(pid, None)

    def tick(self) -> Optional[float]:
        """SIGKILL those past their grace (a master timer): the next deadline,
        None when none is left."""
        now = time.monotonic()
        for pid, kill_at in list(self._kill_at.items()):
            if kill_at <= now:
                del self._kill_at[pid]
                if parent_of(pid) == self.master_pid:
                    signal_group(pid, signal.SIGKILL)
                    log_event(logger, "orphaned_job_killed", logging.WARNING, pid=pid, signal="SIGKILL")
        return min(self._kill_at.values(), default=None)
