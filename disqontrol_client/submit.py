"""The one place that turns a Job into what the broker stores.

Producers and the daemon's retry path both call ``new_job_for``, so the
envelope, the TTL and the lease are computed the same way everywhere.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from disqontrol_client.brokers.broker import MAX_TTL, NewJob
from disqontrol_client.errors import UsageError
from disqontrol_client.job import (
    CREATION_TIME,
    DEFAULT_JOB_LIFETIME,
    DEFAULT_PROCESS_TIMEOUT,
    JOB_LIFETIME,
    Job,
    encode_envelope,
    fresh_metadata,
)

if TYPE_CHECKING:
    from disqontrol_client.config import QueueConfig

# Seconds added to a job's process timeout to get its broker lease (Disque
# RETRY): covers the worker's SIGTERM-to-SIGKILL grace, the consumer's
# bookkeeping and the ack round trip, so a job is never handed to a second
# consumer while the first is still legitimately running it.
LEASE_GRACE = 60.0


def new_job_for(
    job: Job,
    queue_config: Optional[QueueConfig] = None,
    delay: float = 0,
    *,
    ttl: Optional[float] = None,
    now: Optional[float] = None,
    allow_nan: bool = True,
) -> NewJob:
    """The broker's view of ``job`` for ``job.queue``.

    Metadata the job already carries (a retry's count and original id) wins
    over fresh metadata. The TTL is what is left of the job's lifetime (its
    whole lifetime for a new job), never less than the delay plus one lease,
    so a delayed job can still run once; ``ttl`` overrides it (the failure
    queue's own lifetime). ``queue_config`` None means the default limits.
    ``allow_nan`` False refuses a body holding NaN or an infinity (a new job).
    """
    process_timeout = queue_config.job_process_timeout if queue_config else DEFAULT_PROCESS_TIMEOUT
    lifetime = queue_config.job_lifetime if queue_config else DEFAULT_JOB_LIFETIME
    current = time.time() if now is None else now
    metadata = fresh_metadata(job_lifetime=lifetime, process_timeout=_whole(process_timeout), now=current)
    metadata.update(job.metadata)
    try:
        payload = encode_envelope(job.body, metadata, allow_nan=allow_nan)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the body of a job for queue {job.queue!r} is not JSON-serializable: {exc}") from None
    lease = process_timeout + LEASE_GRACE
    if ttl is None:
        remaining = float(metadata[CREATION_TIME]) + float(metadata[JOB_LIFETIME]) - current
        ttl = min(float(MAX_TTL), max(remaining, delay + lease))
    if delay >= ttl:
        raise UsageError(
            f"delay {delay!r} s for queue {job.queue!r} is not shorter than the job's time to live "
            f"({ttl:.0f} s, at most {MAX_TTL}): the job would expire before it runs"
        )
    return NewJob(queue=job.queue, payload=payload, delay=delay, retry=lease, ttl=ttl)


def _whole(seconds: float) -> float:
    """3.0 -> 3: the PHP Disqontrol reads whole seconds in the metadata."""
    return int(seconds) if float(seconds).is_integer() else seconds
