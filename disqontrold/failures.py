"""What happens after a job failed (SPEC §6): a delayed retry copy, or the
queue's failure queue once it failed too often or would outlive its lifetime.

Always "add the new copy first, ack the old one second" (Broker.replace): a
crash in between can duplicate a job, never lose it.

A failure queue that is itself a configured queue (with a worker) gets its
jobs as new jobs of that queue: its lease (a job parked with the unconsumed
failure queue's 600 s lease ran twice at once when its worker may run
longer), its lifetime, and a retry count from 0 (the count of the queue it
failed on made it fail for good at its first failure there).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from disqontrol_client.brokers.broker import Broker, NewJob
from disqontrol_client.config import FAILURE_QUEUE_TTL, QueueConfig
from disqontrol_client.job import (
    CREATION_TIME, DEFAULT_JOB_LIFETIME, JOB_LIFETIME, LAST_ERROR, ORIGINAL_ID,
    ORIGINAL_QUEUE, PROCESS_TIMEOUT, RETRIES, Job, encode_envelope,
)
from disqontrol_client.logfmt import log_event
from disqontrol_client.submit import new_job_for
from disqontrold.backoff import retry_delay
from disqontrold.workers.base import Outcome

logger = logging.getLogger(__name__)

RETRY_IMMEDIATELY = "retry_immediately"
RETRIED, PARKED = "retry", "failed"  # Decision.action
# Lease of a job parked in a failure queue: nobody consumes it by default.
FAILURE_QUEUE_RETRY = 600


@dataclass(frozen=True)
class Decision:
    """Where a failed job went: ``retry`` (after ``delay`` s) or ``failed``."""

    action: str
    new_id: str
    attempt: int
    delay: float = 0.0


def last_error(outcome: Outcome, now: float) -> dict[str, Any]:
    """The job's ``last-error`` metadata: what an operator needs to judge a
    failed job from ``disqontrolctl failed show`` alone."""
    return {"message": outcome.error, **outcome.details, "time": now}


def first_id(job: Job) -> dict[str, str]:
    """``first=`` for the log line of a retry copy (or a replay of a failed
    job): every copy has a new broker id, so without the id ``addjob``
    printed on each line, grepping it showed the first run only and lost
    the job's retries, its move to the failure queue and its replay."""
    first = job.original_id
    return {} if first is None or first == job.id else {"first": first}


def next_delay(attempt: int, queue: QueueConfig, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempt`` (1-based) of a job of ``queue``."""
    if queue.failure_strategy == RETRY_IMMEDIATELY:
        return 0.0
    return retry_delay(attempt, jitter=jitter, scale=queue.backoff_scale)


def handle_failure(
    broker: Broker,
    job: Job,
    queue: QueueConfig,
    outcome: Outcome,
    *,
    failure_queue: Optional[QueueConfig] = None,
    now: Optional[float] = None,
    jitter: Callable[[], float] = random.random,
) -> Decision:
    """Retry ``job`` later or move it to its failure queue; ack the old copy.

    ``job.retries`` is the number of failures before this one, so this failure
    is attempt ``job.retries + 1``. ``failure_queue``: the config of
    ``queue.failure_queue`` when it is a configured queue (None: a plain one)."""
    now = time.time() if now is None else now
    attempt = job.retries + 1
    error = last_error(outcome, now)
    delay = next_delay(attempt, queue, jitter)
    expires = float(job.metadata.get(CREATION_TIME, now)) + float(
        job.metadata.get(JOB_LIFETIME, DEFAULT_JOB_LIFETIME)
    )
    if attempt > queue.max_retries or now + delay > expires:
        reason = "max_retries" if attempt > queue.max_retries else "job_lifetime"
        return _to_failure_queue(broker, job, queue, error, attempt, reason, failure_queue, now)
    metadata = _failed_metadata(job, attempt, error)
    copy = Job(body=job.body, queue=job.queue, metadata=metadata)
    new_id = broker.replace(job.id, new_job_for(copy, queue, delay=delay))
    log_event(
        logger, "job_failed", logging.WARNING, job=job.id, **first_id(job), queue=job.queue, attempt=attempt,
        error=outcome.error, next_delay=round(delay, 3), retry_job=new_id,
    )
    return Decision(RETRIED, new_id, attempt, delay)


def count_redeliveries(job: Job, queue: QueueConfig) -> Optional[Outcome]:
    """Book the extra deliveries of a job before it runs again.

    A delivery with ``additional_deliveries`` > 0 was leased before by a
    consumer or worker that died mid-job (or was killed as hung): SPEC §6
    counts that as a failure. Each extra delivery adds one to the job's
    ``retries``; past ``max_retries`` the job is not run: the failure to
    book (``handle_failure``) is returned, else None. The added count is
    persisted only if the job fails again (its retry copy carries it); a
    success simply acks it."""
    extra = job.additional_deliveries
    if extra <= 0:
        return None
    failed_runs = job.retries + extra
    log_event(logger, "job_redelivered", logging.WARNING, job=job.id, **first_id(job), queue=job.queue,
              additional_deliveries=extra, retries=failed_runs)
    if failed_runs <= queue.max_retries:
        job.metadata[RETRIES] = failed_runs
        return None
    job.metadata[RETRIES] = failed_runs - 1  # handle_failure counts this failure
    return Outcome(ok=False, error=f"its consumer or worker died mid-job ({extra} redeliveries)")


def _failed_metadata(job: Job, attempt: int, error: dict[str, Any]) -> dict[str, Any]:
    """The metadata a failed job's next copy carries, whether it is retried or
    parked: the count and the first id survive every copy, for the logs."""
    metadata = dict(job.metadata)
    metadata[RETRIES] = attempt
    metadata[ORIGINAL_ID] = job.original_id
    metadata[LAST_ERROR] = error
    return metadata


def _to_failure_queue(
    broker: Broker, job: Job, queue: QueueConfig, error: dict[str, Any], attempt: int, reason: str,
    consumed: Optional[QueueConfig], now: float,
) -> Decision:
    metadata = _failed_metadata(job, attempt, error)
    metadata[ORIGINAL_QUEUE] = job.queue
    if consumed is None:
        parked = NewJob(
            queue=queue.failure_queue,
            payload=encode_envelope(job.body, metadata),
            retry=FAILURE_QUEUE_RETRY,
            ttl=FAILURE_QUEUE_TTL,
        )
    else:
        fresh = Job(body=job.body, queue=consumed.name, metadata=_fresh_start(metadata))
        parked = new_job_for(fresh, consumed, now=now)
    new_id = broker.replace(job.id, parked)
    log_event(
        logger, "job_failed_permanently", logging.ERROR, job=job.id, **first_id(job), queue=job.queue,
        attempt=attempt, error=error.get("message"), reason=reason,
        failure_queue=queue.failure_queue, failed_job=new_id,
    )
    return Decision(PARKED, new_id, attempt)


def _fresh_start(metadata: dict[str, Any]) -> dict[str, Any]:
    """A parked job's metadata as a new job of a consumed failure queue: no
    retries yet; its creation time, lifetime and timeout are filled in anew
    (``new_job_for``). The error, the first id and the queue it failed on stay."""
    fresh = {k: v for k, v in metadata.items() if k not in (CREATION_TIME, JOB_LIFETIME, PROCESS_TIMEOUT)}
    fresh[RETRIES] = 0
    return fresh
