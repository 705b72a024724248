"""Synchronous mode: run one job now, in this process, through its queue's
worker. No broker, no retry: what ``Producer(..., synchronous=True)`` and
``disqontrol processjob`` need (they import this lazily, by name)."""
from __future__ import annotations

import os
from typing import Optional, Union

from disqontrol_client.config import Config
from disqontrol_client.job import Job, fresh_metadata
from disqontrold.workers import build_worker
from disqontrold.workers.base import Outcome
from disqontrold.workers.bootstrap import Bootstrap


def run_job_now(config: Config, job: Job,
                bootstrap: Union[Bootstrap, str, "os.PathLike[str]", None] = None) -> Outcome:
    """Build the queue's worker and run the job in the foreground.

    Raises ConfigError for an unknown queue and WorkerLoadError for a worker
    that cannot be built; a job failure is an Outcome with ok=False."""
    queue = config.queue(job.queue)
    if not job.metadata:
        job.metadata = fresh_metadata(job_lifetime=queue.job_lifetime, process_timeout=int(queue.job_process_timeout))
    worker = build_worker(queue, bootstrap)
    try:
        return worker.run(job, float(queue.job_process_timeout))
    finally:
        worker.close()
