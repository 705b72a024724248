"""The consumer's job window: the running processes of its windowed workers
(command, isolated Python), up to ``job_batch`` at once, and when to reserve more.

Why a window and not batches: running a reserved batch as a whole (start
all, wait for all, then reserve the next) leaves the cores idle at each
batch's end, and one long job holds back every job reserved after it. The
window reports each job as it ends; the consumer reserves more as soon as
half the window is free (folding the acks of the ended jobs into that
reserve) and starts them while the others still run.

Pacing the reserves: a reserve that filled the window may be followed by
the next one as soon as half the window is free again. One that came back
short (the queues are drained) or failed is not repeated for
``REFILL_INTERVAL``: while jobs run, the consumer cannot block in the
broker, so it looks again at that pace for new jobs (and sends its acks)
instead of on every ending job.
"""
from __future__ import annotations

import errno
import logging
import traceback
from typing import Optional, Protocol

from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrold.workers.base import Outcome, Worker
from disqontrold.workers.jobprocs import NEVER, Child, Supervisor, discard, prepare

logger = logging.getLogger(__name__)

#: s between two reserves while jobs run and the last reserve came back short:
#: how late a consumer busy with long jobs sees a new job (and acks the ended).
#: An empty reserve is cheap (sqlite: an UPDATE that changes no row writes
#: nothing; redis: one round trip), so 4 a second per busy consumer buys a
#: new job's start within 0.25 s instead of 1 s.
REFILL_INTERVAL = 0.25
#: A start refused with these is the machine's state, not the job's fault:
#: no process left (systemd's TasksMax, RLIMIT_NPROC), no memory, no
#: descriptors, or the program missing or being written (a deploy that
#: removes or copies it in place: gone for a moment).
NOT_NOW = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOENT, errno.ETXTBSY})
#: Of those, the program's own state: a deploy ends in seconds, but a
#: program deleted for good or a typo in a script's shebang never does.
MISSING = frozenset({errno.ENOENT, errno.ETXTBSY})


class StartDeferred(Exception):
    """A job could not start for a reason in ``NOT_NOW``: give it back and
    try later, do not fail it. ``missing``: the program is (``MISSING``),
    so the consumer gives up after a grace (paused_queues)."""

    def __init__(self, message: str, missing: bool = False, errno_name: str = "") -> None:
        super().__init__(message)
        self.missing = missing
        self.errno_name = errno_name  # "EAGAIN", "ENOENT"...: shown in status


