"""The worker interface: what a consumer calls to run jobs.

SHAPE (skeleton): the concrete workers live in command.py, python.py, http.py.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from disqontrol_client.job import Job

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

    def close(self) -> None:
        """Release pooled resources (connections). Idempotent."""
