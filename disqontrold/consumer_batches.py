"""The consumer's runs of non-windowed workers (inline and concurrent
Python workers): a reserved batch run queue by queue in this process,
while the window's processes run on.

A batch run one job after another can outlive the lease of its reserve,
so this part also keeps the leases of the waiting jobs and gives back the
ones a run could outlast. Kept apart from consumer.py, the reserve loop
and the window, as consumer_signals.py and recycling.py are: the Consumer
class takes these methods in (``class Consumer(InlineBatches)``).
"""
from __future__ import annotations

import logging
import traceback

from disqontrol_client.config import Config
from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrold.consumer_signals import ConsumerSignals
from disqontrold.jobs_in_hand import RUN_LEASE_GRACE, JobsInHand
from disqontrold.jobwindow import JobWindow
from disqontrold.workers.base import Outcome, Worker

logger = logging.getLogger(__name__)


class InlineBatches:
    """Running the non-windowed jobs of a reserve (see Consumer)."""

    # Set by Consumer.__init__ and run():
    config: Config
    workers: dict[str, Worker]
    signals: ConsumerSignals
    jobs: JobsInHand
    window: JobWindow
    _recycle: str
    _timeouts: dict[str, float]
    _shortest_timeout: float

    def _settle(self, ended: list[tuple[Job, Outcome]]) -> None:
        raise NotImplementedError  # Consumer's

    def _on_start(self, job: Job) -> None:
        raise NotImplementedError  # Consumer's

    def _book_death(self, job: Job) -> None:
        raise NotImplementedError  # Consumer's

    def _run_batches(self, by_queue: dict[str, list[Job]]) -> None:
        """Run the jobs of non-windowed workers: a concurrent worker's as one
        ``run_many``, an inline worker's one by one. The stop flag and the
        recycling limits are checked between runs: a bloated process stops
        after the job in hand and gives the unstarted rest back. A batch run
        one job after another can outlive the lease of its reserve: past
        LEASE_RENEW_AFTER each run's end acks the ended jobs and renews the
        waiting ones (JobsInHand.keep_leases), and before a run, waiting
        jobs it could outlast are given back (``_give_back_outlasted``)."""
        reserved = [job for jobs in by_queue.values() for job in jobs]
        started = 0
        given_back: set[str] = set()
        for queue, jobs in by_queue.items():
            worker = self.workers[queue]
            for run in [jobs] if worker.concurrent else [[job] for job in jobs]:
                if self.signals.stopping or self._recycle:  # finish the job in hand, give the rest back
                    break
                if len(by_queue) > 1 and self.jobs.may_outlast(self._timeouts[queue], self._shortest_timeout):
                    given_back.update(self._give_back_outlasted(reserved[started + len(run):], given_back,
                                                                self._timeouts[queue]))
                todo = [job for job in run if job.id not in given_back] if given_back else run
                started += len(run)
                if todo:
                    self._tend_window_now(self._timeouts[queue])
                    for job in todo:
                        self._book_death(job)
                    self._settle(list(zip(todo, self._run(worker, todo))))
                if started < len(reserved) and self.jobs.renewal_due():
                    self.jobs.keep_leases([job for job in reserved[started:] if job.id not in given_back])
        self.jobs.nack([job.id for job in reserved[started:] if job.id not in given_back])

    def _give_back_outlasted(self, waiting: list[Job], given_back: set[str], run_timeout: float) -> list[str]:
        """Before a run of one queue, give back (nack) the waiting jobs of
        another whose shorter lease that run could outlast: renewing after
        it would be too late, and a second consumer would run them too.
        Given back, another consumer (or this one, next) takes them at once."""
        ids = self.jobs.outlasted_by([job for job in waiting if job.id not in given_back], run_timeout,
                                     self._timeouts)
        if ids:
            self.jobs.nack(ids)
        return ids

    def _tend_window_now(self, run_timeout: float) -> None:
        """Between two inline runs, which cannot watch the window's
        processes: feed their stdin, drain their output, enforce their
        deadlines and settle those that ended, without waiting; and make
        the leases the window renews last through the next run."""
        if self.window:
            self._settle(self.window.wait(0))
            self.jobs.renew_running(cover=run_timeout + RUN_LEASE_GRACE)

    def _run(self, worker: Worker, jobs: list[Job]) -> list[Outcome]:
        timeout = self.config.queue(jobs[0].queue).job_process_timeout
        try:
            return worker.run_many(jobs, timeout, on_start=self._on_start)
        # A worker bug must fail its jobs, not the consumer. SIGINT only sets
        # our stop flag, so a KeyboardInterrupt here was raised by user code.
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
            error = f"worker raised {type(exc).__name__}: {exc}"
            log_event(logger, "worker_raised", logging.ERROR, job=",".join(j.id or "" for j in jobs),
                      queue=jobs[0].queue, error=error)
            return [Outcome(ok=False, error=error, details={"traceback": traceback.format_exc()})
                    for _ in jobs]

