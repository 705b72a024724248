"""A job runs once while its consumer runs it, whatever lease its producer
chose: a bare ``Producer(url)`` leases a job for the 600 s default, shorter
than the run a queue with a longer job_process_timeout allows (here the
lease is cut to LEASE s, the run lasts RUN s, the queue allows 30 s).
The daemon runs against a real broker; each worker records its start and
its end, so a second run started beside the first shows."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from disqontrold.jobs_in_hand import RUN_LEASE_GRACE
from tests.support.daemon import Daemon, running
from tests.support.disque_cluster import DisqueCluster, disque_binary
from tests.support.procs import wait_for

LEASE = 1.0  # s: the producer's lease
RUN = 4.0  # s a job runs: four leases
TIMEOUT = 30  # s: the queue's job_process_timeout, which the run stays under
CONSUMERS = 2

RUN_SH = f"""
body="${{2#--body=}}"
printf 'start %s %s\\n' "$body" "$(date +%s.%N)" >> "$DQ_OUT"
sleep {RUN}
printf 'end %s %s\\n' "$body" "$(date +%s.%N)" >> "$DQ_OUT"
"""
RUN_PY = f"""
import os, time

def run(job):
    with open(os.environ["DQ_OUT"], "a") as out:
        out.write(f"start {{job.body}} {{time.time():.4f}}\\n")
    time.sleep({RUN})
    with open(os.environ["DQ_OUT"], "a") as out:
        out.write(f"end {{job.body}} {{time.time():.4f}}\\n")
"""
WORKERS = {
    "command": lambda tmp: {"type": "command", "command": f"/bin/sh {tmp / 'run.sh'}"},
    "isolated": lambda tmp: {"type": "isolated_python_worker", "name": "leaseworkers:run"},
    "inline": lambda tmp: {"type": "inline_python_worker", "name": "leaseworkers:run"},
}


@pytest.fixture(params=["sqlite", "redis", "disque"])
def engine_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/jobs.db"
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        import redis  # noqa: PLC0415

        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.flushall()
        client.close()
        return server.url
    cluster = request.getfixturevalue("disque_cluster")
    cluster.flush()
    return cluster.url


def lease_daemon(tmp_path: Path, url: str, kind: str, consumers: int = CONSUMERS) -> Daemon:
    (tmp_path / "run.sh").write_text(RUN_SH)
    (tmp_path / "leaseworkers.py").write_text(RUN_PY)
    return Daemon(tmp_path, url, {"work": {"worker": WORKERS[kind](tmp_path), "job_process_timeout": TIMEOUT}},
                  consumer_defaults={"min_processes": consumers, "max_processes": consumers, "job_batch": 4})


def lines(daemon: Daemon, what: str) -> list[str]:
    return [line for line in daemon.out_path.read_text().splitlines() if line.startswith(f"{what} ")]


@pytest.mark.parametrize("kind", ["command", "isolated", "inline"])
def test_a_job_whose_lease_is_shorter_than_its_run_runs_once(tmp_path, engine_url, kind):
    if engine_url.startswith("disque"):
        pytest.skip("Disque's GETJOB does not say a job's RETRY, and WORKING postpones by it only: "
                    "docs/brokers.md (a window's own redelivery is guarded: the test below)")
    # Given two consumers of a queue allowing 30 s runs
    daemon = lease_daemon(tmp_path, engine_url, kind).start(consumers=CONSUMERS)
    try:
        # When a producer leases a job for 1 s, and the job runs 4 s
        daemon.add("work", [7], lease=LEASE)

        # Then it runs once: its lease lasts while it runs, on no consumer does it start again
        wait_for(lambda: lines(daemon, "end"), timeout=60, interval=0.05, message="the job's end")
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 0, timeout=30, message="the job acked")
        assert len(lines(daemon, "start")) == 1, daemon.out_path.read_text()
        assert daemon.broker.length("work") == 0
        assert not daemon.events("job_already_running")
    finally:
        daemon.stop()


@pytest.mark.parametrize("kind", ["command", "isolated"])
def test_a_window_job_redelivered_to_its_own_consumer_does_not_run_twice(tmp_path, kind):
    # Given one consumer with room in its window, on a Disque node of its own
    # (which redelivers a job after its RETRY however long it runs; the shared
    # cluster's other tests leave nodes whose requeues this one would not see)
    disque = DisqueCluster(disque_binary(), tmp_path / "disque", nodes=1).start()
    try:
        daemon = lease_daemon(tmp_path, disque.url, kind, consumers=1).start()
    except BaseException:
        disque.stop()
        raise
    try:
        # When a job leased for 1 s runs 4 s, and comes back to the same consumer
        daemon.add("work", [7], lease=LEASE)
        daemon.wait_event("job_already_running", timeout=30)

        # Then that second delivery does not start it again beside itself
        wait_for(lambda: lines(daemon, "end"), timeout=60, interval=0.05, message="the job's end")
        assert len(lines(daemon, "start")) == 1, daemon.out_path.read_text()
    finally:
        daemon.stop()
        disque.stop()


@pytest.mark.parametrize("kind", ["command", "inline"])
def test_a_job_whose_consumer_is_killed_comes_back_after_a_bounded_lease(tmp_path, kind):
    # Given one consumer running a job its producer leased for 1 s
    daemon = lease_daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", kind, consumers=1).start()
    try:
        [job_id] = daemon.add("work", [7], lease=LEASE)
        wait_for(lambda: lines(daemon, "start"), timeout=30, interval=0.05, message="the job's start")
        [consumer] = daemon.consumer_pids()

        # When the consumer is killed mid-job
        os.kill(consumer, signal.SIGKILL)
        killed_at = time.time()
        wait_for(lambda: not running(consumer), timeout=30, message="the consumer gone")

        # Then the job is still leased, but not for ever: a window job (command)
        # for its producer's lease (renewed while it ran, it comes back and runs
        # again), an inline one at most its queue's timeout + RUN_LEASE_GRACE
        # after its reserve (extended once, up front)
        shown = daemon.broker.show(job_id)
        assert shown is not None
        assert shown["due"] <= killed_at + TIMEOUT + RUN_LEASE_GRACE
        if kind == "command":
            wait_for(lambda: len(lines(daemon, "end")) == 1, timeout=60, interval=0.05,
                     message="the job back, run to its end")
        else:
            assert shown["state"] == "leased" and shown["due"] > killed_at + LEASE
    finally:
        daemon.stop()
