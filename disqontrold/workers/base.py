"""The worker interface: what a consumer calls to run jobs.

SHAPE (skeleton): the concrete workers live in command.py, python.py, http.py.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from disqontrol_client.job import Job

if TYPE_CHECKING:
    from disqontrold.workers.jobprocs import Child

#: Called with a job just before it starts, so the consumer can report
#: "busy <job id>" in its title and status.
OnStart = Optional[Callable[[Job], None]]


@dataclass
class Outcome:
    """How one job run ended."""

    ok: bool
    result: Any = None  # the return value (python workers) in synchronous mode
    # One line a person can act on: "exit code 3", "killed after 600s timeout",
    # "ValueError: bad size", "HTTP 500: <snippet>".
    error: Optional[str] = None
    # Structured extras kept in the failed job's metadata: exit_code, signal,
    # stdout_tail, stderr_tail, traceback, http_status, body_snippet.
    details: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0


class Worker(abc.ABC):
    """Runs jobs of one queue. Built once per consumer process (after fork)."""

    #: True when each job runs in a process (or connection) of its own, so a
    #: consumer may run a reserved batch concurrently (command, isolated, http).
    concurrent: bool = False
    #: True when each job is one child process the consumer may start and
    #: reap itself (``start`` / ``finish``): it keeps up to ``job_batch`` of
    #: them running in one window and starts the next job as soon as one
    #: ends, instead of waiting for a whole batch (docs/architecture.md).
    windowed: bool = False
    #: What a job that cannot start fails with: "<cannot_start>: <OSError>".
    cannot_start: str = "cannot start"

    @abc.abstractmethod
    def run(self, job: Job, timeout: float) -> Outcome:
        """Run one job; never raises for a job failure (returns ok=False)."""

    def run_many(self, jobs: Sequence[Job], timeout: float, on_start: OnStart = None) -> list[Outcome]:
        """Run a batch; concurrent workers override this to overlap the jobs.
        Outcomes are in the order of ``jobs``; ``timeout`` applies per job."""
        outcomes = []
        for job in jobs:
            if on_start is not None:
                on_start(job)
            outcomes.append(self.run(job, timeout))
        return outcomes

    def start(self, job: Job, timeout: float) -> "Child":
        """Start the job's process (windowed workers only); the window
        prepares it for its jobprocs.Supervisor once the round of starts is
        done. Raises OSError when it cannot start."""
        raise NotImplementedError(f"{type(self).__name__} is not windowed")

    def finish(self, job: Job, child: "Child") -> Outcome:
        """The outcome of a started job whose process ended and was reaped."""
        raise NotImplementedError(f"{type(self).__name__} is not windowed")

    def close(self) -> None:
        """Release pooled resources (connections). Idempotent."""
