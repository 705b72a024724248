"""The daemon runs every job exactly once across worker types and engines."""
from __future__ import annotations

import collections
import dataclasses

import pytest

from disqontrol_client.job import Job
from disqontrol_client.submit import new_job_for
from tests.support.daemon import Daemon, command_worker, python_worker
from tests.support.procs import wait_for

JOBS_PER_QUEUE = {"cmd": 700, "inline": 700, "isolated": 600}  # 2,000 in all


@pytest.mark.timeout(300)
def test_2000_jobs_across_worker_types_run_exactly_once(tmp_path, broker_url):
    # Given a daemon with a command, an inline and an isolated queue, 2 consumers each
    daemon = Daemon(tmp_path, broker_url, {
        "cmd": {"worker": command_worker(tmp_path)},
        "inline": {"worker": python_worker()},
        "isolated": {"worker": python_worker("isolated_python_worker")},
    }, consumer_defaults={"min_processes": 1, "job_batch": 20})
    daemon.start(consumers=3)
    try:
        # When 2,000 jobs with unique bodies are added
        bodies: dict[str, list[int]] = {}
        first = 0
        for queue, count in JOBS_PER_QUEUE.items():
            bodies[queue] = list(range(first, first + count))
            daemon.add(queue, bodies[queue])
            first += count
        total = sum(JOBS_PER_QUEUE.values())

        # Then each body is run exactly once and the queues drain
        runs = daemon.wait_runs(total, timeout=240)
        counts = collections.Counter(body for body, _ in runs)
        assert sorted(int(b) for b in counts) == list(range(total))
        assert max(counts.values()) == 1, [b for b, c in counts.items() if c > 1][:10]
        assert all(daemon.broker.length(q) == 0 for q in JOBS_PER_QUEUE)
        assert daemon.events("job_done") and not daemon.events("job_failed")
        # and the daemon is still up with its consumers
        assert daemon.proc.poll() is None
        assert len(daemon.consumer_pids()) == 3
    finally:
        daemon.stop()


SLOW_JOB = 1.2  # s each, run one after another by an inline worker
SHORT_LEASE = 2.0  # s: the batch outlives it after two of its jobs


@pytest.mark.timeout(120)
def test_an_inline_batch_longer_than_its_lease_runs_each_job_once(tmp_path, broker_url):
    if broker_url.startswith("disque"):
        pytest.skip("disque: a copy's node requeues a job RETRY s after it was queued, whoever took it "
                    "since; so a 2 s lease cannot show the renewal (a WORKING, which Disque honours)")
    # Given two consumers, one of which reserves a batch of 4 slow inline jobs
    # whose lease is shorter than the batch takes to run one by one
    daemon = Daemon(tmp_path, broker_url, {
        "work": {"worker": python_worker()},
    }, consumer_defaults={"min_processes": 2, "job_batch": 4}).start(consumers=2)
    try:
        daemon.add("work", [{"n": n, "sleep": SLOW_JOB} for n in range(4)], lease=SHORT_LEASE)

        # Then each job runs once: the ended ones are acked and the waiting
        # ones' leases renewed as the batch goes, so the idle consumer gets none
        runs = daemon.wait_runs(4, timeout=60)
        daemon.wait_event("job_done", 4)
        assert sorted(int(body) for body, _ in runs) == [0, 1, 2, 3]
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 0, timeout=30, message="all acked")
        assert len(daemon.runs()) == 4
        assert not daemon.events("job_redelivered")
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_jobs_waiting_behind_a_run_that_could_outlast_their_lease_are_given_back(tmp_path):
    # Given a group of a slow queue (timeout 200 s) and a quick one (timeout
    # 2 s: a lease of 62 s), two consumers, and one batch holding a slow job
    # ahead of three quick ones (delayed, so that one reserve takes all four)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "slow": {"worker": python_worker(), "job_process_timeout": 200},
        "quick": {"worker": python_worker(), "job_process_timeout": 2},
    }, consumers=[{"queues": ["slow", "quick"], "min_processes": 2, "job_batch": 4}]).start(consumers=2)
    try:
        jobs = [("slow", {"n": "slow", "sleep": 2.0}), ("quick", "q1"), ("quick", "q2"), ("quick", "q3")]
        daemon.broker.add_many([dataclasses.replace(new_job_for(Job(body, queue), daemon._config.queue(queue)),
                                                    delay=1) for queue, body in jobs])  # due at one instant

        # Then the quick jobs are not held behind the slow one, whose run could
        # outlast their lease: given back, the other consumer runs them meanwhile
        runs = daemon.wait_runs(4, timeout=60)
        finished = {body: at for body, at in runs}
        assert sorted(finished) == ["q1", "q2", "q3", "slow"]
        assert all(finished[q] < finished["slow"] for q in ("q1", "q2", "q3")), runs
        assert not daemon.events("job_redelivered")
    finally:
        daemon.stop()