class RefillPace:
    """When to reserve more while jobs run: the window's room and what the
    last reserve got decide (times are time.monotonic())."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._last = 0.0  # the last reserve
        self._retry_at = 0.0  # no refill before this (the last came back short, or failed)

    def reserved(self, now: float, asked: int, got: int) -> None:
        """Book a reserve (``got`` < ``asked``: the queues ran dry)."""
        self._last = now
        self._retry_at = now if got >= asked else now + REFILL_INTERVAL

    def failed(self, now: float, backoff: float) -> None:
        """Book a reserve that could not be made (the broker refused it, or
        every queue is held or paused): none again for ``backoff`` s."""
        self._last = now
        self._retry_at = now + backoff

    def next_refill(self, free: int) -> float:
        """When to reserve again with ``free`` places in the window (NEVER: no room)."""
        if free <= 0:
            return NEVER
        if free * 2 >= self.size:
            return self._retry_at
        return max(self._last + REFILL_INTERVAL, self._retry_at)


class ProcessNotes(Protocol):
    """Where the window notes its running job processes (the consumer's
    scoreboard: the master ends them if the consumer dies first)."""

    def job_started(self, pid: int) -> None: ...

    def job_ended(self, pid: int) -> None: ...


class JobWindow:
    """Up to ``size`` job processes running at once, each with its own
    deadline; jobs are added while others run."""

    def __init__(self, size: int, notes: Optional[ProcessNotes] = None) -> None:
        self.size = size
        self._notes = notes
        # A pid leaves the notes before it is reaped: once reaped it can be reused.
        self._supervisor = Supervisor(before_reap=notes.job_ended if notes is not None else None)
        self._jobs: dict[Child, tuple[Job, Worker]] = {}
        self._started: list[Child] = []  # started since the last wait, not prepared yet
        self._ids: set[str] = set()  # the ids of the running jobs
        self.pace = RefillPace(size)

    def __len__(self) -> int:
        return len(self._jobs)

    def running(self, job_id: str) -> bool:
        """Whether a job with this id runs in the window: a redelivery of it
        (its lease lapsed, e.g. while the consumer was stopped) must not
        start it a second time beside itself."""
        return job_id in self._ids

    @property
    def free(self) -> int:
        return self.size - len(self._jobs)

    def oldest_job(self) -> Optional[Job]:
        """The running job started first (jobs are kept in start order):
        the one status names, as a stuck job is the one that has run longest."""
        return next(iter(self._jobs.values()))[0] if self._jobs else None

    def start(self, worker: Worker, job: Job, timeout: float) -> Optional[Outcome]:
        """Start one job of a windowed worker. None once it runs; a failed
        Outcome if it cannot start (a program not executable): that job
        fails alone. Raises StartDeferred when the machine is out of
        processes, memory or descriptors, or the program is missing or being
        written (``NOT_NOW``): every job would fail alike, and a
        retry_immediately queue used to park them all within milliseconds,
        each counted as a failure of its own."""
        try:
            child = worker.start(job, timeout)
        except OSError as exc:
            if exc.errno in NOT_NOW:
                raise StartDeferred(f"{worker.cannot_start}: {exc}", exc.errno in MISSING,
                                    errno.errorcode.get(exc.errno, str(exc.errno))) from exc
            return Outcome(False, error=f"{worker.cannot_start}: {exc}")
        except Exception as exc:  # noqa: BLE001 -- a worker bug must fail its job, not the consumer
            return self._raised(job, exc)
        self._started.append(child)
        self._jobs[child] = (job, worker)
        self._ids.add(job.id or "")
        if self._notes is not None:
            self._notes.job_started(child.pid)
        return None

    def wait(self, timeout: Optional[float]) -> list[tuple[Job, Outcome]]:
        """The jobs that ended within ``timeout`` seconds (None: until one
        does), with their outcomes; overdue jobs are killed meanwhile."""
        unwatchable = self._prepare_started()
        if unwatchable:
            return unwatchable
        return [self._outcome(child) for child in self._supervisor.wait(timeout)]

    def _prepare_started(self) -> list[tuple[Job, Outcome]]:
        """Open the pidfds of the jobs started since the last wait, after the
        round of starts (as ``run_batch`` does): done between two spawns it
        cost each job more CPU, its process's and ours (measured). A process
        that cannot be watched (out of descriptors) is killed: its job fails."""
        failed = []
        for child in self._started:
            try:
                self._supervisor.add(prepare(child))
            except OSError as exc:
                job, worker = self._forget_unwatched(child)
                discard(child)
                failed.append((job, Outcome(False, error=f"{worker.cannot_start}: {exc}")))
        self._started = []
        return failed

    def _forget_unwatched(self, child: Child) -> tuple[Job, Worker]:
        """Drop a child the supervisor never watched, before it is reaped
        (the supervisor drops its own from the notes as it reaps them)."""
        if self._notes is not None:
            self._notes.job_ended(child.pid)
        return self._ended(child)

    def _ended(self, child: Child) -> tuple[Job, Worker]:
        job, worker = self._jobs.pop(child)
        self._ids.discard(job.id or "")
        return job, worker

    def _outcome(self, child: Child) -> tuple[Job, Outcome]:
        job, worker = self._ended(child)  # reaped by the supervisor, out of the notes already
        try:
            return job, worker.finish(job, child)
        except Exception as exc:  # noqa: BLE001 -- a worker bug must fail its job, not the consumer
            return job, self._raised(job, exc)

    @staticmethod
    def _raised(job: Job, exc: Exception) -> Outcome:
        """A worker bug (not a job failure): the job fails with its text."""
        error = f"worker raised {type(exc).__name__}: {exc}"
        log_event(logger, "worker_raised", logging.ERROR, job=job.id, queue=job.queue, error=error)
        return Outcome(False, error=error, details={"traceback": traceback.format_exc()})

    def close(self) -> None:
        """Kill and reap whatever still runs (the consumer is going down
        abnormally: a graceful stop waits for the window to empty first)."""
        for job, _worker in self._jobs.values():
            log_event(logger, "job_abandoned", logging.WARNING, job=job.id, queue=job.queue)
        for child in self._started:
            self._forget_unwatched(child)
            discard(child)
        self._started = []
        self._supervisor.close()  # the notes hear of the rest before each is reaped
        self._jobs.clear()
        self._ids.clear()
