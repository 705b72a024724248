"""The failure queue (dead-letter queue) as `disqontrolctl failed` sees it.

Works on the broker directly, so it needs no running master. A failure-queue
job is an ordinary stored job whose metadata names the queue it failed on
(``original-queue``) and its last error. Retry adds a fresh copy to that queue
with the retry count reset and a fresh lifetime, first, and removes the failed
copy second (``Broker.replace``: one transaction on sqlite and redis): a crash
in between duplicates the job, never loses it (SPEC §6).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional, TextIO

from disqontrol_client import job as jobmod
from disqontrol_client.brokers import Broker
from disqontrol_client.config import Config
from disqontrol_client.errors import UsageError
from disqontrol_client.logfmt import log_event
from disqontrol_client.submit import new_job_for

log = logging.getLogger(__name__)

ORIGINAL_QUEUE = jobmod.ORIGINAL_QUEUE
LAST_ERROR = jobmod.LAST_ERROR
#: The answers to the purge prompt that delete (anything else, or none, keeps the jobs).
CONFIRMATIONS = ("y", "yes")
#: The end of `disqontrolctl failed purge --help`.
PURGE_EPILOG = ("On a terminal it asks 'Delete N job(s) from QUEUE? [y/N]'; elsewhere it needs --yes. "
                "Exit codes: 0 deleted (or nothing to delete), 1 not confirmed, 2 usage error "
                "(no --yes without a terminal), 3 the broker cannot be reached.")
# Metadata the failure path adds that a replayed job must not carry.
FAILURE_ONLY_KEYS = (LAST_ERROR, ORIGINAL_QUEUE)


@dataclass(frozen=True)
class FailedJob:
    """A failure-queue job decoded once, so list, show and retry agree on
    where it came from and why it failed."""

    id: str
    failure_queue: str
    original_queue: Optional[str]
    body: Any
    metadata: dict[str, Any]

    @property
    def last_error(self) -> str:
        """The error's message (the failure path stores a dict with "message")."""
        error = self.metadata.get(LAST_ERROR)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error or "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "failure_queue": self.failure_queue, "queue": self.original_queue,
            "retries": self.metadata.get(jobmod.RETRIES), "last_error": self.last_error,
            "body": self.body, "metadata": self.metadata,
        }


def _decode(delivery_id: str, failure_queue: str, payload: bytes | str) -> FailedJob:
    body, metadata = jobmod.decode_payload(payload)
    return FailedJob(delivery_id, failure_queue, metadata.get(ORIGINAL_QUEUE), body, metadata)


def list_failed(broker: Broker, config: Config, queue: Optional[str] = None) -> list[FailedJob]:
    """Failed jobs, oldest first. ``queue`` is a failure queue's name, or an
    original queue's name to see only the jobs that failed there."""
    failure_queues = sorted(config.failure_queues)
    if queue is not None and queue not in config.failure_queues and queue not in config.queues:
        raise UsageError(
            f"unknown queue {queue!r}; queues: {', '.join(sorted(config.queues))}; "
            f"failure queues: {', '.join(failure_queues)}"
        )
    found = []
    for failure_queue in failure_queues:
        if queue in config.failure_queues and queue != failure_queue:
            continue
        deliveries = broker.peek(failure_queue, max(broker.length(failure_queue), 1))
        for delivery in deliveries:
            failed = _decode(delivery.id, failure_queue, delivery.payload)
            if queue is None or queue == failure_queue or failed.original_queue == queue:
                found.append(failed)
    return found


def show_failed(broker: Broker, config: Config, job_id: str) -> FailedJob:
    """One failed job by its id, or by the id its first copy had (the one
    `addjob` printed and the application logged: each retry and the move to
    the failure queue give the job a new id); UsageError if neither is in a
    failure queue."""
    info = broker.show(job_id)
    if info is None:
        return _by_original_id(broker, config, job_id)
    if info.get("queue") not in config.failure_queues:
        raise UsageError(
            f"job {job_id!r} is in queue {info.get('queue')!r}, not in a failure queue "
            f"({', '.join(sorted(config.failure_queues))})"
        )
    return _decode(job_id, info["queue"], info["payload"])


def _by_original_id(broker: Broker, config: Config, job_id: str) -> FailedJob:
    """The failed job whose first copy was ``job_id`` (the id itself is gone)."""
    matches = [f for f in list_failed(broker, config) if f.metadata.get(jobmod.ORIGINAL_ID) == job_id]
    if not matches:
        raise UsageError(f"no failed job with id or first id {job_id!r} (already retried or purged, "
                         "or it has not failed for good yet?)")
    if len(matches) > 1:
        raise UsageError(f"{len(matches)} failed jobs were first added as {job_id!r}: "
                         f"{', '.join(f.id for f in matches)}; name one of them")
    return matches[0]


def retry_failed(broker: Broker, config: Config, failed: FailedJob) -> str:
    """Re-add the job to its original queue with retries reset; returns the new id."""
    if not failed.original_queue:
        raise UsageError(f"failed job {failed.id} does not name its original queue ({ORIGINAL_QUEUE!r} metadata)")
    queue_config = config.queue(failed.original_queue)
    metadata = {k: v for k, v in failed.metadata.items() if k not in FAILURE_ONLY_KEYS}
    metadata[jobmod.RETRIES] = 0
    metadata[jobmod.ORIGINAL_ID] = metadata.get(jobmod.ORIGINAL_ID) or failed.id
    # A replay is a fresh chance: the whole lifetime again, from now.
    metadata[jobmod.CREATION_TIME] = int(time.time())
    new = new_job_for(jobmod.Job(failed.body, failed.original_queue, metadata), queue_config)
    # Add first, remove second (one transaction where the engine can).
    new_id = broker.replace(failed.id, new)
    log_event(log, "failed_job_retried", job=new_id, failed_job=failed.id, queue=failed.original_queue)
    return new_id


def confirm_purge(jobs: list[FailedJob], assume_yes: bool, stdin: Optional[TextIO] = None,
                  prompt_to: Optional[TextIO] = None) -> bool:
    """Whether to delete ``jobs`` for good: ``--yes``, or a "y" typed on a
    terminal (as Sidekiq's "Delete All" asks). A purge cannot be undone, so
    a script (stdin not a terminal) must say ``--yes``: UsageError if not."""
    if assume_yes or not jobs:
        return True
    stdin = stdin or sys.stdin  # None when the shell closed it (<&-)
    prompt_to = prompt_to or sys.stderr
    queues = ", ".join(sorted({failed.failure_queue for failed in jobs}))
    if stdin is None or not stdin.isatty():
        raise UsageError(f"failed purge: would delete {len(jobs)} job(s) from {queues} for good; "
                         "stdin is not a terminal to confirm it: add --yes")
    prompt_to.write(f"Delete {len(jobs)} job(s) from {queues}? [y/N] ")
    prompt_to.flush()
    return stdin.readline().strip().lower() in CONFIRMATIONS


def purge_failed(broker: Broker, jobs: Iterable[FailedJob]) -> int:
    """Delete failed jobs for good; returns how many."""
    ids = [failed.id for failed in jobs]
    if ids:
        broker.delete(ids)
    log_event(log, "failed_jobs_purged", count=len(ids))
    return len(ids)
