"""The queues a consumer holds back because their worker could not be set up
(``setup_environment()`` or a factory raised: a database down, a bug).

Their jobs are not reserved meanwhile: they wait in the broker with their
retries untouched, since an environment that is down is not the jobs' fault,
and the group's other queues run on. Each held worker is built again at
growing intervals (``UnbuiltWorker.ready``); once it works, it is swapped in
and its queue is reserved from again."""
from __future__ import annotations

import logging
import time

from disqontrol_client.logfmt import log_event
from disqontrold.workers import UnbuiltWorker, Worker

logger = logging.getLogger("disqontrold.consumer")


class HeldQueues:
    """``open`` lists the queues to reserve from, in the group's order."""

    def __init__(self, group: str, queues: list[str], workers: dict[str, Worker]) -> None:
        self.group = group
        self.queues = queues
        self._held = {q: w for q, w in workers.items() if isinstance(w, UnbuiltWorker)}
        self.open = [q for q in queues if q not in self._held]
        for queue, worker in self._held.items():
            self._log_failure(queue, worker)

    def __bool__(self) -> bool:
        return bool(self._held)

    def retry(self, workers: dict[str, Worker]) -> None:
        """Build again the held workers that are due; swap in those that work."""
        for queue, worker in list(self._held.items()):
            tries = worker.tries
            built = worker.ready()
            if built is not None:
                workers[queue] = built
                del self._held[queue]
                log_event(logger, "worker_setup_recovered", group=self.group, queue=queue, tries=tries + 1)
            elif worker.tries != tries:
                self._log_failure(queue, worker)
        self.open = [q for q in self.queues if q not in self._held]

    def until_next_try(self) -> float:
        """Seconds until the next held worker is due for a build."""
        return max(0.0, min(w.next_try for w in self._held.values()) - time.monotonic())

    def _log_failure(self, queue: str, worker: UnbuiltWorker) -> None:
        log_event(logger, "worker_setup_failed", logging.ERROR, group=self.group, queue=queue,
                  tries=worker.tries, retry_in=f"{worker.next_try - time.monotonic():.0f}",
                  error=worker.error, traceback=worker.traceback, jobs="held in the queue")
