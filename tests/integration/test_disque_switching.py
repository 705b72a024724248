"""Best-node switching, as disque-php did: a consumer moves its connection to
the node that produces most of the jobs it receives."""
from __future__ import annotations

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.brokers.disque import producer_prefix

SWITCH_AFTER = 10


def test_jobs_produced_on_node_b_move_the_consumer_to_node_b(disque_cluster):
    disque_cluster.flush()
    node_a, node_b = disque_cluster.addresses[:2]
    # Given a consumer connected to node A that decides after 10 jobs
    consumer = open_broker(disque_cluster.node_url(0), switch_after=SWITCH_AFTER)
    assert consumer.node == node_a
    # And jobs produced on node B only
    with open_broker(disque_cluster.node_url(1)) as producer:
        ids = producer.add_many([NewJob("switch", str(n).encode()) for n in range(2 * SWITCH_AFTER)])
    b_prefix = producer_prefix(ids[0])
    try:
        # When the consumer receives them (node A imports them from B)
        received = []
        while len(received) < SWITCH_AFTER:
            batch = consumer.reserve(["switch"], count=SWITCH_AFTER, timeout=5)
            assert batch, "no job reached the consumer on node A"
            received += batch
            consumer.ack([d.id for d in batch])
        # Then they were B's, and the consumer now talks to node B
        assert {producer_prefix(d.id) for d in received} == {b_prefix}
        assert consumer.node == node_b
        # And it keeps consuming there
        rest = consumer.reserve(["switch"], count=2 * SWITCH_AFTER, timeout=5)
        assert rest and {producer_prefix(d.id) for d in rest} == {b_prefix}
        consumer.ack([d.id for d in rest])
    finally:
        consumer.close()


def test_a_consumer_fed_by_its_own_node_stays(disque_cluster):
    disque_cluster.flush()
    consumer = open_broker(disque_cluster.node_url(0), switch_after=SWITCH_AFTER)
    try:
        consumer.add_many([NewJob("stay", b"1") for _ in range(SWITCH_AFTER)])
        got = consumer.reserve(["stay"], count=SWITCH_AFTER, timeout=5)
        consumer.ack([d.id for d in got])
        assert len(got) == SWITCH_AFTER
        assert consumer.node == disque_cluster.addresses[0]
    finally:
        consumer.close()
