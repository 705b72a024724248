"""A consumer over max_memory_per_process is recycled after its job, and no
job is lost; ctl status shows the RSS that triggered it."""
from __future__ import annotations

import textwrap

from tests.support.daemon import Daemon
from tests.support.procs import wait_for

HOG_MIB = 200
LIMIT_MIB = 100
JOBS = 3
HOG_MODULE = textwrap.dedent(
    f"""
    import os, time
    KEEP = []

    def hog(job):
        KEEP.append(b"x" * ({HOG_MIB} * 1024 * 1024))  # written, so resident
        with open(os.environ["DQ_OUT"], "a") as out:
            out.write(f"{{job.body}} {{time.time():.4f}}\\n")
    """
)


def test_consumer_over_its_memory_limit_is_recycled_without_losing_jobs(tmp_path):
    (tmp_path / "memhog.py").write_text(HOG_MODULE)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {"big": {"worker": {"type": "inline_python_worker", "name": "memhog:hog"}}},
                    consumer_defaults={"min_processes": 1, "job_batch": 1,
                                       "max_memory_per_process": LIMIT_MIB}).start()
    try:
        first_pid = daemon.consumer_pids()
        # When jobs that each make the consumer grow past the limit are run
        daemon.add("big", list(range(JOBS)))
        # Then every job ran exactly once
        runs = daemon.wait_runs(JOBS, timeout=90)
        assert sorted(body for body, _ in runs) == [str(n) for n in range(JOBS)]
        # And the consumer was recycled for memory after each job, by a fresh process
        recycled = daemon.wait_event("consumer_recycled", JOBS, timeout=60)
        assert all("reason=max_memory_per_process" in line for line in recycled)
        wait_for(lambda: daemon.consumer_pids() and daemon.consumer_pids() != first_pid, timeout=30)
        assert daemon.broker.length("big") == 0 and daemon.broker.length("failed-jobs") == 0
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()
