"""Autoscaling decisions for one consumer group: pure logic, no I/O.

The master's plug-in (``disqontrold.autoscale_master``) measures a group once
a second and feeds a ``Sample`` to ``Autoscaler.decide`` with the time of the
measure; the answer is the process count the group should run. Time is an
argument, never read here, so tests drive it with any clock.

Up fast, down slow:

* Up when every process is busy and the ready backlog is more than
  ``BACKLOG_PER_PROCESS`` jobs per process and would take longer than
  ``DRAIN_SECONDS`` to drain at the measured job duration (a backlog of
  millisecond jobs is gone before a new process has booted). The new target is
  the count that drains the backlog in ``DRAIN_SECONDS``: several processes
  at once for a large backlog, at least one more.
* Down by one when the group had spare capacity (an idle process and nothing
  ready) for ``idle_seconds`` without a break, and nothing changed for as long.
  Each removal restarts that clock, so a group steps down one process per
  ``idle_seconds``: no flapping.
* A change the decider did not make (SIGTTIN/SIGTTOU, a reload) becomes the
  target and holds for ``idle_seconds`` before the decider acts again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

BACKLOG_PER_PROCESS = 2.0  # ready jobs per process above which more processes may help
DRAIN_SECONDS = 5.0  # s: a backlog that drains faster than this is left to the running processes
UP_COOLDOWN = 1.0  # s after any change before the next step up (new processes boot first)
DEFAULT_IDLE_SECONDS = 30.0  # s of spare capacity before one process is removed
DURATION_WEIGHT = 0.3  # weight of the newest measure in the job-duration average

UP, DOWN, MANUAL = "up", "down", "manual"


@dataclass(frozen=True)
class Sample:
    """What the master measured of a group at one moment."""

    backlog: int  # ready jobs in the group's queues (not delayed, not leased)
    processes: int  # the group's current target (live processes, starting ones too)
    busy: int  # processes running a job now
    job_seconds: Optional[float] = None  # estimated duration of one job; None: not known yet


@dataclass(frozen=True)
class Decision:
    """A change of the target, with the figures that caused it (for the log and status)."""

    direction: str  # UP | DOWN | MANUAL
    old: int
    new: int
    reason: str
    at: float  # the decider's clock


def describe(sample: Sample) -> str:
    """The figures behind a decision, as in ``reason="backlog=120 busy=2/2 job_s=0.5"``."""
    text = f"backlog={sample.backlog} busy={sample.busy}/{sample.processes}"
    if sample.job_seconds is not None:
        text += f" job_s={sample.job_seconds:.3g}"
    return text


class Autoscaler:
    """The scaling state of one group between ``low`` and ``high`` processes."""

    def __init__(self, low: int, high: int, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        self.low = low
        self.high = high
        self.idle_seconds = idle_seconds
        self.target = low
        self.changed_at = -math.inf  # last change of the target, by anyone (no cool-down at start)
        self.spare_since: Optional[float] = None  # start of the current spare-capacity stretch
        self.last: Optional[Decision] = None

    def _clamp(self, count: int) -> int:
        return max(self.low, min(self.high, count))

    def decide(self, sample: Sample, now: float) -> int:
        """The process count the group should run from ``now`` on."""
        if sample.processes != self.target:  # someone else changed it: it holds for a while
            self._change(MANUAL, sample.processes, now, f"outside change; {describe(sample)}")
            return self.target
        if sample.backlog > 0 or sample.busy >= sample.processes:
            self.spare_since = None
        elif self.spare_since is None:
            self.spare_since = now
        wanted = self._wanted_up(sample)
        if wanted > self.target and now - self.changed_at >= self._up_wait():
            self._change(UP, wanted, now, describe(sample))
        elif self._may_step_down(now):
            self._change(DOWN, self.target - 1, now, f"{describe(sample)} spare_s={now - self.spare_since:.3g}")
        return self.target

    def _up_wait(self) -> float:
        """A manual change holds for idle_seconds; our own changes for UP_COOLDOWN."""
        return self.idle_seconds if self.last is not None and self.last.direction == MANUAL else UP_COOLDOWN

    def _wanted_up(self, sample: Sample) -> int:
        """The target that drains the backlog in time; the current one if no more are needed."""
        processes = max(sample.processes, 1)
        if sample.busy < sample.processes or sample.backlog <= BACKLOG_PER_PROCESS * processes:
            return self.target
        if sample.job_seconds is None:  # no duration yet: the backlog alone decides
            needed = math.ceil(sample.backlog / BACKLOG_PER_PROCESS)
        else:
            work = sample.backlog * sample.job_seconds  # process-seconds waiting
            if work / processes <= DRAIN_SECONDS:
                return self.target
            needed = math.ceil(work / DRAIN_SECONDS)
        return self._clamp(max(needed, self.target + 1))

    def _may_step_down(self, now: float) -> bool:
        return (self.target > self.low and self.spare_since is not None
                and now - self.spare_since >= self.idle_seconds
                and now - self.changed_at >= self.idle_seconds)

    def _change(self, direction: str, new: int, now: float, reason: str) -> None:
        self.last = Decision(direction, self.target, new, reason, now)
        self.target = new
        self.changed_at = now
        self.spare_since = None if direction == UP else now  # a step down waits a whole idle stretch


class DurationEstimate:
    """Average job duration from what the scoreboards show: busy
    process-seconds between two samples over the jobs finished in them,
    smoothed; a job running longer than the average raises it at once."""

    def __init__(self) -> None:
        self.seconds: Optional[float] = None

    def update(self, busy_seconds: float, finished: int, longest_running: float = 0.0) -> Optional[float]:
        """Fold in one interval; the current estimate (None until something is known)."""
        if finished > 0 and busy_seconds > 0:
            measured = busy_seconds / finished
            self.seconds = measured if self.seconds is None else (
                DURATION_WEIGHT * measured + (1 - DURATION_WEIGHT) * self.seconds)
        if longest_running > 0 and (self.seconds is None or longest_running > self.seconds):
            return longest_running
        return self.seconds
