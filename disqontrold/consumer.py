"""The consumer: a child of the master that takes jobs of its group's queues
and runs their workers.

reserve(up to job_batch) -> decode -> windowed workers (command, isolated): each job
starts in the job window (jobwindow.py) and is settled as it ends; the
others: group by queue -> worker.run_many -> settled as a batch. Settling:
failures.handle_failure for the failed; the successes are acked by the next
reserve (``reserve(..., ack=...)``: one broker transaction / round trip per
reserve instead of two). While window jobs run, that next reserve is made
(without blocking) as soon as half the window is free, else within
jobwindow.REFILL_INTERVAL; with nothing running it is made at once and
blocks. Its acks are committed before it leases or blocks; before exiting
(stop, recycling) the consumer flushes them with a plain ``ack``. So a crash
of the consumer between a job's success and that next call redelivers the
job (at least once). It blocks in the broker's reserve only when no job
runs (never sleep-polls) and checks its stop flag and its recycling limits
between starts and between the jobs of an inline batch; the unstarted jobs
go back with ``nack``, which does not count as a failure; started ones
finish. A redelivered job counts as failed before it runs again
(failures.count_redeliveries). What is owed to the broker for the jobs in
hand (acks, unstarted jobs, the leases of a slow batch) is kept by
jobs_in_hand.JobsInHand; the runs of non-windowed workers' batches are in
consumer_batches.py.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.broker import Broker, Delivery
from disqontrol_client.config import Config, ConsumerConfig
from disqontrol_client.errors import BrokerError, BrokerUnavailable, WorkerLoadError
from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrold.children import EXIT_BOOT_FAILED, EXIT_FAST, EXIT_OK
from disqontrold.consumer_batches import InlineBatches
from disqontrold.consumer_outcomes import JobOutcomes
from disqontrold.consumer_signals import ConsumerSignals
from disqontrold.jobs_in_hand import JobsInHand
from disqontrold.jobwindow import JobWindow, StartDeferred
from disqontrold.paused_queues import MISSING_GRACE, PausedQueues
from disqontrold.recycling import RecycleLimits
from disqontrold.proctitle import consumer_title, set_title
from disqontrold.scoreboard import BUSY, IDLE, STOPPING, Scoreboard
from disqontrold.workers import WINDOWED_TYPES
from disqontrold.workers.base import Outcome, Worker
from disqontrold.workers.fastfork import settle
from disqontrold.workers.jobprocs import NEVER

if TYPE_CHECKING:  # the master never imports the workers' modules
    from disqontrold.held_queues import HeldQueues

logger = logging.getLogger(__name__)

RESERVE_TIMEOUT = 1.0  # s: bounds how long a stop request waits for a blocked reserve
BROKER_BACKOFF_START = 0.5  # s
BROKER_BACKOFF_CAP = 30.0  # s


class Consumer(JobOutcomes, InlineBatches):
    """One consumer process of a group (one slot of the master)."""

    def __init__(
        self, config: Config, group: ConsumerConfig, bootstrap: Optional[Path], scoreboard: Scoreboard,
        hold_python: str = "",
    ) -> None:
        self.config = config
        self.hold_python = hold_python  # why Python workers are not built at start ('' = build them)
        self.group = group
        self.bootstrap = bootstrap
        self.scoreboard = scoreboard
        self.queues = list(group.queues)
        self.workers: dict[str, Worker] = {}
        self._held: Optional["HeldQueues"] = None  # queues whose worker's setup raised (built in run)
        self._timeouts = {q: config.queue(q).job_process_timeout for q in self.queues}
        self.jobs = JobsInHand(EXIT_FAST, self._timeouts)  # acks owed, jobs not started, leases
        self.jobs.windowed = frozenset(q for q in self.queues if config.queue(q).worker.type in WINDOWED_TYPES)
        self._shortest_timeout = min(self._timeouts.values())  # whose lease a long run could outlast first
        self.window = JobWindow(group.job_batch, notes=scoreboard)
        self._busy = False  # the scoreboard says busy
        self._shown: Optional[str] = None  # the job id it names
        self._recycle = ""  # why this process is to be replaced, once it is
        self._limits = RecycleLimits(group)  # max_jobs / max_memory_per_process, a moved sqlite file
        self._window_backoff = BROKER_BACKOFF_START  # s before a refill after the broker failed one
        self._down_since: Optional[float] = None  # time.monotonic() of this outage's first failure
        self._paused = PausedQueues(  # queues whose jobs could not start, for a while
            group.name, {q: MISSING_GRACE * config.queue(q).backoff_scale for q in self.queues}, scoreboard.set_paused)
        self.signals = ConsumerSignals(self.jobs.quit.request)

    @property
    def broker(self) -> Optional[Broker]:
        """The connection, opened in run(); JobsInHand makes the calls about jobs."""
        return self.jobs.broker

    # -- lifecycle ------------------------------------------------------
    def run(self) -> int:
        self.signals.install()
        set_title(consumer_title(self.group.name, "starting"))
        try:
            self.workers = self._build_workers()
        except WorkerLoadError as exc:
            log_event(logger, "consumer_boot_failed", logging.ERROR, group=self.group.name, error=str(exc))
            return EXIT_BOOT_FAILED
        if not self._connect():
            return EXIT_OK
        settle()  # fewer resident pages for each isolated job's fork to copy
        log_event(logger, "consumer_ready", group=self.group.name, queues=",".join(self.queues))
        self._idle()
        try:
            self._loop()
        finally:
            self.scoreboard.set_state(STOPPING)
            self.window.close()  # empty unless an exception cut the loop short
            self.jobs.flush_acks()
            self._close()
        log_event(logger, "consumer_stopped", group=self.group.name,
                  done=self.scoreboard.done, failed=self.scoreboard.failed)
        return EXIT_OK

    def _build_workers(self) -> dict[str, Worker]:
        """Every queue's worker; one whose setup raised holds its queue
        (HeldQueues). After a start hung in a Python worker's setup, the
        Python queues start held (``hold_python``: why) and their setup is
        tried in a child, so the group's other queues run meanwhile."""
        from disqontrold.held_queues import HeldQueues  # noqa: PLC0415 (the master never loads workers)
        from disqontrold.workers import PYTHON_TYPES, UnbuiltWorker  # noqa: PLC0415

        workers: dict[str, Worker] = {}
        for queue in self.queues:
            queue_config = self.config.queue(queue)
            if self.hold_python and queue_config.worker.type in PYTHON_TYPES:
                workers[queue] = UnbuiltWorker(queue_config, self.bootstrap, self.hold_python, "")
            else:
                workers[queue] = UnbuiltWorker.build(queue_config, self.bootstrap)
        self._held = HeldQueues(self.group.name, self.queues, workers, self.scoreboard, self.group.start_timeout)
        return workers

    def _connect(self) -> bool:
        """Open the broker, backing off while it is unreachable. False if stopped."""
        delay = BROKER_BACKOFF_START
        while not self.signals.stopping:
            try:
                self.jobs.broker = open_broker(self.config.broker)
                self._broker_back()
                return True
            except (BrokerUnavailable, BrokerError) as exc:
                self._broker_trouble("connect", exc, delay)
                delay = min(delay * 2, BROKER_BACKOFF_CAP)
        return False

    def _broker_trouble(self, operation: str, exc: Exception, delay: float) -> None:
        self._log_trouble(operation, exc, delay)
        self.scoreboard.heartbeat()
        self.signals.wait(delay)

    def _log_trouble(self, operation: str, exc: Exception, retry_in: float) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        log_event(logger, "broker_unreachable", logging.WARNING, group=self.group.name,
                  operation=operation, error=str(exc), retry_in=retry_in)

    def _broker_back(self) -> None:
        """One line when the broker answers again: the broker_unreachable
        lines just stopped, and an operator could not tell the end of an
        outage (a full disk, a locked sqlite file) from a silent consumer."""
        if self._down_since is not None:
            log_event(logger, "broker_reachable", group=self.group.name,
                      down_for=round(time.monotonic() - self._down_since, 1))
            self._down_since = None

    def _close(self) -> None:
        if self._held:
            self._held.close()
        for worker in self.workers.values():
            worker.close()
        if self.broker is not None:
            with self.jobs.quit.broker_call():
                self.broker.close()

    def _recycle_reason(self) -> str:
        """Why this process should be replaced by a fresh one ('' = keep going)."""
        return self._limits.reason(self.scoreboard.done + self.scoreboard.failed, self.broker)

    def _idle(self) -> None:
        self._busy = False
        self._shown = None
        self.scoreboard.set_state(IDLE)
        set_title(consumer_title(self.group.name, "idle"))

    def _on_start(self, job: Job) -> None:
        self.jobs.started(job.id)
        self._show_busy(job)

    def _show_busy(self, job: Job) -> None:
        """Status and the process title name ``job``: for the job window,
        its oldest running job (``_show_oldest``)."""
        self._busy = True
        self._shown = job.id
        self.scoreboard.set_state(BUSY, job.id or "")
        set_title(consumer_title(self.group.name, "busy", job.id or ""))

    def _show_oldest(self) -> None:
        """Once the job status names has ended, name the window's oldest
        running one: a stuck job among others that come and go was never
        named (status showed each round's latest start)."""
        oldest = self.window.oldest_job()
        if oldest is not None and oldest.id != self._shown:
            self._show_busy(oldest)

    # -- the job path ---------------------------------------------------
    def _loop(self) -> None:
        """Until stopped or recycled: block in the broker while no job runs;
        while jobs run, tend the window (reserve more at half, settle each
        job as it ends). A stop lets the running jobs finish."""
        while True:
            if self.window:
                self._tend()
            elif self.signals.stopping or self._recycle or self._room() <= 0:
                return
            else:
                self._take(self._reserve(RESERVE_TIMEOUT))
                if not self._recycle:  # an idle consumer too: after a reserve that found nothing
                    self._recycle = self._recycle_reason()
            if self._busy and not self.window:
                self._idle()

    def _tend(self) -> None:
        self.jobs.renew_running()
        due = self._next_refill()
        if time.monotonic() >= due:
            self._take(self._reserve(0))
            due = self._next_refill()
        elif self._held:  # a full window reserves nothing: look at the held queues' tries anyway
            self._held.retry(self.workers)
        if self._held:
            due = min(due, time.monotonic() + self._held.until_next_try())
        due = min(due, self.jobs.next_renewal())
        if self.window:
            self._settle(self.window.wait(None if due == NEVER else max(0.0, due - time.monotonic())))
            self._show_oldest()

    def _room(self) -> int:
        """How many jobs to reserve: the window's free places, no more than
        the recycling limit still allows."""
        room = self.window.free
        if self.group.max_jobs_per_process:
            handled = self.scoreboard.done + self.scoreboard.failed + len(self.window)
            room = min(room, self.group.max_jobs_per_process - handled)
        return room

    def _next_refill(self) -> float:
        if self.signals.stopping or self._recycle or self._room() <= 0:
            return NEVER
        return self.window.pace.next_refill(self.window.free)

    def _reserve(self, timeout: float) -> list[Delivery]:
        """Lease up to ``_room()`` jobs, acking the ended successes with it.
        With ``timeout`` 0 (jobs are running) one try: on a broker failure the
        window's next refill backs off as a blocking reserve's retries do."""
        count = self._room()
        delay = BROKER_BACKOFF_START
        queues = self.queues
        if self._held:
            self._held.retry(self.workers)
            queues = self._held.open
        if self._paused:
            queues = self._paused.open(queues)
        if not queues:  # every queue held or paused: wait for the next setup try or pause's end
            self._wait_for_a_queue(timeout)
            return []
        while not self.signals.stopping:
            try:
                got = self.jobs.reserve(queues, count, timeout)
            except (BrokerUnavailable, BrokerError) as exc:
                if timeout:
                    self._broker_trouble("reserve", exc, delay)
                    delay = min(delay * 2, BROKER_BACKOFF_CAP)
                    continue
                # Jobs run: no waiting here; the window backs off as a blocking reserve would.
                self._log_trouble("reserve", exc, self._window_backoff)
                self.window.pace.failed(time.monotonic(), self._window_backoff)
                self._window_backoff = min(self._window_backoff * 2, BROKER_BACKOFF_CAP)
                got = []
            else:
                self._broker_back()
                self._window_backoff = BROKER_BACKOFF_START
                self.window.pace.reserved(time.monotonic(), count, len(got))
            self.scoreboard.heartbeat()
            self.signals.reopen_logs_if_asked()  # after the wait: the batch's lines go to the new file
            return got
        return []

    def _wait_for_a_queue(self, timeout: float) -> None:
        """Every queue held or paused: wait up to ``timeout`` for the next
        setup try or pause's end. With jobs running (``timeout`` 0) the
        window waits instead, until then: with its refill left due, the
        loop spun on empty reserves, a whole core, for the pause."""
        waits = []
        if self._held:
            waits.append(self._held.until_next_try())
        if self._paused:
            waits.append(self._paused.until_next())
        if timeout:
            self.signals.wait(min(timeout, *waits))
        else:
            self.window.pace.failed(time.monotonic(), min(waits))
        self.scoreboard.heartbeat()

    def _take(self, deliveries: Sequence[Delivery]) -> None:
        """Start reserved jobs: a windowed worker's join the window, then the
        others run by queue (``run_many``) at once, while the window's
        processes run on. (Waiting for the window to empty first held them,
        leased, behind the longest running job: past their lease, another
        consumer got them too.) The window is tended between two runs."""
        if not deliveries:
            return
        if self.signals.stopping:
            self.jobs.nack([d.id for d in deliveries])
            return
        windowed: list[Job] = []
        by_queue: dict[str, list[Job]] = {}
        for delivery in deliveries:
            if self.window and self.window.running(delivery.id):
                self._drop_second_delivery(delivery)
                continue
            job = self._decode(delivery)
            if job is None:
                continue
            if self.workers[job.queue].windowed:
                windowed.append(job)
            else:
                by_queue.setdefault(job.queue, []).append(job)
        self._start(windowed)
        if by_queue:
            self._run_batches(by_queue)

    def _drop_second_delivery(self, delivery: Delivery) -> None:
        """A job that runs here came back (its lease lapsed: the consumer
        was stopped, or the broker is Disque): not run twice at once. Its
        running copy acks it or retries it; the reserve just extended its
        lease again, so no other consumer gets it meanwhile."""
        self.jobs.started(delivery.id)  # not given back: that would hand the running job out
        log_event(logger, "job_already_running", logging.WARNING, job=delivery.id, queue=delivery.queue,
                  additional_deliveries=delivery.additional_deliveries)

    def _start(self, jobs: list[Job]) -> None:
        """Start jobs in the window; once stopping or recycling, the rest go
        back, and so do the jobs of a queue whose job could not start now
        (StartDeferred: that queue is paused, the others' jobs start), unless
        its program has been missing too long: then the job fails."""
        if not jobs:
            return
        # One title and scoreboard write per round, not per job: the oldest job.
        self._on_start(self.window.oldest_job() or jobs[0])
        deferred: set[str] = set()
        for index, job in enumerate(jobs):
            if self.signals.stopping or self._recycle:
                self.jobs.nack([j.id for j in jobs[index:] if j.queue not in deferred])
                return
            if job.queue in deferred:
                continue  # given back with the first of its queue that could not start
            self.jobs.started(job.id)
            try:
                failed = self.window.start(self.workers[job.queue], job, self._timeouts[job.queue])
            except StartDeferred as exc:
                if self._paused.missing_too_long(job.queue, exc.missing):
                    self._book_death(job)
                    self._settle([(job, Outcome(False, error=str(exc)))])
                    continue
                back = [j.id for j in jobs[index:] if j.queue == job.queue]
                self.jobs.nack(back)
                self._paused.pause(job.queue, back, str(exc), exc.errno_name)
                deferred.add(job.queue)
                continue
            self._paused.started(job.queue)
            self._book_death(job)
            if failed is not None:
                self._settle([(job, failed)])
