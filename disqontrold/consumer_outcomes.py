"""How the consumer books what became of its jobs: a delivery decoded (or
parked, redelivered too often), a success owed an ack, a failure retried
or parked, a consumer's death counted once, and the counters and the log
line of each. Kept apart from consumer.py, the reserve loop and the window,
as consumer_batches.py is: the Consumer class takes these methods in
(``class Consumer(JobOutcomes, InlineBatches)``).
"""
from __future__ import annotations

import logging
from typing import Optional

from disqontrol_client.brokers.broker import Delivery
from disqontrol_client.config import Config
from disqontrol_client.job import Job, decode_payload
from disqontrol_client.logfmt import log_event
from disqontrold import failures
from disqontrold.jobs_in_hand import JobsInHand
from disqontrold.queue_tally import DONE, PARKED, RETRIED
from disqontrold.scoreboard import Scoreboard
from disqontrold.workers.base import Outcome

logger = logging.getLogger("disqontrold.consumer")  # the consumer's own lines

MS = 1000


class JobOutcomes:
    """Booking the jobs' outcomes (see Consumer)."""

    # Set by Consumer.__init__ and run():
    config: Config
    jobs: JobsInHand
    scoreboard: Scoreboard
    _recycle: str

    def _recycle_reason(self) -> str:
        raise NotImplementedError  # Consumer's

    def _decode(self, delivery: Delivery) -> Optional[Job]:
        """The Job of a delivery; None if it was redelivered too often (parked)."""
        queue = self.config.queue(delivery.queue)
        body, metadata = decode_payload(
            delivery.payload, job_lifetime=queue.job_lifetime, process_timeout=queue.job_process_timeout
        )
        job = Job(body=body, queue=delivery.queue, metadata=metadata, id=delivery.id,
                  nacks=delivery.nacks, additional_deliveries=delivery.additional_deliveries)
        died = failures.count_redeliveries(job, queue)
        if died is None:
            return job  # its death is booked when it starts (_book_death)
        if self._fail(job, died):
            self.scoreboard.count(failed=1)  # its last death (SPEC §6), parked
        return None

    def _book_death(self, job: Job) -> None:
        """Count the death of the job's last delivery (its consumer died under
        it: a failure, SPEC §6) as it starts again, not at its delivery: the
        broker's count of redeliveries stays the same when a job is given
        back unstarted (a stop, a recycle, a paused queue), so each delivery
        counted it again (3 failures for 2 deaths)."""
        if job.additional_deliveries:
            self.scoreboard.count(failed=1)
            self.scoreboard.queue_cells.record(job.queue, RETRIED, None)

    def _settle(self, ended: list[tuple[Job, Outcome]]) -> None:
        """Book ended jobs: a success waits for the next reserve to ack it, a
        failure is retried or parked now; then the recycling limits."""
        failed = 0
        for job, outcome in ended:
            if outcome.ok:
                self.jobs.succeeded(job.id)
                self.scoreboard.queue_cells.record(job.queue, DONE, outcome.duration)
                log_event(logger, "job_done", job=job.id, **failures.first_id(job), queue=job.queue,
                          duration_ms=round(outcome.duration * MS, 1))
            elif self._fail(job, outcome, outcome.duration):
                failed += 1
        if not ended:
            return
        self.scoreboard.count(done=sum(outcome.ok for _, outcome in ended), failed=failed)
        if not self._recycle:
            self._recycle = self._recycle_reason()

    def _fail(self, job: Job, outcome: Outcome, duration: Optional[float] = None) -> bool:
        """Retry or park the job; ``duration``: how long it ran (None: not
        run). False if the broker did not take the failure: the job comes
        back after its lease and is counted as failed then, once."""
        queue = self.config.queue(job.queue)
        parked = self.jobs.fail(job, queue, outcome, self.config.queues.get(queue.failure_queue))
        recorded = None if parked is None else PARKED if parked else RETRIED
        self.scoreboard.queue_cells.record(job.queue, recorded, duration)
        return parked is not None
