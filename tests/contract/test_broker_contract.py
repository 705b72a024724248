"""The broker contract: every engine (sqlite, redis, disque) must pass it.

Times are whole seconds (Disque's unit) and every wait is a deadline, so the
suite holds on a loaded machine. Cross-process behaviour runs real processes
(tests/contract/broker_agent.py).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from disqontrol_client.brokers import Broker, Delivery, NewJob, open_broker
from tests.support.procs import stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "tests.contract.broker_agent"]
SLACK = 1.5  # s: scheduling noise allowed on a loaded machine
WAKE_SAMPLES = 7
WAKE_BOUND = 0.2  # s: the target is 50 ms; asserted loosely on a busy machine
PRODUCERS, JOBS_PER_PRODUCER, CONSUMERS = 4, 2000, 2
ORDERED_PRODUCERS, ORDERED_JOBS = 2, 300


@pytest.fixture
def broker(broker_url: str) -> Iterator[Broker]:
    b = open_broker(broker_url)
    yield b
    b.close()


def agent(*args: str, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen([*AGENT, *args], cwd=REPO, start_new_session=True, **kwargs)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def reserve_one(broker: Broker, queue: str, timeout: float = 10.0) -> Delivery:
    got = broker.reserve([queue], timeout=timeout)
    assert len(got) == 1, f"expected one job of {queue!r} within {timeout}s, got {got!r}"
    return got[0]


def test_add_reserve_ack_round_trip(broker: Broker) -> None:
    job_id = broker.add("q", b'{"body":1}')
    assert broker.length("q") == 1

    got = reserve_one(broker, "q")
    assert (got.id, got.queue, got.payload) == (job_id, "q", b'{"body":1}')
    assert (got.nacks, got.additional_deliveries) == (0, 0)
    assert broker.length("q") == 0  # leased jobs are not counted

    broker.ack([got.id])
    assert broker.show(job_id) is None
    assert broker.reserve(["q"], timeout=0) == []


def test_delay_is_honoured(broker: Broker) -> None:
    added = time.monotonic()
    job_id = broker.add("q", b"later", delay=1)

    assert broker.reserve(["q"], timeout=0) == [], "a delayed job was handed out early"
    assert broker.show(job_id)["state"] == "delayed"
    assert broker.length("q") == 1

    got = reserve_one(broker, "q", timeout=5)
    waited = time.monotonic() - added
    assert got.id == job_id
    assert 0.9 <= waited < 1 + 1 + SLACK, f"delay=1 job came after {waited:.2f}s"


def test_unacked_lease_expires_and_is_redelivered(broker: Broker) -> None:
    job_id = broker.add("q", b"x", retry=1)
    first = reserve_one(broker, "q")
    assert first.additional_deliveries == 0

    again = reserve_one(broker, "q", timeout=5)  # not acked: back after ~1 s

    assert again.id == job_id
    assert again.additional_deliveries == 1
    assert again.nacks == 0


def test_nack_returns_the_job_at_once(broker: Broker) -> None:
    job_id = broker.add("q", b"x")
    broker.nack([reserve_one(broker, "q").id])

    got = reserve_one(broker, "q", timeout=2)

    assert (got.id, got.nacks, got.additional_deliveries) == (job_id, 1, 0)


def test_working_extends_the_lease(broker: Broker) -> None:
    job_id = broker.add("q", b"x", retry=3)
    reserve_one(broker, "q")
    assert broker.reserve(["q"], timeout=1.5) == []  # leased: ~1.5 s of 3 pass

    broker.working(job_id)  # now leased until ~4.5 s

    # without working() the lease would end at 3 s, inside this wait
    assert broker.reserve(["q"], timeout=2) == [], "working() did not extend the lease"
    again = reserve_one(broker, "q", timeout=10)  # Disque may requeue it on another node: NEEDJOBS federation takes a moment
    assert (again.id, again.additional_deliveries) == (job_id, 1)


def test_a_delivery_says_its_lease_and_extend_lengthens_it_never_shortens_it(broker: Broker) -> None:
    if broker.schemes == ("disque",):
        pytest.skip("Disque's GETJOB does not say a job's RETRY (lease 0: unknown)")
    short, long_ = broker.add_many([NewJob("q", b"s", retry=1), NewJob("q", b"l", retry=60)])
    got = {d.id: d for d in broker.reserve(["q"], count=2, timeout=2)}
    assert (got[short].lease, got[long_].lease) == (1, 60)

    broker.extend([short, long_, "unknown-id"], 3)  # now leased until ~3 s; the long one keeps its 60 s

    # without extend() the short lease would end at 1 s, inside this wait
    assert broker.reserve(["q"], timeout=2) == [], "extend() did not lengthen the lease"
    again = reserve_one(broker, "q", timeout=10)
    assert (again.id, again.additional_deliveries) == (short, 1)
    assert broker.show(long_)["state"] == "leased"


def test_ttl_drops_the_job(broker: Broker) -> None:
    kept = broker.add("q", b"kept")
    job_id = broker.add("q", b"short-lived", retry=1, ttl=2)

    wait_for(lambda: broker.show(job_id) is None, timeout=10, message="the ttl=2 job to vanish")

    assert broker.length("q") == 1
    assert [d.id for d in broker.reserve(["q"], count=5, timeout=0)] == [kept]


def test_reserve_takes_queues_in_the_given_order(broker: Broker) -> None:
    b1 = broker.add("b", b"b1")
    a1 = broker.add("a", b"a1")
    b2 = broker.add("b", b"b2")
    a2 = broker.add("a", b"a2")

    order = []
    for _ in range(4):
        got = broker.reserve(["a", "b"], timeout=2)
        assert len(got) == 1
        order.append(got[0].id)

    assert order == [a1, a2, b1, b2]


def test_batch_reserve_and_batch_ack(broker: Broker) -> None:
    ids = broker.add_many([NewJob("q", f"j{i}".encode()) for i in range(25)])
    assert len(set(ids)) == 25
    assert broker.length("q") == 25

    batches = [broker.reserve(["q"], count=10, timeout=2) for _ in range(3)]

    assert [len(b) for b in batches] == [10, 10, 5]
    got = [d.id for b in batches for d in b]
    assert sorted(got) == sorted(ids)
    broker.ack(got)
    assert broker.length("q") == 0
    assert broker.stats(["q"])[0].in_flight == 0


def test_reserve_acks_the_given_ids_then_leases_the_next(broker: Broker) -> None:
    ids = broker.add_many([NewJob("q", f"j{i}".encode()) for i in range(6)])
    first = broker.reserve(["q"], count=3, timeout=2)
    assert [d.id for d in first] == ids[:3]

    second = broker.reserve(["q"], count=3, timeout=2, ack=[d.id for d in first])

    assert [d.id for d in second] == ids[3:]
    assert all(broker.show(i) is None for i in ids[:3]), "the acked jobs are still there"
    assert broker.stats(["q"])[0].in_flight == 3
    assert broker.reserve(["q"], timeout=0, ack=[d.id for d in second]) == []
    assert all(broker.show(i) is None for i in ids)
    assert broker.stats(["q"])[0].in_flight == 0


def test_reserve_acks_ids_of_other_queues_and_ignores_unknown_ones(broker: Broker) -> None:
    elsewhere = broker.add("other", b"o")
    here = broker.add("q", b"x")
    leased = [reserve_one(broker, "other").id, reserve_one(broker, "q").id]
    unknown = ["nope", "S-987654321", "R-00ff00ff00ff00ff-q", "R-00ff00ff00ff00ff-gone",
               "D-dead0000-0000000000000000000000000-0001"]
    nxt = broker.add("q", b"next")

    got = broker.reserve(["q"], timeout=5, ack=[*unknown, *leased])

    assert [d.id for d in got] == [nxt]
    assert broker.show(elsewhere) is None and broker.show(here) is None


def test_reserve_commits_its_acks_before_blocking(broker: Broker, broker_url: str) -> None:
    job_id = broker.add("q", b"x")
    done = reserve_one(broker, "q").id
    block = 4.0  # s: long enough to look from another connection meanwhile
    result: list = []
    reserver = threading.Thread(
        target=lambda: result.append(broker.reserve(["q"], timeout=block, ack=[done])), daemon=True
    )
    started = time.monotonic()
    reserver.start()
    with open_broker(broker_url) as other:
        wait_for(lambda: other.show(job_id) is None, timeout=block / 2,
                 message="the ack seen by another connection while reserve blocks")
    assert reserver.is_alive(), "reserve returned before its timeout with nothing ready"
    reserver.join(timeout=block + 10 * SLACK)
    assert result == [[]]
    assert time.monotonic() - started >= block - SLACK


def test_batch_spans_queues_in_order(broker: Broker) -> None:
    a = broker.add_many([NewJob("a", b"a") for _ in range(3)])
    b = broker.add_many([NewJob("b", b"b") for _ in range(3)])

    got = broker.reserve(["a", "b"], count=5, timeout=2)

    assert [d.queue for d in got] == ["a"] * 3 + ["b"] * 2
    assert {d.id for d in got} == set(a) | set(b[:2])  # FIFO within each queue


def produce_and_consume(url: str, tmp_path: Path, producers: int, jobs: int,
                        timeout: float = 90) -> tuple[list[list[str]], list[list[str]]]:
    """``producers`` processes add ``jobs`` each while CONSUMERS processes
    (already waiting) drain the queue: the ``[id, payload]`` pairs added and
    those taken, and fails if a consumer got no job at all."""
    consumers = [agent("consume", url, "load", "10", str(tmp_path / f"c{i}.txt"),
                       stdout=subprocess.PIPE, text=True) for i in range(CONSUMERS)]
    try:
        for c in consumers:
            assert c.stdout.readline().strip() == "ready"
        adders = [agent("produce", url, "load", str(jobs), f"p{i}", str(tmp_path / f"p{i}.txt"))
                  for i in range(producers)]
        for p in adders:
            assert p.wait(timeout) == 0
        with open_broker(url) as b:
            wait_for(lambda: b.length("load") == 0 and b.stats(["load"])[0].in_flight == 0,
                     timeout=timeout, interval=0.1, message="the consumers to drain the queue")
    finally:
        for c in consumers:
            stop_process(c)
            c.stdout.close()
    added = [line.split() for i in range(producers) for line in lines(tmp_path / f"p{i}.txt")]
    taken = [line.split() for i in range(CONSUMERS) for line in lines(tmp_path / f"c{i}.txt")]
    assert all(lines(tmp_path / f"c{i}.txt") for i in range(CONSUMERS)), "one consumer got no job at all"
    return added, taken


def test_concurrent_producers_and_consumers(broker_url: str, tmp_path: Path) -> None:
    # Given consumers already waiting in their own processes, when four
    # producer processes add 2,000 jobs each
    added, taken = produce_and_consume(broker_url, tmp_path, PRODUCERS, JOBS_PER_PRODUCER)

    # Then every job was delivered exactly once
    assert len(added) == PRODUCERS * JOBS_PER_PRODUCER
    assert len({i for i, _ in added}) == len(added), "two jobs got the same id"
    assert sorted(taken) == sorted(added)


def test_each_producer_order_is_kept(broker: Broker, broker_url: str, tmp_path: Path) -> None:
    """Per-producer FIFO, what every engine keeps (sqlite-sharded keeps no
    more: two producers' jobs may interleave in any way)."""
    # Given two producer processes that added their jobs at the same time
    producers = [agent("produce", broker_url, "fifo", str(ORDERED_JOBS), f"p{i}", str(tmp_path / f"p{i}.txt"))
                 for i in range(ORDERED_PRODUCERS)]
    for p in producers:
        assert p.wait(90) == 0

    # When one consumer takes them all in batches
    taken: list[bytes] = []
    while len(taken) < ORDERED_PRODUCERS * ORDERED_JOBS:
        got = broker.reserve(["fifo"], count=10, timeout=10)
        assert got, f"{len(taken)} jobs taken, then none"
        taken += [d.payload for d in got]
        broker.ack([d.id for d in got])

    # Then each producer's jobs came in the order it added them
    for i in range(ORDERED_PRODUCERS):
        prefix = f"p{i}-".encode()
        order = [int(p[len(prefix):]) for p in taken if p.startswith(prefix)]
        assert order == list(range(ORDERED_JOBS)), f"producer {i}'s jobs out of order"


def test_unicode_and_large_bodies_round_trip(broker: Broker) -> None:
    small = '{"body":"Žluťoučký kůň ☃ 日本語 🚀"}'.encode()
    large = ("ř" * 100 + "x" * 823 + "\n").encode() * 1024  # 1 MiB of UTF-8 text
    assert len(large) >= 1024 * 1024
    ids = [broker.add("q", small), broker.add("q", large)]

    got = broker.reserve(["q"], count=2, timeout=2)

    assert {d.id: d.payload for d in got} == dict(zip(ids, [small, large]))


def test_ack_and_delete_are_idempotent(broker: Broker) -> None:
    job_id = broker.add("q", b"x")
    reserve_one(broker, "q")

    broker.ack([job_id])
    broker.ack([job_id])
    broker.ack([])
    broker.delete([job_id])

    assert broker.show(job_id) is None
    assert broker.length("q") == 0


def test_replace_adds_the_new_job_and_acks_the_old(broker: Broker) -> None:
    old_id = broker.add("q", b"first try")
    old = reserve_one(broker, "q")

    new_id = broker.replace(old.id, NewJob("failed-jobs", b"second try", delay=0))

    assert new_id != old_id
    assert broker.show(old_id) is None
    assert broker.length("q") == 0
    got = reserve_one(broker, "failed-jobs")
    assert (got.id, got.payload) == (new_id, b"second try")


def test_claim_is_taken_once_until_it_expires(broker: Broker) -> None:
    assert broker.claim("cron:2026-11-28T04:00", 1) is True
    assert broker.claim("cron:2026-11-28T04:00", 1) is False
    assert broker.claim("cron:2026-11-28T04:01", 1) is True

    wait_for(lambda: broker.claim("cron:2026-11-28T04:00", 1), timeout=10, interval=0.2,
             message="the claim to expire")


def test_peek_show_delete_length_stats_queues(broker: Broker) -> None:
    ids = [broker.add("q", f"j{i}".encode()) for i in range(3)]
    later = broker.add("q", b"later", delay=60)
    broker.add("other", b"o")

    assert broker.length("q") == 4
    assert [d.id for d in broker.peek("q", 10)] == ids + [later]
    assert [d.payload for d in broker.peek("q", 2)] == [b"j0", b"j1"]
    assert set(broker.queues()) >= {"q", "other"}
    stats = broker.stats(["q"])[0]
    assert (stats.queue, stats.ready, stats.delayed, stats.in_flight) == ("q", 3, 1, 0)

    leased = reserve_one(broker, "q")
    assert leased.id == ids[0]
    shown = broker.show(leased.id)
    assert shown["state"] == "leased" and shown["queue"] == "q" and shown["payload"] == b"j0"
    assert (shown["nacks"], shown["additional_deliveries"]) == (0, 0)
    assert broker.show(later)["state"] == "delayed"
    assert broker.show(ids[1])["state"] == "ready"
    stats = broker.stats(["q"])[0]
    assert (stats.ready, stats.delayed, stats.in_flight) == (2, 1, 1)

    broker.delete([ids[1], later])
    assert broker.length("q") == 1
    assert broker.show(later) is None
    assert broker.peek("q", 10)[0].id == ids[2]

    broker.delete([ids[2], leased.id])
    assert broker.length("q") == 0
    assert "q" not in broker.queues()


def test_peek_pages_through_a_queue_with_skip(broker: Broker) -> None:
    # Given 5 ready jobs and 2 delayed ones (a page may span both)
    ready = broker.add_many([NewJob("q", f"j{i}".encode()) for i in range(5)])
    later = [broker.add("q", b"later", delay=60), broker.add("q", b"latest", delay=120)]
    broker.add("other", b"o")
    everything = [d.id for d in broker.peek("q", 10)]
    assert everything == ready + later

    # When it is read two jobs at a time
    pages = [[d.id for d in broker.peek("q", 2, skip=skip)] for skip in range(0, 8, 2)]

    # Then the pages are the whole order, each job once, and past the end is empty
    assert pages == [ready[0:2], ready[2:4], [ready[4], later[0]], [later[1]]]
    assert [d.id for d in broker.peek("q", 3, skip=6)] == [later[1]]
    assert broker.peek("q", 5, skip=7) == []
    # And scan walks the same order, page by page
    assert [d.id for d in broker.scan("q", page=2)] == everything
    assert [d.payload for d in broker.scan("q", page=3)][:2] == [b"j0", b"j1"]


def test_scan_reads_bodies_page_by_page(broker: Broker) -> None:
    # Given 7 jobs walked 3 at a time (a failure queue walked by `failed retry --all`)
    ids = broker.add_many([NewJob("q", f"j{i}".encode()) for i in range(7)])
    walk = broker.scan("q", page=3)
    first_page = [next(walk).id for _ in range(3)]
    assert first_page == ids[:3]

    # When a job of a later page is deleted during the walk (purged by another operator)
    broker.delete([ids[5]])

    # Then the walk does not hand it out: its body was not read before its page
    # (on Disque too, where the walk once held every body of the queue)
    rest = [d.id for d in walk]
    assert ids[5] not in rest
    assert rest[-1] == ids[6]


def test_backlog_counts_ready_jobs_only_and_stops_at_the_cap(broker: Broker) -> None:
    # Given 5 ready jobs, one delayed, one leased, and another queue
    ids = broker.add_many([NewJob("q", f"j{i}".encode()) for i in range(6)])
    broker.add("q", b"later", delay=60)
    broker.add("other", b"o")
    leased = reserve_one(broker, "q")
    assert leased.id == ids[0]

    # Then the backlog counts the 5 ready ones, capped where asked
    assert broker.backlog(["q", "other", "empty"], cap=100) == {"q": 5, "other": 1, "empty": 0}
    assert broker.backlog(["q"], cap=3) == {"q": 3}


LATENCY_DELAY = 2  # s: whole seconds, Disque's unit


def test_latency_is_the_wait_of_the_oldest_ready_job_since_it_became_ready(broker: Broker) -> None:
    # Given two ready jobs, a delayed one, a leased one, and an empty queue
    added = time.time()
    broker.add_many([NewJob("ready", b"first"), NewJob("ready", b"second")])
    broker.add("delayed", b"d", delay=LATENCY_DELAY)
    broker.add("leased", b"l")
    reserve_one(broker, "leased")
    assert broker.latency(["delayed", "empty"]) == {"delayed": 0.0, "empty": 0.0}, "a job not yet due waits for nobody"
    assert broker.latency([]) == {}

    # When the delayed job has been due for a while
    wait_for(lambda: broker.latency(["delayed"])["delayed"] >= 1, timeout=10 + LATENCY_DELAY,
             message="the due delayed job's latency to grow")
    ages = broker.latency(["ready", "delayed", "leased", "empty"])
    elapsed = time.time() - added

    # Then the ready queue's counts from the add, the delayed one's from its due time (a retry's too)
    assert elapsed - SLACK <= ages["ready"] <= elapsed + SLACK, (ages, elapsed)
    assert LATENCY_DELAY - 1 <= ages["ready"] - ages["delayed"] <= LATENCY_DELAY + 1, ages
    # and a leased job, or none, is no wait
    assert (ages["leased"], ages["empty"]) == (0.0, 0.0)

    # When both ready jobs are taken, the queue's latency is 0 again
    broker.reserve(["ready"], count=2, timeout=5)
    assert broker.latency(["ready"]) == {"ready": 0.0}


def test_latency_of_a_lapsed_or_given_back_job_counts_from_then(broker: Broker, broker_url: str) -> None:
    if broker_url.startswith("disque"):
        pytest.skip("Disque keeps no requeue time: such a job counts from its creation (docs/brokers.md)")
    # Given two jobs that waited a while, then were taken (one with a 1 s lease)
    broker.add("lapsed", b"l", retry=1)
    broker.add("nacked", b"n")
    wait_for(lambda: broker.latency(["lapsed"])["lapsed"] >= LATENCY_DELAY, timeout=10 + LATENCY_DELAY,
             message="the jobs to wait")
    reserve_one(broker, "lapsed")
    taken = reserve_one(broker, "nacked")

    # When one is given back, it counts from then, not from its add
    broker.nack([taken.id])
    assert broker.latency(["nacked"])["nacked"] < LATENCY_DELAY - 1

    # When the other's lease runs out, it counts from then too, before and after the
    # engine moves it back to the ready jobs (stats does on redis)
    wait_for(lambda: broker.latency(["lapsed"])["lapsed"] > 0, timeout=10, message="the lease to lapse")
    broker.stats(["lapsed"])
    assert broker.latency(["lapsed"])["lapsed"] < LATENCY_DELAY - 1


def wake_ups(broker: Broker, url: str, samples: int = WAKE_SAMPLES,
             queues: Sequence[str] = ("wake",)) -> list[tuple[float, str]]:
    """(seconds from another process's add to the queue "wake" to our
    reserve blocked on ``queues``'s return, the job's id), once per sample."""
    adder = agent("add-on-line", url, "wake", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert adder.stdout.readline().strip() == "ready"
        out = []
        for _ in range(samples):
            # the adder adds while we are blocked in reserve
            adder.stdin.write("go\n")
            adder.stdin.flush()
            got = broker.reserve(list(queues), timeout=10)
            woke = time.monotonic()
            added = float(adder.stdout.readline())
            assert len(got) == 1
            broker.ack([got[0].id])
            out.append((woke - added, got[0].id))
        return out
    finally:
        stop_process(adder)
        adder.stdin.close()
        adder.stdout.close()


def test_blocking_reserve_wakes_on_an_add_from_another_process(
    broker: Broker, broker_url: str, record_property
) -> None:
    # Given another process that adds while we are blocked in reserve
    latencies = [latency for latency, _ in wake_ups(broker, broker_url)]

    # Then we woke within milliseconds (target 50 ms; loose bound when loaded)
    median = statistics.median(latencies)
    record_property("wake_latency_ms", [round(x * 1000, 1) for x in latencies])
    assert median < WAKE_BOUND, f"median wake latency {median * 1000:.0f} ms, all: {latencies}"


# Queue names the config allows (one word): a redis key's own separators and
# hash-tag braces, the id separator, non-ASCII, and a long one.
ODD_QUEUE_NAMES = ["a:b", "{x}", "x}y{", "a-b-c", "fronta-č", "日本", "q" * 300]


@pytest.mark.parametrize("queue", ODD_QUEUE_NAMES)
def test_odd_queue_names_round_trip(broker: Broker, queue: str) -> None:
    job_id = broker.add(queue, b"x")
    assert broker.stats([queue])[0].ready == 1 and queue in broker.queues()

    got = reserve_one(broker, queue)

    assert (got.id, got.queue) == (job_id, queue)
    assert broker.show(job_id)["queue"] == queue
    broker.ack([got.id])
    assert broker.show(job_id) is None and broker.length(queue) == 0


@pytest.mark.parametrize("payload", [b"", bytes(range(256)), b"\x00" * 10])
def test_any_bytes_are_a_payload(broker: Broker, payload: bytes) -> None:
    job_id = broker.add("q", payload)
    assert reserve_one(broker, "q")[:3] == (job_id, "q", payload)


def test_lapsed_lease_counts_as_ready_before_it_is_taken_again(broker: Broker) -> None:
    job_id = broker.add("q", b"x", retry=1)
    reserve_one(broker, "q")

    wait_for(lambda: broker.stats(["q"])[0].ready == 1, timeout=10, message="the lapsed lease to count as ready")

    assert broker.stats(["q"])[0].in_flight == 0 and broker.length("q") == 1
    assert [d.id for d in broker.peek("q", 5)] == [job_id]
    assert broker.show(job_id)["state"] == "ready"


def test_batch_reserve_skips_an_empty_first_queue(broker: Broker) -> None:
    ids = broker.add_many([NewJob("second", b"1"), NewJob("second", b"2")])

    got = broker.reserve(["first", "second"], count=5, timeout=5)

    assert [d.id for d in got] == ids


def test_replace_of_a_foreign_id_still_adds_the_new_job(broker: Broker) -> None:
    new_id = broker.replace("not-an-id-of-any-engine", NewJob("q", b"new"))
    assert reserve_one(broker, "q")[:3] == (new_id, "q", b"new")


def test_acked_job_is_not_brought_back_by_a_late_nack(broker: Broker) -> None:
    job_id = broker.add("q", b"x")
    reserve_one(broker, "q")
    broker.ack([job_id])

    broker.nack([job_id])

    assert broker.show(job_id) is None
    assert broker.reserve(["q"], timeout=0.5) == []
