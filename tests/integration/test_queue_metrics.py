"""Per-queue job outcomes and durations in `disqontrolctl metrics`, from a
real daemon: counters and a histogram that Prometheus's own parser reads,
with a queue name that needs escaping, kept across a consumer's crash and
a reload (a counter that goes down breaks rate())."""
from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ctl_support import ctl
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

PLAIN, ODD = "alpha", 'we"ird\\q'  # the odd one needs both escapes of a label value
SLEEP = 0.3  # s: one job slower than the 0.25 s bucket
ALPHA_JOBS = [1, 2, {"n": 3, "sleep": SLEEP}, {"n": 4, "fail": True}]  # 3 done, 1 parked at once
ODD_JOBS = [5, 6, {"n": 7, "fail": True}]  # 2 done, 1 retried then parked
RUNS = len(ALPHA_JOBS) + len(ODD_JOBS) + 1
PREFIX = "disqontrol_"


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
        wait_for(lambda: daemon.consumer_pids() and consumer not in daemon.consumer_pids(), timeout=60,
                 message="a new consumer")
        # Then no counter went down
        after_crash = queue_values(scrape(daemon)[1], ODD)
        assert after_crash == odd

        # When a reload replaces the consumer and it runs one more job of the odd queue
        [second] = daemon.consumer_pids()
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.consumer_pids() and second not in daemon.consumer_pids(), timeout=60,
                 message="the new generation's consumer alone")
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
        def booked():
            _, samples = scrape(daemon)
            values = queue_values(samples, PLAIN)
            return (samples, values) if values["parked"] == 1 else None
        samples, values = wait_for(booked, timeout=30, message="the parked job in the metrics")
        assert (values["retried"], values["parked"], values["count"]) == (1, 1, 0)  # never ran to its end
        assert samples[("jobs_failed_total", (("group", PLAIN),))] == 2
    finally:
        daemon.stop()
