"""The queues a consumer holds back because their worker could not be set up
(``setup_environment()`` or a factory raised: a database down, a bug).

Their jobs are not reserved meanwhile: they wait in the broker with their
retries untouched, since an environment that is down is not the jobs' fault,
and the group's other queues run on. Each held worker is tried again at
growing intervals, in a forked child (``UnbuiltWorker.ready``,
workers/setup_probe.py), so a try that hangs holds up nothing else; once a
try works, the worker is built in the consumer, swapped in, and its queue is
reserved from again. What is held, why and when the next try comes is
published in the consumer's scoreboard for ``disqontrolctl status``, the
metrics and the autoscaler (held_status.py)."""
from __future__ import annotations

import logging
import time

from disqontrol_client.logfmt import log_event
from disqontrold.held_status import one_line
from disqontrold.scoreboard import Scoreboard
from disqontrold.workers import UnbuiltWorker, Worker

logger = logging.getLogger("disqontrold.consumer")


class HeldQueues:
    """``open`` lists the queues to reserve from, in the group's order."""

    def __init__(self, group: str, queues: list[str], workers: dict[str, Worker], scoreboard: Scoreboard,
                 try_timeout: float) -> None:
        self.group = group
        self.queues = queues
        self.scoreboard = scoreboard
        self.try_timeout = try_timeout
        self._held = {q: w for q, w in workers.items() if isinstance(w, UnbuiltWorker)}
        self.open = [q for q in queues if q not in self._held]
        for queue, worker in self._held.items():
            self._log_failure(queue, worker)
        self._publish()

    def __bool__(self) -> bool:
        return bool(self._held)

    def retry(self, workers: dict[str, Worker]) -> None:
        """Start the tries that are due, look at the running ones (never
        waiting for them); swap in the workers that work."""
        changed = False
        for queue, worker in list(self._held.items()):
            tries, probe = worker.tries, worker.probe
            built = worker.ready(self.try_timeout, lambda: self.scoreboard.setting_up(queue))
            if built is not None:
                workers[queue] = built
                del self._held[queue]
                log_event(logger, "worker_setup_recovered", group=self.group, queue=queue, tries=tries + 1)
            elif worker.tries != tries:
                self._log_failure(queue, worker)
            changed = changed or built is not None or worker.probe is not probe
        if changed:
            self.open = [q for q in self.queues if q not in self._held]
            self._publish()

    def until_next_try(self) -> float:
        """Seconds until a held worker has something to do (a try, or a look at one)."""
        return max(0.0, min(w.next_check() for w in self._held.values()) - time.monotonic())

    def close(self) -> None:
        """End the tries still running (the consumer is leaving)."""
        for worker in self._held.values():
            worker.close()

    def _publish(self) -> None:
        self.scoreboard.set_held([{
            "queue": queue, "tries": worker.tries, "error": one_line(worker.error),
            "next_try": None if worker.probe else worker.next_try,
            "trying_since": worker.probe.started if worker.probe else None,
        } for queue, worker in self._held.items()])

    def _log_failure(self, queue: str, worker: UnbuiltWorker) -> None:
        log_event(logger, "worker_setup_failed", logging.ERROR, group=self.group, queue=queue,
                  tries=worker.tries, retry_in=f"{worker.next_try - time.monotonic():.0f}",
                  error=worker.error, traceback=worker.traceback, jobs="held in the queue")
