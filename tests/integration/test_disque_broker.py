"""The Disque engine against a real 3-node cluster: the wire details that
the engine-neutral contract suite cannot see (RESP2 handshake, rounding to
seconds, job ids, PHP envelope both ways)."""
from __future__ import annotations

import json

import pytest

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.brokers.disque import DisqueBroker, producer_prefix
from disqontrol_client.errors import BrokerUnavailable
from disqontrol_client.job import Job, decode_payload, fresh_metadata
from tests.support.disque_cluster import DisqueCluster, disque_binary

PHP_ADDJOB_TIMEOUT_MS = 200  # what disque-php sends as ADDJOB's ms-timeout


@pytest.fixture
def cluster(disque_cluster):
    disque_cluster.flush()
    return disque_cluster


@pytest.fixture
def broker(cluster):
    with open_broker(cluster.url) as b:
        yield b


def test_no_node_answering_is_broker_unavailable(refused_port):
    with pytest.raises(BrokerUnavailable, match="no Disque node answers"):
        DisqueBroker([f"127.0.0.1:{refused_port}"])


def test_fractional_seconds_round_up_and_the_lease_is_whole_seconds(broker):
    # Given a job added with a fractional lease and delay
    job_id = broker.add("rounding", b"1", retry=0.2, delay=0.3)
    # Then Disque holds whole seconds, never shorter than asked
    shown = broker.show(job_id)
    assert (shown["retry"], shown["delay"]) == (1, 1)


def test_job_ids_carry_the_producing_node(broker, cluster):
    # Given a job added through the first node
    job_id = broker.add("ids", b"1")
    # Then its id embeds the first 8 chars of that node's id (best-node switching relies on it)
    hello = cluster.client(0).execute_command("HELLO")
    assert producer_prefix(job_id) == hello[1].decode()[:8]


def test_batch_add_returns_ids_in_order(broker):
    ids = broker.add_many([NewJob("batch", str(n).encode()) for n in range(5)])
    got = broker.reserve(["batch"], count=5, timeout=5)
    assert [d.id for d in got] == ids
    assert [d.payload for d in got] == [str(n).encode() for n in range(5)]


def test_php_envelope_added_raw_is_read_by_us(broker, cluster):
    # Given a job body in the PHP Disqontrol's envelope, added with a raw ADDJOB
    # the way disque-php sends it
    php_body = json.dumps({"body": {"email": "a@example.com"},
                           "metadata": {"retries": 2, "original-id": "D-1234abcd-x",
                                        "creation-time": 1700000000, "job-lifetime": 86400,
                                        "process-timeout": 30}})
    raw = cluster.client(0)
    raw.execute_command("ADDJOB", "php-in", php_body, PHP_ADDJOB_TIMEOUT_MS)
    raw.close()
    # When we reserve and decode it
    (delivery,) = broker.reserve(["php-in"], timeout=5)
    body, metadata = decode_payload(delivery.payload)
    # Then body and metadata are the PHP ones
    assert body == {"email": "a@example.com"}
    assert metadata["retries"] == 2 and metadata["original-id"] == "D-1234abcd-x"
    assert metadata["process-timeout"] == 30


def test_our_envelope_is_the_shape_php_reads(broker, cluster):
    # Given a job we add
    job = Job({"id": 5}, "php-out", metadata=fresh_metadata(job_lifetime=3600, process_timeout=60))
    broker.add(job.queue, job.encode())
    # When a PHP consumer takes it with a raw GETJOB
    raw = cluster.client(0)
    queue, job_id, body = raw.execute_command("GETJOB", "NOHANG", "FROM", "php-out")[0]
    raw.execute_command("ACKJOB", job_id)
    raw.close()
    # Then it is exactly {"body", "metadata"} with the PHP metadata keys
    stored = json.loads(body)
    assert set(stored) == {"body", "metadata"}
    assert stored["body"] == {"id": 5}
    assert set(stored["metadata"]) == {"retries", "original-id", "creation-time", "job-lifetime",
                                       "process-timeout"}


def test_foreign_job_is_taken_as_the_body(broker, cluster):
    raw = cluster.client(1)
    raw.execute_command("ADDJOB", "foreign", '"pic.png"', PHP_ADDJOB_TIMEOUT_MS)
    raw.close()
    (delivery,) = broker.reserve(["foreign"], timeout=5)
    body, metadata = decode_payload(delivery.payload)
    assert body == "pic.png" and metadata["retries"] == 0


def test_malformed_ids_are_unknown(broker):
    broker.ack(["not-a-disque-id"])
    broker.delete(["not-a-disque-id"])
    assert broker.show("not-a-disque-id") is None


def test_password_and_a_single_node_cluster(tmp_path, caplog):
    # Given a one-node Disque with a password (a developer's setup)
    single = DisqueCluster(disque_binary(), tmp_path, nodes=1, password="s3cret/pw").start()
    try:
        # When we add a job with our default replication of 2
        with open_broker(single.url) as broker:
            job_id = broker.add("single", b"1")
            # Then it is stored once, with the lowered replication logged
            assert broker.reserve(["single"], timeout=5)[0].id == job_id
            assert "disque_replication_lowered" in caplog.text
        # And a wrong password is refused with a message naming it
        with pytest.raises(BrokerUnavailable, match="(?i)password|auth"):
            open_broker(single.url.replace("s3cret", "wrong"))
    finally:
        single.stop()


def test_async_adds_are_delivered_too(disque_cluster):
    disque_cluster.flush()
    with open_broker(disque_cluster.url + "?async=1") as broker:
        assert broker.asynchronous
        ids = [broker.add("async", b"1")] + broker.add_many([NewJob("async", b"2")])
        got = broker.reserve(["async"], count=2, timeout=5)
        assert sorted(d.id for d in got) == sorted(ids)
