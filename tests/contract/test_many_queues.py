"""A consumer of many queues (per-tenant queues run to thousands in one
group): the contract holds as for one queue. On sqlite, past a few queues a
reserve first asks which queues have a job due and, when none has,
remembers that until something changes (sqlite_due.py): these tests check
that every way a job becomes due is still seen, among many queues."""
from __future__ import annotations

import statistics
import time
from typing import Iterator

import pytest

from disqontrol_client.brokers import Broker, NewJob, open_broker
from tests.contract.test_broker_contract import SLACK, WAKE_BOUND, wake_ups

MANY = 50  # queues: well past the few a sqlite lease tries one by one
QUEUES = [f"tenant-{n:02d}" for n in range(MANY)]
LAST = QUEUES[-1]


@pytest.fixture
def broker(broker_url: str) -> Iterator[Broker]:
    b = open_broker(broker_url)
    yield b
    b.close()


def test_many_queues_are_taken_in_their_order_each_in_fifo(broker: Broker) -> None:
    # Given jobs in three of many queues, added out of the queues' order
    late = broker.add_many([NewJob(QUEUES[40], f"late-{i}".encode()) for i in range(2)])
    first = broker.add_many([NewJob(QUEUES[3], f"first-{i}".encode()) for i in range(2)])
    last = broker.add(LAST, b"last")

    # When a consumer of all of them reserves one job at a time
    order = [broker.reserve(QUEUES, timeout=5)[0].id for _ in range(5)]

    # Then the earlier queue's jobs come first, each queue's in the order added
    assert order == [*first, *late, last]
    assert broker.reserve(QUEUES, timeout=0) == []


def test_a_batch_spans_many_queues_in_their_order(broker: Broker) -> None:
    ids = {queue: broker.add(queue, queue.encode()) for queue in reversed(QUEUES[::7])}

    got = broker.reserve(QUEUES, count=MANY, timeout=5)

    assert [d.id for d in got] == [ids[queue] for queue in QUEUES[::7]]


def test_a_delayed_job_of_the_last_queue_wakes_a_blocked_reserve(broker: Broker) -> None:
    # Given nothing due in any queue, and a job delayed 1 s in the last one
    assert broker.reserve(QUEUES, timeout=0) == []
    added = time.monotonic()
    job_id = broker.add(LAST, b"later", delay=1)
    assert broker.reserve(QUEUES, timeout=0) == [], "a delayed job was handed out early"

    # When a consumer of every queue blocks
    got = broker.reserve(QUEUES, timeout=5)

    # Then it gets the job once due, not later
    waited = time.monotonic() - added
    assert [d.id for d in got] == [job_id]
    assert 0.9 <= waited < 1 + 1 + SLACK, f"delay=1 job came after {waited:.2f}s"


def test_a_lapsed_lease_in_one_of_many_queues_is_redelivered(broker: Broker) -> None:
    job_id = broker.add(QUEUES[25], b"x", retry=1)
    assert [d.id for d in broker.reserve(QUEUES, timeout=5)] == [job_id]
    assert broker.reserve(QUEUES, timeout=0) == []  # leased: nothing due now

    again = broker.reserve(QUEUES, timeout=10)  # not acked: back after ~1 s

    assert [(d.id, d.additional_deliveries) for d in again] == [(job_id, 1)]


def test_a_reserve_that_found_nothing_sees_the_next_add_and_nack_of_any_connection(
    broker: Broker, broker_url: str
) -> None:
    # Given a consumer of many queues that just found nothing due
    assert broker.reserve(QUEUES, timeout=0) == []

    # Then an add through its own connection is seen at once
    own = broker.add(QUEUES[10], b"own")
    got = broker.reserve(QUEUES, timeout=0)
    assert [d.id for d in got] == [own]
    assert broker.reserve(QUEUES, timeout=0) == []

    # And so is a nack through its own connection
    broker.nack([own])
    assert [d.id for d in broker.reserve(QUEUES, timeout=0)] == [own]
    assert broker.reserve(QUEUES, timeout=0) == []

    # And an add through another connection
    with open_broker(broker_url) as other:
        theirs = other.add(LAST, b"theirs")
    assert [d.id for d in broker.reserve(QUEUES, timeout=5)] == [theirs]


def test_a_reserve_blocked_on_many_queues_wakes_on_an_add_from_another_process(
    broker: Broker, broker_url: str
) -> None:
    latencies = [latency for latency, _ in wake_ups(broker, broker_url, queues=[*QUEUES, "wake"])]

    median = statistics.median(latencies)
    assert median < WAKE_BOUND, f"median wake latency {median * 1000:.0f} ms, all: {latencies}"
