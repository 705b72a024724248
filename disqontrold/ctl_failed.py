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
from typing import Any, Callable, Iterator, Optional, Sequence, TextIO

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
#: Failed jobs `failed list` shows unless --limit says otherwise (oldest first).
DEFAULT_LIMIT = 50
#: The end of `disqontrolctl failed list --help`.
LIST_EPILOG = (f"Oldest first, {DEFAULT_LIMIT} at a time (--limit N, 0 for all; --offset N skips the first N); "
               "how many more there are goes to stderr, so --json stays a plain list. "
               "Exit codes: 0 listed, 2 unknown queue, 3 the broker cannot be reached.")
#: The end of `disqontrolctl failed retry --help`.
RETRY_EPILOG = ("Each job is added to its queue first and removed from the failure queue second. "
                "--all retries every job it can: a job whose queue is no longer configured is skipped, "
                "kept in the failure queue and named on stderr with the reason. "
                "Exit codes: 0 all retried, 1 some skipped (the rest were retried), 2 unknown id or queue "
                "(ID: nothing retried), 3 the broker cannot be reached.")
#: The end of `disqontrolctl failed purge --help`.
PURGE_EPILOG = ("On a terminal it asks 'Delete N job(s) from QUEUE? [y/N]'; elsewhere it needs --yes. "
                "Exit codes: 0 deleted (or nothing to delete), 1 not confirmed, 2 usage error "
                "(no --yes without a terminal), 3 the broker cannot be reached.")
# Metadata the failure path adds that a replayed job must not carry.
FAILURE_ONLY_KEYS = (LAST_ERROR, ORIGINAL_QUEUE)
#: Ids per delete call of a purge.
DELETE_BATCH = 500
#: Why `retry --all` skipped a job that left the failure queue while it ran.
GONE = "it left the failure queue meanwhile (retried, purged or expired)"


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


def _by_origin(config: Config, queue: Optional[str]) -> bool:
    """Whether ``queue`` picks jobs by the queue they failed on (which only
    their payloads say), rather than naming a failure queue or all of them."""
    return queue is not None and queue not in config.failure_queues and queue in config.queues


def _failure_queues(config: Config, queue: Optional[str]) -> list[str]:
    """The failure queues to read for ``queue`` (a failure queue, a queue
    the jobs failed on, or None for all); UsageError for any other name."""
    failure_queues = sorted(config.failure_queues)
    if queue in config.failure_queues:
        return [queue]
    if queue is None or queue in config.queues:
        return failure_queues
    raise UsageError(
        f"unknown queue {queue!r}; queues: {', '.join(sorted(config.queues))}; "
        f"failure queues: {', '.join(failure_queues)}"
    )


def iter_failed(broker: Broker, config: Config, queue: Optional[str] = None) -> Iterator[FailedJob]:
    """Failed jobs, oldest first, read a page at a time (``Broker.scan``) so
    that memory stays a page whatever the failure queue's size. ``queue`` is a failure
    queue's name, or an original queue's name to see only the jobs that
    failed there."""
    by_origin = _by_origin(config, queue)
    for failure_queue in _failure_queues(config, queue):
        for delivery in broker.scan(failure_queue):
            failed = _decode(delivery.id, failure_queue, delivery.payload)
            if not by_origin or failed.original_queue == queue:
                yield failed


def failed_ids(broker: Broker, config: Config, queue: Optional[str] = None) -> list[tuple[str, str]]:
    """(id, failure queue) of the failed jobs ``iter_failed`` would give: what
    a bulk retry or purge works through, fixed before it removes any (ids are
    small; the payloads are read again one at a time). Payloads are decoded
    only when the jobs are picked by the queue they failed on."""
    if _by_origin(config, queue):
        return [(f.id, f.failure_queue) for f in iter_failed(broker, config, queue)]
    return [(d.id, failure_queue) for failure_queue in _failure_queues(config, queue)
            for d in broker.scan(failure_queue)]


