"""The real daemon on a Disque cluster whose node it is connected to dies
mid-run: its consumers move to another node, do not crash, and every job
still runs (at least once)."""
from __future__ import annotations

import pytest

from tests.support.daemon import Daemon, python_worker
from tests.support.disque_cluster import DisqueCluster, disque_binary
from tests.support.procs import wait_for

JOBS = 300
LEASE = 2  # s: jobs leased or queued on the dead node come back after it
KILL_AFTER = 50  # runs completed before node A dies
SLOW = 0.01  # s per job, so the kill lands mid-run


@pytest.fixture
def cluster(tmp_path):
    cluster = DisqueCluster(disque_binary(), tmp_path / "disque").start()
    yield cluster
    cluster.stop()


@pytest.mark.timeout(240)
def test_daemon_consumers_survive_the_death_of_their_node(cluster, tmp_path, record_property):
    # Given a daemon whose consumers are connected to node A, and jobs added there
    daemon = Daemon(tmp_path, cluster.node_url(0), {"work": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": 2, "max_processes": 2, "job_batch": 5})
    daemon.start(consumers=2)
    try:
        consumers = sorted(daemon.consumer_pids())
        daemon.add("work", [{"n": n, "sleep": SLOW} for n in range(JOBS)], lease=LEASE)
        daemon.wait_runs(KILL_AFTER, timeout=120)
        # When node A is killed
        cluster.kill(0)
        # Then every job runs, by the same consumer processes, which logged the move
        everything = {str(n) for n in range(JOBS)}
        wait_for(lambda: {body for body, _ in daemon.runs()} >= everything, timeout=150, interval=0.1,
                 message="every job run after node A died")
        assert sorted(daemon.consumer_pids()) == consumers
        assert daemon.events("disque_node_lost")
        # At least once: a run whose ack died with node A runs again
        record_property("duplicates", len(daemon.runs()) - JOBS)
    finally:
        daemon.stop()
