"""A slot is one consumer position of a group: the master keeps it filled,
restarting its process with exponential backoff when it crashes (circus-style
flapping protection: a crash loop is logged and slowed, never spun)."""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Optional

from disqontrol_client.config import Config, ConsumerConfig
from disqontrol_client.logfmt import log_event
from disqontrold.queue_tally import QueueTotals
from disqontrold.scoreboard import Scoreboard, Snapshot

logger = logging.getLogger(__name__)

RESTART_BACKOFF_START = 0.5  # s after the first crash
RESTART_BACKOFF_CAP = 60.0  # s
STABLE_AFTER = 30.0  # s: a process that lived this long resets the crash count
CRASH_LOOP_AFTER = 3  # consecutive crashes that make a crash loop
STOP_GRACE = 10.0  # s beyond the longest job timeout for a graceful stop
HUNG_GRACE = 10.0  # s beyond a job's timeout before the master kills its consumer (workers: 5 s TERM->KILL grace)

_slot_ids = itertools.count(1)


@dataclass(eq=False)
class Slot:
    group: ConsumerConfig
    config: Config  # the generation's config the process runs with
    generation: int
    id: int = field(default_factory=lambda: next(_slot_ids))
    pid: Optional[int] = None
    scoreboard: Optional[Scoreboard] = None
    started_at: float = 0.0  # time.monotonic()
    next_start: float = 0.0  # time.monotonic() before which it is not restarted
    crashes: int = 0  # consecutive
    restarts: int = 0
    retiring: bool = False
    kill_at: Optional[float] = None  # SIGKILL deadline of a stop in progress
    kill_reason: str = ""  # why the master killed it (then no crash backoff)
    setup_hung: str = ""  # its last start hung in a worker's setup: why (the next starts hold Python queues)
    done_before: int = 0  # jobs of the slot's earlier processes
    failed_before: int = 0
    queues_before: QueueTotals = field(default_factory=QueueTotals)  # per-queue outcomes of earlier processes

    @property
    def job_timeout(self) -> float:
        """The longest job_process_timeout of the group's queues."""
        return max(self.config.queue(q).job_process_timeout for q in self.group.queues)

    @property
    def graceful_timeout(self) -> float:
        return self.job_timeout + STOP_GRACE

    @property
    def hung_after(self) -> float:
        return self.job_timeout + HUNG_GRACE

    def ended(self, now: float, crashed: bool, how: str) -> None:
        """Book the end of its process and schedule the next one."""
        if self.scoreboard is not None:
            last: Snapshot = self.scoreboard.read()
            self.done_before += last.done
            self.failed_before += last.failed
            self.queues_before.add(self.scoreboard.queue_cells.read())
            self.scoreboard.close()
            self.scoreboard = None
        self.pid = None
        self.kill_at = None
        lived = now - self.started_at
        if not crashed:
            self.next_start = now  # recycled or killed as hung: replace at once
            self.crashes = 0
            return
        if lived >= STABLE_AFTER:
            self.crashes = 0
        self.crashes += 1
        delay = min(RESTART_BACKOFF_START * 2 ** (self.crashes - 1), RESTART_BACKOFF_CAP)
        self.next_start = now + delay
        level = logging.ERROR if self.crashes >= CRASH_LOOP_AFTER else logging.WARNING
        log_event(logger, "crash_loop" if self.crashes >= CRASH_LOOP_AFTER else "consumer_crashed",
                  level, group=self.group.name, status=how, lived_s=round(lived, 2),
                  crashes=self.crashes, restart_in=delay)
