"""A producer whose Disque node dies mid-stream carries on through another
node, and no job whose add returned an id is lost."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from tests.support.disque_cluster import DisqueCluster, disque_binary
from tests.support.procs import stop_process, wait_for

JOBS = 2000
KILL_AFTER = 60  # adds acknowledged before node A dies
LEASE = 2  # s: a job queued on the dead node is queued again by a copy after it
# A producer process: ten single adds and a batch of 10 in turn; after each
# returns, the bodies it stored are written down (one per line).
PRODUCER = """
import sys
from disqontrol_client.brokers import NewJob, open_broker
url, out, jobs, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
broker = open_broker(url)
with open(out, "a") as f:
    for first in range(0, jobs, 10):
        bodies = [str(n) for n in range(first, first + 10)]
        if first % 20:
            broker.add_many([NewJob("produced", b.encode(), retry=lease) for b in bodies])
            f.write("".join(b + "\\n" for b in bodies)); f.flush()
        else:
            for b in bodies:
                broker.add("produced", b.encode(), retry=lease)
                f.write(b + "\\n"); f.flush()
"""


@pytest.fixture
def cluster(tmp_path):
    cluster = DisqueCluster(disque_binary(), tmp_path / "disque").start()
    yield cluster
    cluster.stop()


def test_producer_survives_the_death_of_its_node(cluster, tmp_path):
    # Given a producer process adding through node A
    out = tmp_path / "produced.out"
    out.touch()
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, cluster.node_url(0), str(out), str(JOBS), str(LEASE)],
        start_new_session=True, cwd=Path(__file__).parents[2], stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: len(out.read_text().split()) >= KILL_AFTER, timeout=60, message="adds started")
        # When node A dies mid-stream
        cluster.kill(0)
        assert len(out.read_text().split()) < JOBS, "the producer finished before the kill"
        # Then the producer finishes without an error
        assert producer.wait(timeout=90) == 0, producer.stderr.read()[-2000:]
        stored = set(out.read_text().split())
        assert stored == {str(n) for n in range(JOBS)}
        # And every job it was told was stored can be taken from another node
        seen: set[str] = set()
        with open_broker(cluster.node_url(1)) as consumer:
            def drained() -> bool:
                got = consumer.reserve(["produced"], count=50, timeout=1)
                seen.update(d.payload.decode() for d in got)
                consumer.ack([d.id for d in got])
                return seen >= stored
            wait_for(drained, timeout=90, interval=0, message="every stored job delivered")
    finally:
        stop_process(producer)
