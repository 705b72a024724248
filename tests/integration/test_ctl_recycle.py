"""A consumer over max_memory_per_process is recycled after the job in hand,
even in the middle of a reserved batch: the unstarted jobs of the batch go
back to the broker, and no job is lost, failed or run twice."""
from __future__ import annotations

import textwrap

import pytest

from tests.support.daemon import Daemon
from tests.support.procs import wait_for

HOG_MIB = 200
LIMIT_MIB = 100
JOBS = 3
DEFAULT_JOB_BATCH = None  # the config's default (10): all JOBS in one reserve
HOG_MODULE = textwrap.dedent(
    f"""
    import os, time
    KEEP = []

    def hog(job):
        KEEP.append(b"x" * ({HOG_MIB} * 1024 * 1024))  # written, so resident
        with open(os.environ["DQ_OUT"] + ".pids", "a") as pids:
            pids.write(f"{{os.getpid()}}\\n")
        with open(os.environ["DQ_OUT"], "a") as out:
            out.write(f"{{job.body}} {{time.time():.4f}}\\n")
    """
)


@pytest.mark.parametrize("job_batch", [1, DEFAULT_JOB_BATCH], ids=["batch-1", "batch-default"])
def test_consumer_over_its_memory_limit_is_recycled_after_each_job_without_losing_jobs(tmp_path, job_batch):
    (tmp_path / "memhog.py").write_text(HOG_MODULE)
    limits = {"min_processes": 1, "max_processes": 1, "max_memory_per_process": LIMIT_MIB}
    if job_batch is not None:
        limits["job_batch"] = job_batch
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {"big": {"worker": {"type": "inline_python_worker", "name": "memhog:hog"}}},
                    consumer_defaults=limits).start()
    try:
        first_pid = daemon.consumer_pids()
        # When jobs that each make the consumer grow past the limit are added at once
        daemon.add("big", list(range(JOBS)))
        # Then the consumer was recycled for memory after each job, by a fresh process
        recycled = daemon.wait_event("consumer_recycled", JOBS, timeout=90)
        assert all("reason=max_memory_per_process" in line for line in recycled)
        wait_for(lambda: daemon.broker.stats(["big"])[0].in_flight == 0 and daemon.broker.length("big") == 0,
                 timeout=30, message="every job settled")
        # And every job ran exactly once, each in its own process
        runs = daemon.runs()
        assert sorted(body for body, _ in runs) == [str(n) for n in range(JOBS)]
        pids = (tmp_path / "out.txt.pids").read_text().split()
        assert len(set(pids)) == JOBS
        wait_for(lambda: daemon.consumer_pids() and daemon.consumer_pids() != first_pid, timeout=30)
        # And the jobs given back were neither failed nor counted as redelivered
        assert daemon.broker.length("failed-jobs") == 0
        assert not daemon.events("consumer_crashed") and not daemon.events("job_redelivered")
        assert len(daemon.events("job_done")) == JOBS
    finally:
        daemon.stop()
