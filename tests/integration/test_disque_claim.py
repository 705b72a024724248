"""Broker.claim on Disque (a majority of nodes, each atomic on its own):
contended by real processes, and refused when a majority is gone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.errors import BrokerUnavailable
from tests.support.disque_cluster import DisqueCluster, disque_binary

CONTENDERS = 4
# One contender: claim the key, print True or False.
CONTENDER = """
import sys
from disqontrol_client.brokers import open_broker
url, key = sys.argv[1:3]
print(open_broker(url).claim(key, 60))
"""


def test_one_contender_of_many_processes_wins(disque_cluster):
    disque_cluster.flush()
    # Given contenders started at once, each connected to a different node first
    procs = [
        subprocess.Popen([sys.executable, "-c", CONTENDER, disque_cluster.node_url(i % 3), "sched:e:m"],
                         stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        for i in range(CONTENDERS)
    ]
    results = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    # Then exactly one won, and the claim shows in no queue listing
    assert sorted(results) == ["False"] * (CONTENDERS - 1) + ["True"]
    with open_broker(disque_cluster.url) as broker:
        assert broker.queues() == []


@pytest.fixture
def own_cluster(tmp_path):
    cluster = DisqueCluster(disque_binary(), tmp_path).start()
    yield cluster
    cluster.stop()


def test_a_claim_survives_a_node_and_needs_a_majority(own_cluster):
    with open_broker(own_cluster.node_url(2)) as broker:
        # Given a claim taken on the whole cluster
        assert broker.claim("k", 60) is True
        # When one node of three dies, the claim still holds and new ones work
        own_cluster.kill(0)
        assert broker.claim("k", 60) is False
        assert broker.claim("k2", 60) is True
        # And with two of three gone, no claim can be decided
        own_cluster.kill(1)
        with pytest.raises(BrokerUnavailable, match="1 of 3"):
            broker.claim("k3", 60)
