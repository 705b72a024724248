"""Node failure and best-node switching on a real 3-node Disque cluster of
this module's own (killing a node must not break the shared session one)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.brokers.disque import DisqueBroker
from tests.support.disque_cluster import DisqueCluster, disque_binary
from tests.support.procs import stop_process, wait_for

JOBS = 150
CONSUMERS = 2
LEASE = 2  # s: Disque RETRY; a job leased or queued on the dead node comes back after it
PROCESS_TIME = 0.01  # s per job, so the kill lands mid-run
KILL_AFTER = 30  # jobs processed before node A dies
SWITCH_AFTER = 10
# A consumer process: reserve a batch, "process" it (append the bodies to a
# file), ack it; forever, until the test stops it.
CONSUMER = """
import sys, time
from disqontrol_client.brokers import open_broker
url, queue, out = sys.argv[1:4]
broker = open_broker(url)
with open(out, "a") as f:
    while True:
        for d in broker.reserve([queue], count=5, timeout=1):
            time.sleep(%r)
            f.write(d.payload.decode() + "\\n"); f.flush()
            broker.ack([d.id])
""" % PROCESS_TIME


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = DisqueCluster(disque_binary(), tmp_path_factory.mktemp("disque-failover")).start()
    yield cluster
    cluster.stop()


def _processed(outputs: list[Path]) -> list[str]:
    return [line for out in outputs if out.exists() for line in out.read_text().splitlines()]


def test_consumers_survive_the_death_of_their_node(cluster, tmp_path, record_property):
    # Given jobs added through node A and consumer processes connected to node A
    url_a = cluster.node_url(0)
    with open_broker(url_a) as producer:
        producer.add_many([NewJob("failover", str(n).encode(), retry=LEASE) for n in range(JOBS)])
        assert producer.node == cluster.addresses[0]
    outputs = [tmp_path / f"consumer-{i}.out" for i in range(CONSUMERS)]
    procs = [
        subprocess.Popen([sys.executable, "-c", CONSUMER, url_a, "failover", str(out)],
                         start_new_session=True, cwd=Path(__file__).parents[2])
        for out in outputs
    ]
    try:
        wait_for(lambda: len(_processed(outputs)) >= KILL_AFTER, timeout=60, message="consumers started")
        # When node A dies mid-run
        cluster.kill(0)
        # Then every job is still processed, by consumers that did not crash
        wait_for(lambda: set(_processed(outputs)) >= {str(n) for n in range(JOBS)}, timeout=90,
                 interval=0.1, message="every job processed after node A died")
        assert all(p.poll() is None for p in procs), "a consumer crashed when its node died"
        # At least once, not exactly once: an ack sent to A just before it died
        # may never have reached the copies on B and C, which then requeue the job.
        record_property("duplicates", len(_processed(outputs)) - JOBS)
        # And a producer whose first node is dead adds through another one
        with open_broker(url_a) as producer:
            assert producer.node != cluster.addresses[0]
            assert producer.add("failover-after", b"x", retry=LEASE)
    finally:
        for proc in procs:
            stop_process(proc)


def test_no_node_at_all_is_broker_unavailable_not_a_hang(cluster):
    from disqontrol_client.errors import BrokerUnavailable  # noqa: PLC0415

    # Given a broker whose only configured node is the dead one (test above)
    dead = cluster.addresses[0]
    if 0 in cluster.alive():
        cluster.kill(0)
    with pytest.raises(BrokerUnavailable, match=dead):
        DisqueBroker([dead])
