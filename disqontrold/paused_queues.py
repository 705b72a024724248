"""The queues a consumer pauses because their jobs could not start
(``jobwindow.StartDeferred``: no process, memory or descriptor left, or the
program missing or being written during a deploy).

Such a job is given back, not failed: the cause is the machine's or the
deploy's, not the job's, and a ``retry_immediately`` queue would otherwise
park every job in its failure queue within milliseconds. Its queue is not
reserved from for a doubling pause (0.5 s to 30 s) while it lasts; the
group's other queues run on (one program missing must not starve them).

A program missing (or being written) for longer than a deploy takes,
``MISSING_GRACE`` s times the queue's ``backoff_scale``, is a program deleted
for good or a typo in a script's shebang: its jobs then fail as any job that
cannot start does, so they are retried on their schedule and parked in the
failure queue where an operator sees them (as Sidekiq's dead set), instead of
being given back silently until their lifetime ends.

While a queue is paused, why (the errno and the error, which names the
program), since when and for how long is published in the consumer's
scoreboard, as held queues are (held_status.py): for ``disqontrolctl
status``, the metrics and the autoscaler (more consumers at TasksMax would
make the shortage of processes worse)."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Sequence

from disqontrol_client.logfmt import log_event
from disqontrold.held_status import one_line

logger = logging.getLogger("disqontrold.consumer")

FIRST_PAUSE = 0.5  # s
MAX_PAUSE = 30.0  # s
MISSING_GRACE = 60.0  # s a program may stay missing before its jobs fail (times backoff_scale)
#: s without a job of the queue found missing after which the next one starts
#: a new grace: another consumer may have run its jobs meanwhile, and a
#: program missing again an hour later is a new deploy (pauses are <= MAX_PAUSE).
MISSING_GAP = 2 * MAX_PAUSE
#: s after a queue's last pause ended past which its next pause is the first
#: again: an incident long after (another deploy, another TasksMax) is a new
#: one, not the 30 s step of an old one (another consumer may have run the
#: queue's jobs meanwhile, so no job of it started here to reset the step).
PAUSE_RESET_GAP = MISSING_GAP


class PausedQueues:
    """``open(queues)`` is the queues not paused now, in their order."""

    def __init__(self, group: str, missing_grace: dict[str, float],
                 publish: Optional[Callable[[list[dict[str, Any]]], None]] = None) -> None:
        self.group = group
        self._publish_to = publish  # Scoreboard.set_paused (None: not published)
        #: paused queue -> (errno name, error, the incident's first pause, this pause's length)
        self._why: dict[str, tuple[str, str, float, float]] = {}
        self._grace = missing_grace  # queue -> s its program may stay missing
        self._until: dict[str, float] = {}  # queue -> monotonic end of its pause
        #: queue -> (its next pause, its last pause's end, the incident's first pause),
        #: until a job of it starts or PAUSE_RESET_GAP passes
        self._next: dict[str, tuple[float, float, float]] = {}
        self._missing: dict[str, tuple[float, float]] = {}  # queue -> (went missing, last found missing)

    def __bool__(self) -> bool:
        return bool(self._until)

    def pause(self, queue: str, job_ids: Sequence[str], error: str, errno_name: str = "") -> None:
        """Pause ``queue`` after its jobs ``job_ids`` could not start (given back)."""
        now = time.monotonic()
        delay, ended, since = self._next.get(queue, (FIRST_PAUSE, now, now))
        if now - ended > PAUSE_RESET_GAP:
            delay, since = FIRST_PAUSE, now
        self._next[queue] = (min(delay * 2, MAX_PAUSE), now + delay, since)
        self._until[queue] = now + delay
        self._why[queue] = (errno_name, one_line(error), since, delay)
        self._publish()
        log_event(logger, "job_start_deferred", logging.WARNING, job=job_ids[0], queue=queue,
                  group=self.group, given_back=len(job_ids), error=error, retry_in=delay)

    def missing_too_long(self, queue: str, missing: bool) -> bool:
        """Whether a job of ``queue`` that could not start should fail instead
        of going back: its program (``missing``) has been missing past its
        grace since a job of ``queue`` last started (here), found missing
        at least every MISSING_GAP s meanwhile."""
        if not missing:
            return False
        now = time.monotonic()
        since, last = self._missing.get(queue, (now, now))
        if now - last > MISSING_GAP:
            since = now
        self._missing[queue] = (since, now)
        return now - since >= self._grace[queue]

    def started(self, queue: str) -> None:
        """A job of ``queue`` started: its next pause is the first again."""
        if self._next:
            self._next.pop(queue, None)
        if self._missing:
            self._missing.pop(queue, None)

    def open(self, queues: Sequence[str]) -> list[str]:
        """``queues`` without the paused ones (pauses that ended are dropped)."""
        now = time.monotonic()
        ended = [queue for queue, until in self._until.items() if until <= now]
        for queue in ended:
            del self._until[queue]
        if ended:
            self._publish()
        return [q for q in queues if q not in self._until]

    def until_next(self) -> float:
        """Seconds until the first pause ends (0 with none)."""
        return max(0.0, min(self._until.values(), default=0.0) - time.monotonic())

    def _publish(self) -> None:
        """The paused queues into the scoreboard (monotonic times; the master makes them relative)."""
        if self._publish_to is None:
            return
        self._publish_to([dict(zip(("queue", "errno", "error", "since", "pause", "until"),
                                   (queue, *self._why[queue], until))) for queue, until in self._until.items()])
