"""The contract of ``Broker.add_claimed``, the scheduler's claim-and-add, on
every engine: the first caller of a claim gets its job added, every later
caller gets None and adds nothing; one call may mix won and taken claims.
Engines with ``atomic_claims`` (sqlite, redis) commit each claim with its job
(the crash test is tests/integration/test_scheduler_crash.py); disque claims,
then adds (the base class's default)."""
from __future__ import annotations

from typing import Iterator

import pytest

from disqontrol_client.brokers import Broker, NewJob, open_broker
from tests.support.procs import wait_for

TTL = 60.0  # s: claims that outlive every test here
SHORT_TTL = 1.0  # s: a claim the test waits out


@pytest.fixture
def broker(broker_url: str) -> Iterator[Broker]:
    b = open_broker(broker_url)
    yield b
    b.close()


def job(queue: str, n: int) -> NewJob:
    return NewJob(queue, f'{{"n": {n}}}'.encode())


def payloads(broker: Broker, queue: str) -> list[bytes]:
    return [d.payload for d in broker.peek(queue, 100)]


def test_the_first_caller_gets_ids_and_a_second_call_adds_nothing(broker: Broker) -> None:
    pairs = [("sched:a:1200", job("q", 1)), ("sched:b:1200", job("r", 2))]

    ids = broker.add_claimed(pairs, TTL)

    assert all(ids) and len(set(ids)) == 2
    assert broker.show(ids[0])["payload"] == b'{"n": 1}' and broker.show(ids[0])["queue"] == "q"
    assert broker.show(ids[1])["queue"] == "r"
    # When the same claims are asked for again (another scheduler, same minute)
    assert broker.add_claimed([("sched:a:1200", job("q", 3)), ("sched:b:1200", job("r", 4))], TTL) == [None, None]
    # Then nothing more was added
    assert payloads(broker, "q") == [b'{"n": 1}'] and payloads(broker, "r") == [b'{"n": 2}']


def test_one_call_mixes_won_and_taken_claims_in_order(broker: Broker) -> None:
    broker.add_claimed([("sched:a:1200", job("q", 1)), ("sched:a:1202", job("q", 2))], TTL)

    got = broker.add_claimed(
        [("sched:a:1200", job("q", 10)), ("sched:a:1201", job("q", 11)),
         ("sched:a:1202", job("q", 12)), ("sched:b:1200", job("r", 13))],
        TTL,
    )

    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[3] is not None
    assert broker.show(got[1])["payload"] == b'{"n": 11}'
    assert broker.show(got[3])["payload"] == b'{"n": 13}'
    assert sorted(payloads(broker, "q")) == sorted([b'{"n": 1}', b'{"n": 2}', b'{"n": 11}'])
    assert broker.add_claimed([], TTL) == []


def test_a_key_twice_in_one_call_is_won_once(broker: Broker) -> None:
    got = broker.add_claimed([("sched:a:1200", job("q", 1)), ("sched:a:1200", job("q", 2))], TTL)

    assert got[0] is not None and got[1] is None
    assert payloads(broker, "q") == [b'{"n": 1}']


def test_add_claimed_and_claim_share_one_namespace_and_expire(broker: Broker) -> None:
    # Given a claim taken with claim() (an older scheduler, or a claim store)
    assert broker.claim("sched:a:1200", SHORT_TTL) is True
    # Then add_claimed cannot win it, and claim() cannot win one add_claimed took
    assert broker.add_claimed([("sched:a:1200", job("q", 1))], SHORT_TTL) == [None]
    assert broker.add_claimed([("sched:a:1201", job("q", 2))], SHORT_TTL)[0] is not None
    assert broker.claim("sched:a:1201", SHORT_TTL) is False
    # And once the claim expires the next caller wins it
    won = wait_for(lambda: broker.add_claimed([("sched:a:1200", job("q", 3))], SHORT_TTL)[0],
                   timeout=10, interval=0.2, message="the claim to expire")
    assert broker.show(won)["payload"] == b'{"n": 3}'
