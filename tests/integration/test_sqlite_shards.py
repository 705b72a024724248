"""The sharded sqlite engine (``?shards=N``) beyond the contract suite: ids
of a shard routed to it, wake-ups and stealing across shards, shard files
left by a larger N or made by another process later, home shards, and the
URL's checks. Several brokers opened in one process hold different home
locks, so a second broker adds to shard 1."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from disqontrol_client.brokers import Broker, NewJob, open_broker
from disqontrol_client.brokers.sqlite import SqliteBroker
from disqontrol_client.brokers.sqlite_homes import PRODUCER
from disqontrol_client.errors import ConfigError
from disqontrol_client.job import Job
from disqontrol_client.producer import Producer
from tests.contract.test_broker_contract import agent, produce_and_consume, reserve_one, wake_ups
from tests.support.procs import stop_process, wait_for

WAKE_TARGET = 0.05  # s: a blocked reserve wakes within 50 ms of an add on another shard
RESCAN_BOUND = 6.0  # s: the rescan runs each second; a waiter re-checks at least every 2 s
PRODUCERS, JOBS_PER_PRODUCER = 2, 4000
DRAIN_TIMEOUT = 90.0  # s: 8,000 jobs on a loaded machine
HOME_JOBS = 200  # more than a consumer reserving every 0.1 s takes in UNOWNED_BOUND
CONSUMER_RESERVE_TIMEOUT = 1.0  # s: disqontrold.consumer.RESERVE_TIMEOUT
UNOWNED_BOUND = 6.0  # s: a shard is seen unowned at two looks a second apart


def sharded(tmp_path: Path, shards: int = 2) -> str:
    return f"sqlite://{tmp_path}/jobs.db?shards={shards}"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[Broker]]:
    """Two brokers of one ``?shards=2`` database, homed on shards 0 and 1."""
    opened = [open_broker(sharded(tmp_path)) for _ in range(2)]
    assert [b.home(PRODUCER) for b in opened] == [0, 1]  # type: ignore[attr-defined]
    yield opened
    for b in opened:
        b.close()


def test_ids_of_shard_1_are_acked_nacked_shown_and_replaced_in_shard_1(brokers: list[Broker]) -> None:
    home0, home1 = brokers
    # Given a job in each shard, both rowid 1
    zero = home0.add("q", b"zero")
    one = home1.add("q", b"one")
    assert (zero, one) == ("S-1", "S1-1")
    # When a consumer homed on shard 0 takes both
    taken = {d.id: d.payload for d in (reserve_one(home0, "q"), reserve_one(home0, "q"))}
    assert taken == {zero: b"zero", one: b"one"}
    assert home1.show(one)["state"] == "leased" and home1.show(one)["payload"] == b"one"

    # nack and working reach shard 1 and leave shard 0's rowid 1 alone
    home0.nack([one])
    assert home1.show(one)["nacks"] == 1 and home1.show(zero)["nacks"] == 0
    again = reserve_one(home0, "q")
    assert (again.id, again.nacks) == (one, 1)
    due = home1.show(one)["due"]
    time.sleep(0.05)  # a later time for working() to set
    home0.working(one)
    assert home1.show(one)["due"] > due

    # replace keeps the job in its shard; ack and delete reach the right file
    moved = home0.replace(one, NewJob("failed-jobs", b"parked"))
    assert moved.startswith("S1-") and home0.show(one) is None
    assert home1.show(moved)["queue"] == "failed-jobs"
    home0.ack([zero])
    assert home1.show(zero) is None and home1.show(moved) is not None
    home0.delete([moved])
    assert home0.length("failed-jobs") == 0 and home0.queues() == []


def test_a_blocked_reserve_wakes_on_an_add_to_the_other_shard(tmp_path: Path) -> None:
    # Given this process homed on shard 0, and another process adding on shard 1
    url = sharded(tmp_path)
    with open_broker(url) as mine:
        mine.add("other", b"x")  # holds producer home 0: the adder's home is shard 1
        # When it adds while we are blocked in reserve
        woken = wake_ups(mine, url)

    # Then every job was shard 1's and we woke within 50 ms of its add
    assert all(job_id.startswith("S1-") for _, job_id in woken), woken
    latencies = [latency for latency, _ in woken]
    median = statistics.median(latencies)
    assert median < WAKE_TARGET, f"median wake latency {median * 1000:.1f} ms, all: {latencies}"


def test_jobs_left_in_a_shard_are_delivered_after_the_option_is_removed(
        brokers: list[Broker], tmp_path: Path) -> None:
    # Given jobs in both shards of a ?shards=2 database
    home0, home1 = brokers
    left = [home0.add("q", b"s0")] + home1.add_many([NewJob("q", f"s1-{i}".encode()) for i in range(3)])
    for b in brokers:
        b.close()

    # When the URL loses its option
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as plain:
        # Then shard 1's jobs are still counted, shown and delivered
        assert plain.length("q") == 4 and plain.stats(["q"])[0].ready == 4
        assert plain.show(left[1])["payload"] == b"s1-0"
        taken = []
        while len(taken) < len(left):
            got = plain.reserve(["q"], count=10, timeout=2)
            assert got, f"only {taken} of {left} delivered"
            taken += [d.id for d in got]
            plain.ack([d.id for d in got])
        assert sorted(taken) == sorted(left) and plain.length("q") == 0
        # and new jobs go to shard 0 only
        assert plain.add("q", b"new").startswith("S-")


def test_a_shard_file_made_by_another_process_later_is_served(tmp_path: Path) -> None:
    # Given a consumer of ?shards=2, waiting
    with open_broker(sharded(tmp_path)) as consumer:
        assert consumer.reserve(["q"], timeout=0) == []
        # When a process with ?shards=3 adds a job to shard 2, which did not exist
        producers = [open_broker(sharded(tmp_path, 3)) for _ in range(3)]
        try:
            ids = [p.add("q", f"p{i}".encode()) for i, p in enumerate(producers)]
        finally:
            for p in producers:
                p.close()
        assert ids[2] == "S2-1"
        # Then the consumer finds it, within the rescan's bound
        deadline = time.monotonic() + RESCAN_BOUND
        taken: list[str] = []
        while len(taken) < len(ids) and time.monotonic() < deadline:
            got = consumer.reserve(["q"], count=10, timeout=deadline - time.monotonic())
            taken += [d.id for d in got]
        assert sorted(taken) == sorted(ids)


def test_a_consumer_of_a_plain_url_serves_a_shard_file_made_after_it_opened(tmp_path: Path) -> None:
    # Given a consumer of the plain URL, opened before any shard file existed:
    # its calls go straight to the one file (no routing, the one-file speed)
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as plain:
        assert isinstance(plain.reserve.__self__, SqliteBroker)  # type: ignore[attr-defined]
        assert plain.reserve(["q"], timeout=0) == []
        # When producers given ?shards=2 (a web app deployed before the daemon) add on both shards
        producers = [open_broker(sharded(tmp_path)) for _ in range(2)]
        try:
            ids = [p.add("q", f"p{i}".encode()) for i, p in enumerate(producers)]
        finally:
            for p in producers:
                p.close()
        assert ids == ["S-1", "S1-1"]
        # Then the consumer, reserving as the daemon's does (1 s at a time),
        # finds shard 1 too, within the rescan's bound
        deadline = time.monotonic() + RESCAN_BOUND
        taken: list[str] = []
        while len(taken) < len(ids) and time.monotonic() < deadline:
            taken += [d.id for d in plain.reserve(["q"], count=10, timeout=CONSUMER_RESERVE_TIMEOUT)]
        assert sorted(taken) == sorted(ids)


def test_consumer_processes_take_distinct_home_shards(tmp_path: Path) -> None:
    url = sharded(tmp_path)
    started = []

    def consumer() -> tuple[subprocess.Popen, int]:
        proc = agent("home", url, "q", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        return proc, int(proc.stdout.readline())

    try:
        # Given two consumer processes
        (first, home_a), (_, home_b) = consumer(), consumer()
        # Then they took a shard each
        assert {home_a, home_b} == {0, 1}
        # And when one dies, the next consumer takes its shard
        stop_process(first)
        _, home_c = consumer()
        assert home_c == home_a
    finally:
        for proc in started:
            stop_process(proc)
            proc.stdin.close()
            proc.stdout.close()


def test_a_forked_child_picks_a_home_of_its_own_and_the_parent_keeps_its(tmp_path: Path) -> None:
    # Given a consumer homed on shard 0
    with open_broker(sharded(tmp_path)) as parent:
        assert parent.reserve(["q"], timeout=0) == [] and parent.home() == 0  # type: ignore[attr-defined]
        # When it forks and the child reserves with the same broker object
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its home, leave at once
            try:
                parent.reserve(["q"], timeout=0)
                os.write(write, str(parent.home()).encode())  # type: ignore[attr-defined]
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child_home = pipe.read()
        os.waitpid(pid, 0)
        # Then the child took the free shard, not the parent's lock
        assert child_home == "1"
        # and the parent still holds shard 0: a new consumer gets shard 1
        with open_broker(sharded(tmp_path)) as other:
            other.reserve(["q"], timeout=0)
            assert other.home() == 1  # type: ignore[attr-defined]


def test_two_producers_and_two_consumers_on_two_shards_deliver_every_job_once(tmp_path: Path) -> None:
    # Given two consumer processes waiting, when two producer processes add 4,000 jobs each
    added, taken = produce_and_consume(sharded(tmp_path), tmp_path, PRODUCERS, JOBS_PER_PRODUCER, DRAIN_TIMEOUT)

    # Then the producers used both shards, and every job was taken once
    assert len(added) == PRODUCERS * JOBS_PER_PRODUCER
    assert {i.partition("-")[0] for i, _ in added} == {"S", "S1"}
    assert sorted(taken) == sorted(added)


@pytest.mark.parametrize("query, message", [
    ("shards=0", "has shards='0'; allowed: a whole number from 1 to 16"),
    ("shards=17", "has shards='17'; allowed: a whole number from 1 to 16"),
    ("shards=x", "has shards='x'; allowed: a whole number from 1 to 16"),
    ("shards=", "has shards=''; allowed: a whole number from 1 to 16"),
    ("foo=1", "has an unknown option 'foo'; a sqlite URL takes only shards=N (N from 1 to 16)"),
    ("shards=2&shards=2", "gives shards twice; give it once"),
])
def test_bad_shard_options_are_refused(tmp_path: Path, query: str, message: str) -> None:
    url = f"sqlite://{tmp_path}/jobs.db?{query}"
    with pytest.raises(ConfigError) as refused:
        open_broker(url)
    assert str(refused.value) == f"disqontrol.broker: {url!r} {message}"
    assert list(tmp_path.iterdir()) == []


def test_a_shard_without_a_live_consumer_is_served_in_turn_with_the_home_shard(
        brokers: list[Broker]) -> None:
    # Given a consumer homed on shard 0, which holds many jobs, and a job in
    # shard 1, whose consumer is gone (nobody holds its home)
    home0, home1 = brokers
    home0.add_many([NewJob("q", b"home")] * HOME_JOBS)
    stray = home1.add("q", b"stray")
    assert home0.home() == 0  # type: ignore[attr-defined]

    # When it reserves one job at a time
    taken: list[str] = []
    wait_for(lambda: stray in taken or taken.append(reserve_one(home0, "q").id), timeout=UNOWNED_BOUND,
             interval=0.1, message="the job of the shard without a consumer")

    # Then shard 1's job did not wait for shard 0 to run dry
    assert home0.length("q") > 0, taken


def test_a_consumer_that_found_every_home_taken_takes_one_freed_later(tmp_path: Path) -> None:
    # Given two consumers holding both homes, and a third (a reload's new
    # consumer beside the old ones) that had to share one
    url = sharded(tmp_path)
    first, second, late = (open_broker(url) for _ in range(3))
    try:
        for b in (first, second, late):
            b.reserve(["q"], timeout=0)
        shared = late.home()  # type: ignore[attr-defined]
        leaving = first if first.home() != shared else second  # type: ignore[attr-defined]
        # When the consumer of the other shard leaves
        leaving.close()
        # Then the late one moves there as it goes on reserving
        wait_for(lambda: late.reserve(["q"], timeout=0) == [] and late.home() == 1 - shared,  # type: ignore[attr-defined]
                 timeout=UNOWNED_BOUND, interval=0.1, message="the late consumer to take the freed home")
    finally:
        for b in (first, second, late):
            b.close()


def test_moved_names_a_shard_deleted_or_replaced_and_a_fresh_open_has_nothing_moved(tmp_path: Path) -> None:
    # Given a consumer's broker on ?shards=2 that has used both files
    with open_broker(f"sqlite://{tmp_path}/other.db") as other:
        other.add("q", b"x")  # a backup, checkpointed into its file at close
    with open_broker(sharded(tmp_path)) as b:
        b.reserve(["q"], timeout=0)
        assert b.moved() is None

        # When shard 1 is deleted, then shard 0 replaced (a restore: its -wal and -shm removed too)
        os.unlink(tmp_path / "jobs.db.shard1")
        assert b.moved() == f"{tmp_path}/jobs.db.shard1: deleted"
        for path in tmp_path.glob("jobs.db-*"):
            path.unlink()
        os.replace(tmp_path / "other.db", tmp_path / "jobs.db")
        assert b.moved() == "replaced"

    # Then its successor (a recycled consumer) has nothing moved and serves the new files,
    # so no recycle loop: on ?shards=2 it makes shard 1 again ...
    with open_broker(sharded(tmp_path)) as fresh:
        assert fresh.moved() is None
        assert [d.payload for d in fresh.reserve(["q"], timeout=0)] == [b"x"]
        assert fresh.moved() is None
    # ... and on the plain URL a leftover shard removed on purpose is left removed
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as plain:
        plain.reserve(["q"], timeout=0)
        os.unlink(tmp_path / "jobs.db.shard1")
        assert plain.moved() == f"{tmp_path}/jobs.db.shard1: deleted"
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as plain:
        plain.reserve(["q"], timeout=0)
        assert plain.moved() is None and not (tmp_path / "jobs.db.shard1").exists()


def test_a_producer_on_shards_follows_its_home_shard_deleted_under_it(tmp_path: Path) -> None:
    # Given an app's producer homed on shard 1 (another process holds shard 0's producer lock)
    with open_broker(sharded(tmp_path)) as first:
        assert first.home(PRODUCER) == 0  # type: ignore[attr-defined]
        producer = Producer(sharded(tmp_path))
        producer.add(Job(0, "q"))
        assert producer.broker.home(PRODUCER) == 1  # type: ignore[attr-defined]

        # When shard 1's files are deleted
        for path in tmp_path.glob("jobs.db.shard1*"):
            path.unlink()

        # Then within about a second its adds land in a new shard 1, where consumers read
        def in_new_file() -> int:
            producer.add(Job(1, "q"))
            return first.length("q")
        wait_for(in_new_file, timeout=10, interval=0.1, message="a job in the new shard 1")
        producer.close()


# A process (a consumer at its descriptor limit) asks moved() once its
# files are open and every descriptor is spent; prints the answer.
OUT_OF_DESCRIPTORS = """
import os, resource, sys, time
from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.sqlite_shards import RESCAN_INTERVAL

broker = open_broker(sys.argv[1])
broker.reserve(["q"], timeout=0)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
spent = []
try:
    while True:
        spent.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
time.sleep(RESCAN_INTERVAL)  # the rescan of shard files is due
print(broker.moved())
"""
FEW_DESCRIPTORS = 64


@pytest.mark.parametrize("query", ["", "?shards=2"])
def test_moved_does_not_raise_when_the_process_is_out_of_descriptors(tmp_path: Path, query: str) -> None:
    # Given a consumer's broker whose process has spent every descriptor (EMFILE)
    # When the consumer asks whether its files moved
    asked = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS, f"sqlite://{tmp_path}/jobs.db{query}",
                            str(FEW_DESCRIPTORS)], capture_output=True, text=True, timeout=60)

    # Then nothing moved: no BrokerUnavailable from a listing of the directory, which crashed it
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert asked.stdout.strip() == "None"
