"""What a consumer owes the broker for the jobs it holds.

- The successes not acked yet: they ride on the next reserve (one broker
  call per batch, not per job), or are acked at once when the process
  leaves or a slow batch renews its leases.
- The lease of each job reserved must cover its run (its queue's
  job_process_timeout + RUN_LEASE_GRACE; a producer with the daemon's
  config sets timeout + LEASE_GRACE, longer). A producer sets the lease
  from its own view of the queue (a bare ``Producer(url)`` takes the
  600 s default). None of this
  costs a broker call when every lease is long enough (the fast path).
  A shorter lease of a job run in this process (inline, http: the loop
  blocks while they run) is extended right after the reserve, one call
  for all such jobs of the reserve. One of a job window's job (command,
  isolated) is renewed while the job runs, by its own lease every half
  lease (``renew_running``): a killed consumer's job comes back after the
  lease its producer chose, as when its lease was long enough.
- The jobs reserved but not started: given back (nack) on a stop, a
  recycle or a fast quit, so they do not wait for their lease.
- The lease of a batch that runs one job after another: past
  LEASE_RENEW_AFTER, each job's end acks the ended jobs and renews the
  waiting ones (``extend``), or a batch slower than its lease would be
  handed to a second consumer too.

Every broker call goes through ``FastQuit.broker_call`` so that a SIGQUIT
never uses the connection in the middle of another call.
"""
from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

from disqontrol_client.brokers import Broker, Delivery
from disqontrol_client.config import QueueConfig
from disqontrol_client.errors import BrokerError, BrokerUnavailable
from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrol_client.submit import LEASE_GRACE
from disqontrold import failures
from disqontrold.fastquit import FastQuit
from disqontrold.workers.base import Outcome
from disqontrold.slots import HUNG_GRACE
from disqontrold.workers.jobprocs import KILL_GRACE, NEVER

logger = logging.getLogger("disqontrold.consumer")

# s into a batch whose jobs run one by one: past it, each job's end acks the
# ended ones and renews the waiting ones' leases. Shorter batches are left
# alone (the acks ride on the next reserve); longer ones could outlive the
# lease taken at the reserve, and a second consumer would run them again.
# One broker call per job is noise next to a job this slow.
LEASE_RENEW_AFTER = 1.0
# s a lease the consumer extends lasts past its run's timeout: past the
# master's kill of a consumer hung in a job (HUNG_GRACE), so that job is not
# handed out while the hung one may still run it, and the SIGTERM-to-SIGKILL
# grace of a window job (KILL_GRACE). Shorter than the producer's LEASE_GRACE:
# a consumer that dies mid-job leaves a job whose lease it extended leased
# at most its queue's job_process_timeout + this after the reserve (or the
# last renewal).
RUN_LEASE_GRACE = HUNG_GRACE + KILL_GRACE


