"""The broker contract's semantics as Disque gives them (leases, nacks,
queue order, states), checked on the real cluster until the shared contract
suite covers every engine."""
from __future__ import annotations

import threading
import time

import pytest

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.errors import BrokerError
from tests.support.procs import wait_for

LEASE = 1  # s: Disque's smallest RETRY
WAKE_LIMIT = 1.0  # s: a blocked reserve must return well before its timeout


@pytest.fixture
def broker(disque_cluster):
    disque_cluster.flush()
    with open_broker(disque_cluster.url) as b:
        yield b


def test_an_unacked_job_comes_back_after_its_lease(broker):
    job_id = broker.add("lease", b"1", retry=LEASE)
    (first,) = broker.reserve(["lease"], timeout=5)
    assert broker.show(job_id)["state"] == "leased"
    # When the lease runs out without an ack, the job is delivered again
    again = wait_for(lambda: broker.reserve(["lease"], timeout=1), timeout=30, message="redelivery")
    assert again[0].id == job_id and again[0].additional_deliveries >= 1


def test_nack_puts_the_job_back_now_with_nacks_plus_one(broker):
    job_id = broker.add("nack", b"1")
    broker.reserve(["nack"], timeout=5)
    broker.nack([job_id])
    (again,) = broker.reserve(["nack"], timeout=5)
    assert (again.id, again.nacks) == (job_id, 1)


def test_queues_are_taken_in_the_order_given(broker):
    broker.add_many([NewJob("second", b"s")] + [NewJob("first", b"f") for _ in range(2)])
    got = broker.reserve(["first", "second"], count=3, timeout=5)
    assert [d.queue for d in got][:2] == ["first", "first"]


def test_zero_timeout_does_not_block(broker):
    start = time.monotonic()
    assert broker.reserve(["empty"], timeout=0) == []
    assert time.monotonic() - start < WAKE_LIMIT


def test_a_blocked_reserve_wakes_on_an_add(broker, disque_cluster):
    got = []
    waiter = threading.Thread(target=lambda: got.extend(broker.reserve(["wake"], timeout=30)))
    waiter.start()
    time.sleep(0.2)  # let GETJOB block first; the thing measured is the wake-up
    start = time.monotonic()
    with open_broker(disque_cluster.url) as producer:
        producer.add("wake", b"1")
    waiter.join(30)
    assert got and time.monotonic() - start < WAKE_LIMIT


def test_states_lengths_and_delete(broker):
    ready = broker.add("states", b"r")
    delayed = broker.add("states", b"d", delay=60)
    assert broker.show(ready)["state"] == "ready" and broker.show(delayed)["state"] == "delayed"
    assert broker.length("states") == 2
    assert [d.id for d in broker.peek("states", 5)] == [ready, delayed]
    assert broker.queues() == ["states"]
    broker.reserve(["states"], timeout=5)
    (stats,) = broker.stats(["states"])
    assert (stats.ready, stats.delayed, stats.in_flight) == (0, 1, 1)
    broker.delete([ready, delayed])
    assert broker.show(delayed) is None and broker.length("states") == 0


def test_working_extends_the_lease(broker):
    job_id = broker.add("working", b"1", retry=LEASE)
    broker.reserve(["working"], timeout=5)
    broker.working(job_id)
    assert broker.show(job_id)["state"] == "leased"
    broker.ack([job_id])
    broker.ack([job_id])  # idempotent
    assert broker.show(job_id) is None


def test_a_job_queued_on_another_node_is_ready_here_too(disque_cluster, broker):
    # Given a job queued on node B, and a broker connected to node A
    with open_broker(disque_cluster.node_url(1)) as producer:
        job_id = producer.add("elsewhere", b"1")
    assert broker.node == disque_cluster.addresses[0]
    # Then A's view of the cluster calls it ready, not leased
    assert broker.show(job_id)["state"] == "ready"
    (stats,) = broker.stats(["elsewhere"])
    assert (stats.ready, stats.delayed, stats.in_flight) == (1, 0, 0)
    assert [d.id for d in broker.peek("elsewhere", 5)] == [job_id]


def test_working_reaches_the_node_that_holds_the_job(disque_cluster):
    disque_cluster.flush()
    # Given a job held by node B only, leased by a consumer on B
    with open_broker(disque_cluster.node_url(1), replicate=1) as on_b:
        job_id = on_b.add("held-by-b", b"1", retry=60)
        assert on_b.reserve(["held-by-b"], timeout=5)[0].id == job_id
        # When a connection to node C (which has no copy) says WORKING
        with open_broker(disque_cluster.node_url(2)) as on_c:
            on_c.working(job_id)
            # Then B extended the lease; and an unknown job is an error naming it
            with pytest.raises(BrokerError, match="no Disque node holds"):
                on_c.working(job_id[:-4] + "ffff")
        on_b.ack([job_id])