def count_more(rest: Iterator[FailedJob], broker: Broker, config: Config, queue: Optional[str], seen: int) -> int:
    """How many failed jobs follow the ``seen`` first of ``iter_failed``:
    the failure queues' lengths less ``seen``, or, when the jobs are picked
    by the queue they failed on, the ones left in ``rest`` (that iterator,
    read on: one scan in all, not a second one)."""
    if _by_origin(config, queue):
        return sum(1 for _ in rest)
    return sum(broker.length(failure_queue) for failure_queue in _failure_queues(config, queue)) - seen


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
    matches = [f for f in iter_failed(broker, config) if f.metadata.get(jobmod.ORIGINAL_ID) == job_id]
    if not matches:
        raise UsageError(f"no failed job with id or first id {job_id!r} (already retried or purged, "
                         "or it has not failed for good yet?)")
    if len(matches) > 1:
        raise UsageError(f"{len(matches)} failed jobs were first added as {job_id!r}: "
                         f"{', '.join(f.id for f in matches)}; name one of them")
    return matches[0]


def unretryable(config: Config, failed: FailedJob) -> Optional[str]:
    """Why ``failed`` cannot go back to the queue it failed on, or None."""
    if not failed.original_queue:
        return f"it does not name the queue it failed on ({ORIGINAL_QUEUE!r} metadata)"
    if failed.original_queue not in config.queues:
        return (f"its queue {failed.original_queue!r} is not configured (any more); "
                f"configured queues: {', '.join(sorted(config.queues)) or '(none)'}")
    return None


def retry_failed(broker: Broker, config: Config, failed: FailedJob) -> str:
    """Re-add the job to its original queue with retries reset; returns the new id."""
    reason = unretryable(config, failed)
    if reason or not failed.original_queue:
        raise UsageError(f"failed job {failed.id} cannot be retried: {reason}")
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


def retry_all(broker: Broker, config: Config, queue: Optional[str],
              on_retried: Callable[[FailedJob, str], None]) -> tuple[int, dict[str, list[str]]]:
    """Retry every failed job (of ``queue`` if given) that can be: one whose
    queue a deploy removed stays in the failure queue and the rest go on.
    The jobs are those there when it starts (a job that fails again
    meanwhile is not replayed twice), read one at a time. Returns how many
    were retried and the skipped ids by reason."""
    retried, skipped = 0, {}
    for job_id, failure_queue in failed_ids(broker, config, queue):
        info = broker.show(job_id)
        if info is None or info.get("queue") != failure_queue:
            skipped.setdefault(GONE, []).append(job_id)
            continue
        failed = _decode(job_id, failure_queue, info["payload"])
        reason = unretryable(config, failed)
        if reason:
            log_event(log, "failed_job_not_retried", job=job_id, queue=failed.original_queue, reason=reason)
            skipped.setdefault(reason, []).append(job_id)
            continue
        on_retried(failed, retry_failed(broker, config, failed))
        retried += 1
    return retried, skipped


def confirm_purge(targets: Sequence[tuple[str, str]], assume_yes: bool, stdin: Optional[TextIO] = None,
                  prompt_to: Optional[TextIO] = None) -> bool:
    """Whether to delete ``targets`` ((id, failure queue) pairs) for good:
    ``--yes``, or a "y" typed on a terminal (as Sidekiq's "Delete All" asks).
    A purge cannot be undone, so a script (stdin not a terminal) must say
    ``--yes``: UsageError if not."""
    if assume_yes or not targets:
        return True
    stdin = stdin or sys.stdin  # None when the shell closed it (<&-)
    prompt_to = prompt_to or sys.stderr
    queues = ", ".join(sorted({failure_queue for _, failure_queue in targets}))
    if stdin is None or not stdin.isatty():
        raise UsageError(f"failed purge: would delete {len(targets)} job(s) from {queues} for good; "
                         "stdin is not a terminal to confirm it: add --yes")
    prompt_to.write(f"Delete {len(targets)} job(s) from {queues}? [y/N] ")
    prompt_to.flush()
    return stdin.readline().strip().lower() in CONFIRMATIONS


def purge_failed(broker: Broker, targets: Sequence[tuple[str, str]]) -> int:
    """Delete the failed jobs listed (and confirmed) for good, DELETE_BATCH
    ids per call; returns how many. A job that failed since the listing is
    not in ``targets``, so not deleted unseen."""
    ids = [job_id for job_id, _ in targets]
    for start in range(0, len(ids), DELETE_BATCH):
        broker.delete(ids[start:start + DELETE_BATCH])
    log_event(log, "failed_jobs_purged", count=len(ids))
    return len(ids)