class JobsInHand:
    """The consumer's jobs, as the broker sees them; ``broker`` is set once connected."""

    def __init__(self, exit_code: int, timeouts: dict[str, float]) -> None:
        self.broker: Optional[Broker] = None
        # s each queue's jobs must stay leased from a reserve or a renewal
        self._leases = {queue: timeout + RUN_LEASE_GRACE for queue, timeout in timeouts.items()}
        self._grace = LEASE_GRACE  # s past its timeout the shortest lease in hand lasts (see _horizon)
        #: queues whose jobs run in the window: a short lease is renewed while they run
        self.windowed: frozenset[str] = frozenset()
        # window jobs whose lease is shorter than their run: id -> (lease s, monotonic time to renew)
        self._renewing: dict[str, tuple[float, float]] = {}
        self.unacked: list[str] = []  # succeeded, acked by the next reserve
        self._unstarted: set[str] = set()  # reserved, not started
        self.leased_at = 0.0  # monotonic time the jobs in hand were leased or renewed
        self.quit = FastQuit(self.hand_back, exit_code)

    def reserve(self, queues: Sequence[str], count: int, timeout: float) -> list[Delivery]:
        """Lease up to ``count`` jobs, acking the ended successes with them."""
        with self.quit.broker_call():
            got = self.broker.reserve(queues, count=count, timeout=timeout, ack=self.unacked)  # type: ignore[union-attr]
            self.unacked = []
            self._unstarted.update(d.id for d in got)
            self._grace = LEASE_GRACE
            leases = self._leases
            short = [d for d in got if 0 < d.lease < leases[d.queue]]
            if short:
                self._cover(short)
        self.leased_at = time.monotonic()
        return got

    def _cover(self, short: list[Delivery]) -> None:
        """Make the leases shorter than their job's run last it: a window
        job's is renewed as it runs, the others' extended now."""
        renew_at = time.monotonic()
        now: list[tuple[str, str]] = []
        for delivery in short:
            if delivery.queue in self.windowed:
                self._renewing[delivery.id] = (delivery.lease, renew_at + delivery.lease / 2)
            else:
                now.append((delivery.id, delivery.queue))
        if now:
            self._extend(now, "lease_not_extended")
            self._grace = RUN_LEASE_GRACE

    def next_renewal(self) -> float:
        """When a running window job's lease is next due for renewal
        (time.monotonic(); NEVER when none is)."""
        return min((at for _, at in self._renewing.values()), default=NEVER)

    def renew_running(self, cover: float = 0.0) -> None:
        """Renew the leases of the running window jobs that are due, each by
        its own lease; ``cover`` > 0: all of them, for that long at least
        (an inline run is about to block the loop for up to ``cover`` s)."""
        if not self._renewing or self.broker is None:
            return
        now = time.monotonic()
        by_seconds: dict[float, list[str]] = {}
        for job_id, (lease, at) in self._renewing.items():
            if cover or at <= now:
                seconds = max(lease, cover)
                by_seconds.setdefault(seconds, []).append(job_id)
                self._renewing[job_id] = (lease, now + seconds / 2)
        with self.quit.broker_call():
            for seconds, ids in by_seconds.items():
                try:
                    self.broker.extend(ids, seconds)
                except (BrokerUnavailable, BrokerError) as exc:
                    log_event(logger, "lease_not_renewed", logging.WARNING, job=",".join(ids), error=str(exc))

    def ended(self, job_id: Optional[str]) -> None:
        """A job ran to its end (acked soon, or retried): no lease to renew."""
        if self._renewing:
            self._renewing.pop(job_id or "", None)

    def _extend(self, jobs: list[tuple[str, str]], failure_event: str) -> None:
        """Lease ``jobs`` ((id, queue) pairs) for their queue's run from now:
        one ``extend`` per lease length (mostly one). A broker that fails
        leaves them on their current lease: logged, the jobs still run."""
        by_lease: dict[float, list[str]] = {}
        for job_id, queue in jobs:
            by_lease.setdefault(self._leases[queue], []).append(job_id)
        for seconds, ids in by_lease.items():
            try:
                self.broker.extend(ids, seconds)  # type: ignore[union-attr]
            except (BrokerUnavailable, BrokerError) as exc:
                log_event(logger, failure_event, logging.WARNING, job=",".join(ids), error=str(exc))

    def started(self, job_id: Optional[str]) -> None:
        self._unstarted.discard(job_id or "")

    def succeeded(self, job_id: Optional[str]) -> None:
        self.ended(job_id)
        self.unacked.append(job_id or "")

    def fail(
        self, job: Job, queue: QueueConfig, outcome: Outcome, failure_queue: Optional[QueueConfig]
    ) -> Optional[bool]:
        """Retry or park the job (SPEC §6): True if parked in the failure
        queue, False if retried. None if the broker failed here: the job is
        left leased, comes back after its lease and counts as failed then
        (as a job whose consumer died under it), not now too."""
        self.started(job.id)  # a parked redelivery is never started
        self.ended(job.id)
        try:
            with self.quit.broker_call():
                decision = failures.handle_failure(self.broker, job, queue, outcome, failure_queue=failure_queue)
        except (BrokerUnavailable, BrokerError) as exc:
            log_event(logger, "failure_not_recorded", logging.ERROR, job=job.id, queue=job.queue,
                      error=str(exc))
            return None
        return decision.action == failures.PARKED

    def flush_acks(self) -> None:
        """Ack the successes now, not with the next reserve (the process is
        leaving, or a long batch keeps its leases)."""
        ids, self.unacked = self.unacked, []
        if not ids or self.broker is None:
            return
        try:
            with self.quit.broker_call():
                self.broker.ack(ids)
        except (BrokerUnavailable, BrokerError) as exc:
            self.unacked[:0] = ids  # owed still: they ride on the next reserve, or the next flush
            log_event(logger, "ack_failed", logging.ERROR, job=",".join(ids), error=str(exc))

    def nack(self, ids: list[str]) -> None:
        """Give reserved jobs back now (not started: a stop, a recycle)."""
        if not ids or self.broker is None:
            return
        self._unstarted.difference_update(ids)
        for job_id in ids:
            self.ended(job_id)
        try:
            with self.quit.broker_call():
                self.broker.nack(ids)
        except (BrokerUnavailable, BrokerError) as exc:
            log_event(logger, "nack_failed", logging.WARNING, job=",".join(ids), error=str(exc))

    def renewal_due(self) -> bool:
        return time.monotonic() - self.leased_at >= LEASE_RENEW_AFTER

    def keep_leases(self, waiting: list[Job]) -> None:
        """A batch run one job after another can outlive the lease of its
        reserve: past LEASE_RENEW_AFTER, ack the ended jobs now and extend
        the leases of those still waiting (``extend``)."""
        if not waiting or not self.renewal_due() or self.broker is None:
            return
        self.leased_at = time.monotonic()
        self.flush_acks()
        with self.quit.broker_call():
            self._extend([(job.id or "", job.queue) for job in waiting], "lease_not_renewed")

    def may_outlast(self, run_timeout: float, shortest_timeout: float) -> bool:
        """Whether a run of up to ``run_timeout`` could outlast the lease of
        a job whose queue's timeout is ``shortest_timeout``: one comparison
        before each run, so that the common batch (timeouts within the
        grace of each other) never walks its waiting jobs (``outlasted_by``)."""
        return self._horizon(run_timeout) > shortest_timeout

    def outlasted_by(self, waiting: Sequence[Job], run_timeout: float, timeouts: dict[str, float]) -> list[str]:
        """The waiting jobs whose lease (their queue's timeout + LEASE_GRACE,
        or RUN_LEASE_GRACE once extended, since the reserve or the last renewal) a run of up to ``run_timeout``
        could outlast: renewing after the run would come too late."""
        horizon = self._horizon(run_timeout)
        return [job.id or "" for job in waiting if timeouts[job.queue] < horizon]

    def _horizon(self, run_timeout: float) -> float:
        """A lease (timeout + LEASE_GRACE as producers set it, or
        RUN_LEASE_GRACE when this reserve extended one) ends before a run of
        up to ``run_timeout`` starting now if its timeout is below this."""
        return time.monotonic() + run_timeout - self._grace - self.leased_at

    def hand_back(self) -> None:
        """On SIGQUIT, the connection idle: ack the ended successes and nack
        the jobs not started, so that neither waits for its lease."""
        if self.broker is None:
            return
        try:
            if self.unacked:
                self.broker.ack(self.unacked)
            if self._unstarted:
                self.broker.nack(sorted(self._unstarted))
        except (BrokerUnavailable, BrokerError):
            pass  # no logging in a signal handler; they come back by lease expiry, as before
