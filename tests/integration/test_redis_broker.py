"""The redis engine against a real redis-server: Disque's semantics, blocking
reserve, bounded notify lists, script-cache loss."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from disqontrol_client.brokers import NewJob
from disqontrol_client.brokers.redis import RedisBroker
from disqontrol_client.errors import BrokerError
from tests.support.procs import wait_for

SHORT = 0.3  # s: a delay / lease / ttl short enough to wait for in a test


@pytest.fixture
def raw(redis_server):
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def broker(redis_server, raw):
    with RedisBroker.from_url(redis_server.url) as b:
        yield b


def test_a_job_is_added_reserved_and_acked(broker):
    # Given a job
    job_id = broker.add("q", b"payload")
    assert broker.show(job_id)["state"] == "ready"
    # When it is reserved
    [delivery] = broker.reserve(["q"], timeout=0)
    # Then it is leased, then gone once acked (and acking twice is fine)
    assert (delivery.id, delivery.queue, delivery.payload) == (job_id, "q", b"payload")
    assert broker.show(job_id)["state"] == "leased"
    assert broker.stats(["q"])[0].in_flight == 1
    broker.ack([job_id])
    broker.ack([job_id, "R-unknown-q", "not-ours"])
    assert broker.show(job_id) is None
    assert broker.reserve(["q"], timeout=0) == []


def test_reserve_takes_queues_in_order_and_jobs_fifo(broker):
    # Given jobs in two queues
    low = broker.add_many([NewJob("low", b"l1"), NewJob("low", b"l2")])
    high = broker.add_many([NewJob("high", b"h1"), NewJob("high", b"h2")])
    # When three are reserved, high first
    got = broker.reserve(["high", "low"], count=3, timeout=0)
    # Then all of high comes before low, each in FIFO order
    assert [d.id for d in got] == high + low[:1]
    assert [d.queue for d in got] == ["high", "high", "low"]
    # And a batch ack over two queues removes them all
    broker.ack([d.id for d in got])
    assert broker.stats(["high", "low"])[1].ready == 1
    assert broker.queues() == ["low"]


def test_a_delayed_job_waits_then_is_delivered_by_a_blocked_reserve(broker):
    # Given a delayed job
    broker.add("q", b"later", delay=SHORT)
    # Then it is not ready now, but counted
    assert broker.reserve(["q"], timeout=0) == []
    assert broker.stats(["q"])[0].delayed == 1 and broker.length("q") == 1
    # When a reserve blocks for longer than the delay, it gets the job (no add wakes it)
    started = time.monotonic()
    [delivery] = broker.reserve(["q"], timeout=10)
    assert delivery.payload == b"later"
    assert time.monotonic() - started < 5


def test_an_unacked_job_is_delivered_again_with_its_counter(broker):
    job_id = broker.add("q", b"x", retry=SHORT)
    [first] = broker.reserve(["q"], timeout=0)
    assert first.additional_deliveries == 0
    # When the lease lapses
    [again] = broker.reserve(["q"], timeout=10)
    # Then the same job comes back, counted
    assert again.id == job_id and again.additional_deliveries == 1


def test_working_extends_the_lease(broker):
    # Given a job leased for a short time
    job_id = broker.add("q", b"x", retry=SHORT)
    broker.reserve(["q"], timeout=0)
    # When the consumer keeps saying it is working, for several leases' time
    until = time.monotonic() + 4 * SHORT
    while time.monotonic() < until:
        broker.working(job_id)
        # Then the job is never handed out again (the reserve paces the loop)
        assert broker.reserve(["q"], timeout=SHORT / 4) == []
    # And a job that is not leased cannot be extended
    idle = broker.add("q", b"not leased", delay=100)
    with pytest.raises(BrokerError, match=idle):
        broker.working(idle)


def test_nack_puts_the_job_back_now_with_nacks_counted(broker):
    job_id = broker.add("q", b"x")
    broker.add("q", b"behind")
    broker.reserve(["q"], timeout=0)
    broker.nack([job_id])
    [again] = broker.reserve(["q"], timeout=0)
    assert again.id == job_id and again.nacks == 1
    # And a nack of a job that is not leased changes nothing
    broker.nack([broker.peek("q", 1)[0].id])
    assert broker.peek("q", 1)[0].nacks == 0


def test_a_job_past_its_ttl_is_dropped(broker):
    # Given a short-lived job, leased once, and a long-lived one
    job_id = broker.add("q", b"x", ttl=SHORT, retry=SHORT / 3)
    broker.reserve(["q"], timeout=0)
    keeper = broker.add("q", b"keeps")
    expires_at = broker.show(job_id)["expires_at"]
    # When its lifetime has passed (same host: the server's clock is ours)
    wait_for(lambda: time.time() > expires_at + 0.01, timeout=10, message="the ttl to pass")
    # Then it is never delivered again, only the other one is
    assert [d.id for d in broker.reserve(["q"], count=5, timeout=0)] == [keeper]
    assert broker.show(job_id) is None


def test_replace_adds_the_copy_and_removes_the_old_atomically(broker, raw):
    old = broker.add("q", b"try 1")
    broker.reserve(["q"], timeout=0)
    new = broker.replace(old, NewJob("failed-jobs", b"dead", ttl=100))
    assert broker.show(old) is None
    assert broker.show(new)["queue"] == "failed-jobs"
    assert broker.stats(["q"])[0].in_flight == 0
    assert broker.peek("failed-jobs", 5)[0].payload == b"dead"


def test_delete_removes_a_job_in_any_state(broker):
    ready, delayed, leased = broker.add("q", b"r"), broker.add("q", b"d", delay=100), broker.add("p", b"l")
    broker.reserve(["p"], timeout=0)
    broker.delete([ready, delayed, leased])
    assert [broker.show(i) for i in (ready, delayed, leased)] == [None, None, None]
    assert [(s.ready, s.delayed, s.in_flight) for s in broker.stats(["q", "p"])] == [(0, 0, 0)] * 2


def test_claim_is_taken_once_until_it_expires(broker):
    assert broker.claim("cron:2026-11-28T04:00:job", SHORT) is True
    assert broker.claim("cron:2026-11-28T04:00:job", SHORT) is False
    wait_for(lambda: broker.claim("cron:2026-11-28T04:00:job", SHORT), timeout=10, message="claim expiry")


def test_a_blocked_reserve_wakes_within_milliseconds_of_an_add(broker, redis_server):
    # Given a consumer blocked in reserve
    result: list = []
    consumer = threading.Thread(target=lambda: result.append((broker.reserve(["q"], timeout=30), time.monotonic())))
    consumer.start()
    with RedisBroker.from_url(redis_server.url) as producer:
        wait_for(lambda: producer._client.client_list(_type="normal") and any(
            c["cmd"] == "blpop" for c in producer._client.client_list()), timeout=10, message="a BLPOP")
        # When a job is added from another connection
        added = time.monotonic()
        producer.add("q", b"now")
    consumer.join(30)
    [(jobs, woke)] = result
    # Then it is delivered long before the reserve's timeout (1 s on a loaded machine)
    assert [d.payload for d in jobs] == [b"now"]
    assert woke - added < 1.0


def test_notify_lists_stay_bounded(broker, raw):
    broker.add_many([NewJob("q", b"x") for _ in range(200)])
    for _ in range(50):
        broker.add("q", b"y")
    assert raw.llen("dq:{q}:notify") <= 16
    assert broker.length("q") == 250


def test_batches_survive_the_loss_of_the_script_cache(broker, raw):
    ids = broker.add_many([NewJob("a", b"1"), NewJob("b", b"2")])
    raw.script_flush()
    more = broker.add_many([NewJob("a", b"3"), NewJob("b", b"4")])
    raw.script_flush()
    got = broker.reserve(["a", "b"], count=10, timeout=0)
    raw.script_flush()
    broker.ack([d.id for d in got])
    assert sorted(d.id for d in got) == sorted(ids + more)
    assert broker.queues() == []


def test_the_prefix_separates_two_applications(redis_server, raw):
    with RedisBroker.from_url(redis_server.url + "?prefix=one") as one, \
            RedisBroker.from_url(redis_server.url + "?prefix=two") as two:
        one.add("q", b"1")
        assert two.reserve(["q"], timeout=0) == []
        assert two.queues() == [] and one.queues() == ["q"]


def test_one_batch_add_wakes_as_many_blocked_consumers_as_it_has_jobs(broker, redis_server):
    # Given two consumers blocked in reserve, one job each
    results: list = []
    consumers = [RedisBroker.from_url(redis_server.url) for _ in range(2)]
    threads = [threading.Thread(target=lambda c=c: results.append(c.reserve(["q"], timeout=30))) for c in consumers]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(c["cmd"] == "blpop" for c in broker._client.client_list()) == 2, timeout=10,
             message="two BLPOPs")
    # When one add_many brings two jobs
    started = time.monotonic()
    broker.add_many([NewJob("q", b"1"), NewJob("q", b"2")])
    for thread in threads:
        thread.join(30)
    # Then both woke long before their timeout, each with one job
    assert time.monotonic() - started < 10
    assert sorted(d.payload for got in results for d in got) == [b"1", b"2"]
    for consumer in consumers:
        consumer.close()


IDLE_QUEUES = 1000
IDLE_RESERVES = 3


def test_an_idle_reserve_of_many_queues_runs_one_script_of_one_call_per_empty_queue(broker, raw):
    # Given a consumer of 1,000 empty queues (per-tenant queues), its key list built
    queues = [f"tenant-{n:04d}" for n in range(IDLE_QUEUES)]
    assert broker.reserve(queues, count=10, timeout=0) == []
    raw.config_resetstat()

    # When it blocks in reserve a few times and nothing comes
    for _ in range(IDLE_RESERVES):
        assert broker.reserve(queues, count=10, timeout=SHORT) == []

    # Then each reserve ran the script once (not again after its wait), and
    # the script looked at each empty queue once (EXISTS), not five times
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in raw.info("commandstats").items()}
    assert calls.get("evalsha") == IDLE_RESERVES, calls
    assert calls.get("blpop") == IDLE_RESERVES, calls
    assert calls.get("exists") == IDLE_RESERVES * IDLE_QUEUES, calls
    assert not {"zrange", "zrangebyscore", "lpop"} & set(calls), calls


def test_the_backlog_of_many_queues_is_one_script_of_one_call_per_empty_queue(broker, raw):
    # Given ready jobs in two of 1,000 queues (the autoscaler asks for them all each second)
    queues = [f"tenant-{n:04d}" for n in range(IDLE_QUEUES)]
    broker.add_many([NewJob(queues[5], b"x") for _ in range(3)] + [NewJob(queues[-1], b"y")])
    raw.config_resetstat()

    # When the backlog is asked, capped at 2
    backlog = broker.backlog(queues, cap=2)

    # Then every queue has its capped count, from one script that looked once at each empty queue
    assert len(backlog) == IDLE_QUEUES and (backlog[queues[5]], backlog[queues[-1]], backlog[queues[0]]) == (2, 1, 0)
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in raw.info("commandstats").items()}
    assert calls.get("evalsha") == 1, calls
    assert calls.get("exists") == IDLE_QUEUES, calls


OLD_CLIENT_DELAY = 2  # s


def test_a_delayed_job_of_an_older_client_counts_its_latency_from_its_due_time(broker, raw):
    # Given a delayed job added by an older client package (an application not
    # upgraded yet): its hash has no ready_at, which the queue latency reads
    job_id = broker.add("q", b"x", delay=OLD_CLIENT_DELAY)
    assert raw.hdel(f"dq:{{q}}:job:{job_id}", "ready_at") == 1
    # When it has fallen due and was moved to the ready jobs (stats does, as a reserve)
    wait_for(lambda: broker.stats(["q"])[0].ready == 1, timeout=10 + OLD_CLIENT_DELAY, message="the job due")
    # Then its latency counts from its due time, not from its add: it read its
    # delay more (a job retried after 4**6 s showed a queue an hour behind)
    assert broker.latency(["q"])["q"] < OLD_CLIENT_DELAY - 1
