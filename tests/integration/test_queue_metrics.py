"""Per-queue job outcomes and durations in `disqontrolctl metrics`, from a
real daemon: counters and a histogram that Prometheus's own parser reads,
with a queue name that needs escaping, kept across a consumer's crash and
a reload (a counter that goes down breaks rate())."""
from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from disqontrol_client.brokers import open_broker
from disqontrol_client.config import load_config
from disqontrol_client.job import Job
from disqontrol_client.submit import new_job_for
from tests.integration.ctl_support import ctl
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for
from tests.support.redis_server import RedisServer

PLAIN, ODD = "alpha", 'we"ird\\q'  # the odd one needs both escapes of a label value
SLEEP = 0.3  # s: one job slower than the 0.25 s bucket
ALPHA_JOBS = [1, 2, {"n": 3, "sleep": SLEEP}, {"n": 4, "fail": True}]  # 3 done, 1 parked at once
ODD_JOBS = [5, 6, {"n": 7, "fail": True}]  # 2 done, 1 retried then parked
RUNS = len(ALPHA_JOBS) + len(ODD_JOBS) + 1
PREFIX = "disqontrol_"
LEASE = 1.0  # s: the lease of a job whose consumer dies, in a redelivery test


def scrape(daemon: Daemon) -> tuple[dict[str, str], dict[tuple[str, tuple], float]]:
    """({family: type}, {(sample name, sorted labels): value}) as Prometheus reads them."""
    done = ctl(daemon, "metrics")
    assert done.returncode == 0, done.stderr
    types, samples = {}, {}
    for family in text_string_to_metric_families(done.stdout):
        types[family.name.removeprefix(PREFIX)] = family.type
        for sample in family.samples:
            samples[(sample.name.removeprefix(PREFIX), tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def queue_values(samples: dict[tuple[str, tuple], float], queue: str) -> dict[str, Any]:
    """The queue's counters, its histogram's count and sum, and its buckets by bound."""
    def one(name: str) -> float:
        return samples[(name, (("queue", queue),))]
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples.items()
               if name == "queue_job_duration_seconds_bucket" and dict(labels)["queue"] == queue}
    return {"done": one("queue_jobs_done_total"), "retried": one("queue_jobs_retried_total"),
            "parked": one("queue_jobs_parked_total"), "count": one("queue_job_duration_seconds_count"),
            "sum": one("queue_job_duration_seconds_sum"), "buckets": buckets}


def replaced(daemon: Daemon, old: int) -> bool:
    """Whether one consumer runs and ``old`` is gone, from one look (two
    looks passed with the old one in the first and none yet in the second)."""
    pids = daemon.consumer_pids()
    return len(pids) == 1 and old not in pids


def booked(daemon: Daemon, queue: str, **wanted: float) -> tuple[dict[tuple[str, tuple], float], dict[str, Any]]:
    """(samples, the queue's values) once the queue's values include ``wanted`` (done=2)."""
    def enough():
        _, samples = scrape(daemon)
        values = queue_values(samples, queue)
        return (samples, values) if all(values[key] == n for key, n in wanted.items()) else None
    return wait_for(enough, timeout=30, message=f"{wanted} of {queue!r} in the metrics")


def counted(daemon: Daemon, queue: str, done: float) -> dict[str, Any]:
    def enough():
        values = queue_values(scrape(daemon)[1], queue)
        return values if values["done"] >= done else None
    return wait_for(enough, timeout=60, interval=0.3, message=f"{done:g} jobs of {queue!r} done in the metrics")


@pytest.mark.timeout(180)
def test_per_queue_outcomes_and_durations_parse_and_survive_a_crash_and_a_reload(tmp_path):
    # Given one consumer of two queues (one name needing escapes) that ran
    # jobs that succeed, fail and are retried, and fail for good
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {PLAIN: {"worker": python_worker(), "max_retries": 0},
                     ODD: {"worker": python_worker(), "max_retries": 1, "backoff_scale": 0.001}},
                    consumers=[{"queues": [PLAIN, ODD]}]).start()
    try:
        daemon.add(PLAIN, ALPHA_JOBS)
        daemon.add(ODD, ODD_JOBS)
        daemon.wait_runs(RUNS)
        wait_for(lambda: daemon.broker.length("failed-jobs") == 2, timeout=60, message="both failures parked")

        # When the metrics are read by Prometheus's parser
        types, samples = scrape(daemon)
        alpha, odd = counted(daemon, PLAIN, 3), counted(daemon, ODD, 2)

        # Then the outcomes are counters and the durations a histogram, per queue
        assert types["queue_jobs_done"] == types["queue_jobs_retried"] == types["queue_jobs_parked"] == "counter"
        assert types["queue_job_duration_seconds"] == "histogram"
        assert types["jobs_done"] == "counter"  # the per-group ones are still there
        assert (alpha["done"], alpha["retried"], alpha["parked"], alpha["count"]) == (3, 0, 1, len(ALPHA_JOBS))
        assert (odd["done"], odd["retried"], odd["parked"], odd["count"]) == (2, 1, 1, len(ODD_JOBS) + 1)
        # and the buckets are cumulative, the slow job past 0.25 s, all under +Inf
        assert alpha["buckets"]["0.25"] <= len(ALPHA_JOBS) - 1 < alpha["buckets"]["+Inf"] == len(ALPHA_JOBS)
        bounds = sorted(alpha["buckets"], key=float)
        assert [alpha["buckets"][b] for b in bounds] == sorted(alpha["buckets"].values())
        assert alpha["sum"] >= SLEEP

        # When the consumer is killed (a crash: the master starts another)
        [consumer] = daemon.consumer_pids()
        os.kill(consumer, signal.SIGKILL)
        wait_for(lambda: replaced(daemon, consumer), timeout=60, message="a new consumer")
        # Then no counter went down
        after_crash = queue_values(scrape(daemon)[1], ODD)
        assert after_crash == odd

        # When a reload replaces the consumer and it runs one more job of the odd queue
        [second] = daemon.consumer_pids()
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: replaced(daemon, second), timeout=60, message="the new generation's consumer alone")
        daemon.add(ODD, [8])
        after_reload = counted(daemon, ODD, 3)

        # Then the counters go on from where they were
        assert (after_reload["retried"], after_reload["parked"], after_reload["count"]) == (1, 1, odd["count"] + 1)
        assert queue_values(scrape(daemon)[1], PLAIN) == alpha
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_every_configured_queue_has_its_counters_from_zero(tmp_path):
    # Given a daemon whose queue has run nothing yet
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {PLAIN: {"worker": python_worker()}}).start()
    try:
        # When the metrics are read
        _, samples = scrape(daemon)
        # Then its outcome counters are there at 0 (so the first parked job is an increase
        # an alert sees) and its histogram waits for a first job
        label = (("queue", PLAIN),)
        assert samples[("queue_jobs_parked_total", label)] == samples[("queue_jobs_done_total", label)] == 0
        assert ("queue_job_duration_seconds_count", label) not in samples
    finally:
        daemon.stop()


