"""Adding jobs: the API application code calls (SPEC §4).

``Producer("redis://...")`` adds to any queue with the default limits;
``Producer.from_config(path)`` checks queue names against the config and uses
each queue's lifetime and timeout. In synchronous mode ``add`` runs the job
now through the daemon's worker code (loaded by name, so importing the client
never imports the daemon) and returns the worker's result.
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import threading
import time
import uuid
from typing import Any, Iterable, Optional

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.broker import Broker, NewJob
from disqontrol_client.config import Config, QueueConfig, load_config
from disqontrol_client.errors import JobFailed, UsageError
from disqontrol_client.job import METADATA_KEYS, Job, usable_metadata
from disqontrol_client.logfmt import log_event, redact_url
from disqontrol_client.submit import new_job_for

logger = logging.getLogger(__name__)

SYNC_MODULE = "disqontrold.sync"  # where run_job_now lives (the daemon package)
# A job run synchronously never gets a broker id; this prefix marks the local
# one it gets instead, so its log lines still carry a job id.
SYNC_ID_PREFIX = "sync-"
SYNC_ID_HEX_CHARS = 12


class Producer:
    """Adds jobs to one broker. Not shared across processes (open one per process)."""

    def __init__(
        self,
        url_or_broker: str | Broker,
        config: Optional[Config] = None,
        *,
        synchronous: bool = False,
        bootstrap: Optional[str | os.PathLike[str]] = None,
    ) -> None:
        if synchronous and config is None:
            raise UsageError("synchronous mode needs a config to find the queue's worker: use Producer.from_config")
        self.config = config
        self.synchronous = synchronous
        self.bootstrap = bootstrap
        # Connect lazily: a synchronous producer never needs the broker.
        self._url = url_or_broker if isinstance(url_or_broker, str) else None
        self._broker: Optional[Broker] = None if isinstance(url_or_broker, str) else url_or_broker
        self._owns_broker = isinstance(url_or_broker, str)
        self._moved_check = 0.0  # monotonic time of the next look at Broker.moved()
        self._reopen_lock = threading.Lock()  # threads of an app share one producer
        self._moved_away: list[Broker] = []  # brokers left for a moved file, closed by close()

    @classmethod
    def from_config(
        cls,
        path: Optional[str | os.PathLike[str]] = None,
        synchronous: bool = False,
        bootstrap: Optional[str | os.PathLike[str]] = None,
    ) -> "Producer":
        """A producer for the broker and queues of the config (SPEC §2 lookup when ``path`` is None)."""
        config = load_config(path)
        return cls(config.broker, config, synchronous=synchronous, bootstrap=bootstrap)

    @property
    def broker(self) -> Broker:
        broker = self._broker  # read once: another thread may swap it meanwhile
        if broker is not None and not (self._owns_broker and time.monotonic() >= self._moved_check):
            return broker
        with self._reopen_lock:
            if self._broker is not None and self._owns_broker and self._moved():
                # Not closed now: another thread may be adding through it (closing a
                # sqlite connection in use crashed the app); close() closes it.
                self._moved_away.append(self._broker)
                self._broker = None
            if self._broker is None:
                self._broker = open_broker(str(self._url))
            return self._broker

    def _moved(self) -> bool:
        """The broker's sqlite file deleted or replaced (Broker.moved), looked
        at once a second at most: an app's long-lived producer then opens
        the file there now, where the daemon takes its jobs, instead of
        adding them to one nobody reads. Called under ``_reopen_lock``."""
        now = time.monotonic()
        if now < self._moved_check or self._broker is None:
            return False
        self._moved_check = now + Broker.MOVED_CHECK_INTERVAL
        how = self._broker.moved()
        if how:
            log_event(logger, "broker_reopened", logging.WARNING, broker=redact_url(str(self._url)), how=how)
        return bool(how)

    def add(self, job: Job, delay: float = 0) -> Any:
        """Add ``job``; returns its id (sets ``job.id`` too). Synchronous mode:
        runs it now and returns the worker's result, or raises JobFailed.
        Nothing is added when the job is refused."""
        new = self._prepare(job, delay)
        if self.synchronous:
            return self._run_now(job)
        job.id = self.broker.add(new.queue, new.payload, delay=new.delay, retry=new.retry, ttl=new.ttl)
        log_event(logger, "job_added", logging.DEBUG, job=job.id, queue=job.queue, delay=delay)
        return job.id

    def add_many(self, jobs: Iterable[Job], delay: float = 0) -> list[Any]:
        """Add several jobs in one broker round trip; every job is checked
        before any is added. Returns the ids (results in synchronous mode)."""
        jobs = list(jobs)
        items = [self._prepare(job, delay) for job in jobs]
        if self.synchronous:
            return [self._run_now(job) for job in jobs]
        ids = self.broker.add_many(items) if items else []
        for job, job_id in zip(jobs, ids):
            job.id = job_id
        log_event(logger, "jobs_added", logging.DEBUG, count=len(ids))
        return ids

    def _prepare(self, job: Job, delay: float) -> NewJob:
        """Check everything, build the stored job; raises before anything is added."""
        if not isinstance(job, Job):
            raise UsageError(f"expected a disqontrol_client.Job, got {job!r}")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay) or delay < 0:
            raise UsageError(f"delay must be a number of seconds, 0 or more; got {delay!r}")
        if not isinstance(job.metadata, dict):
            raise UsageError(f"a job's metadata is a dict; got {job.metadata!r}")
        for key in METADATA_KEYS & job.metadata.keys():
            if not usable_metadata(key, job.metadata[key]):
                raise UsageError(f"metadata {key!r} of a job for queue {job.queue!r} is {job.metadata[key]!r}; "
                                 "allowed: a count >= 0 (retries), a string or null (original-id), "
                                 "else a number > 0 (seconds)")
        return new_job_for(job, self._queue_config(job.queue), delay, allow_nan=False)

    def _queue_config(self, queue: Any) -> Optional[QueueConfig]:
        if not isinstance(queue, str) or not queue or any(c.isspace() for c in queue):
            raise UsageError(f"a queue name is one non-empty word; got {queue!r}")
        return self.config.queue(queue) if self.config is not None else None

    def _run_now(self, job: Job) -> Any:
        try:
            sync = importlib.import_module(SYNC_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name not in (SYNC_MODULE, SYNC_MODULE.partition(".")[0]):
                raise  # a missing dependency of the daemon: its own message is clearer
            raise UsageError(f"synchronous mode needs the daemon package ({SYNC_MODULE}): {exc}") from None
        if job.id is None:
            job.id = SYNC_ID_PREFIX + uuid.uuid4().hex[:SYNC_ID_HEX_CHARS]
        outcome = sync.run_job_now(self.config, job, bootstrap=self.bootstrap)
        if outcome.ok:
            return outcome.result
        raise JobFailed(f"job on queue {job.queue!r} failed: {outcome.error}", outcome)

    def close(self) -> None:
        """Close the broker connection if this producer opened it. Idempotent."""
        if self._broker is not None and self._owns_broker:
            self._broker.close()
            self._broker = None
        while self._moved_away:
            self._moved_away.pop().close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