@pytest.mark.timeout(180)
def test_a_job_that_kills_its_consumer_counts_as_failed_at_each_death(tmp_path):
    # Given a queue allowing 1 retry, and a job whose worker takes the consumer down (a poison job)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {PLAIN: {"worker": python_worker(), "max_retries": 1,
                             "job_process_timeout": 2}}).start()  # back 2 + 15 s after each death
    try:
        daemon.add(PLAIN, [{"n": 1, "exit": True}], lease=1)

        # When it has killed two consumers and was parked at its third delivery
        wait_for(lambda: daemon.broker.length("failed-jobs") == 1, timeout=90, message="the poison job parked")

        # Then both deaths are failures in the metrics, as SPEC §6 counts them (they
        # showed none: an alert on failed jobs never saw a job that kills consumers)
        samples, values = booked(daemon, PLAIN, parked=1)
        assert (values["retried"], values["parked"], values["count"]) == (1, 1, 0)  # never ran to its end
        assert samples[("jobs_failed_total", (("group", PLAIN),))] == 2
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_a_death_is_counted_once_when_its_job_is_given_back_before_it_runs(tmp_path):
    # Given two jobs whose consumer died holding them (leased, the lease ran out)
    url = f"sqlite://{tmp_path}/jobs.db"
    daemon = Daemon(tmp_path, url, {PLAIN: {"worker": python_worker()}},
                    consumer_defaults={"job_batch": 2})
    dead_consumer = open_broker(url)
    daemon_config = load_config(daemon.config_path)
    dead_consumer.add_many([dataclasses.replace(new_job_for(Job({"n": n, "sleep": 2}, PLAIN),
                                                            daemon_config.queue(PLAIN)), retry=LEASE)
                            for n in (1, 2)])
    assert len(dead_consumer.reserve([PLAIN], count=2, timeout=0)) == 2
    wait_for(lambda: dead_consumer.backlog([PLAIN], 2)[PLAIN] == 2, timeout=30, message="both leases run out")
    dead_consumer.close()
    daemon.start()
    try:
        # When the daemon's consumer takes both, runs one and is stopped meanwhile
        # (it gives the other back unstarted) and its successor runs the other
        [consumer] = wait_for(daemon.consumer_pids, timeout=30, message="a consumer")
        wait_for(lambda: "busy" in daemon.title(consumer), timeout=30, message="the first job running")
        os.kill(consumer, signal.SIGTERM)
        daemon.wait_runs(2)

        # Then each job's one death is one failure: the job given back was
        # counted again at its next delivery (3 failures for 2 deaths)
        samples, values = booked(daemon, PLAIN, done=2)
        assert values["retried"] == 2
        assert samples[("jobs_failed_total", (("group", PLAIN),))] == 2
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_a_failure_the_broker_did_not_take_is_counted_once(tmp_path, redis_server):
    # Given a daemon on its own redis (AOF) running a job that fails after a while
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    daemon = Daemon(tmp_path, server.url, {PLAIN: {"worker": python_worker(), "max_retries": 1}}).start()
    try:
        daemon.add(PLAIN, [{"n": 1, "sleep": 1, "fail": True}], lease=LEASE * 3)
        [consumer] = daemon.consumer_pids()
        wait_for(lambda: "busy" in daemon.title(consumer), timeout=30, message="the job running")

        # When redis is down as it fails (the failure is not recorded: the job comes
        # back after its lease), then up again, and the job fails again and is parked
        server.kill()
        daemon.wait_event("failure_not_recorded")
        server.start()
        wait_for(lambda: daemon.broker.length("failed-jobs") == 1, timeout=60, message="the job parked")

        # Then its two failed runs are two failures: the first was counted when
        # the broker refused it and again when the job came back (3, and 2 retried)
        samples, values = booked(daemon, PLAIN, parked=1)
        assert (values["retried"], values["parked"], values["count"]) == (1, 1, 2)
        assert samples[("jobs_failed_total", (("group", PLAIN),))] == 2
    finally:
        daemon.stop()
        server.stop()
