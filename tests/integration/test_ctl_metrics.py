"""`disqontrolctl metrics` against a real daemon: the Prometheus text a
textfile collector reads, with the master up, and with it stopped."""
from __future__ import annotations

import os
import re
import signal
import stat

import pytest

from tests.integration.ctl_support import ctl, ctl_json
from tests.support.daemon import Daemon, command_worker, python_worker
from tests.support.procs import wait_for

JOBS = 5
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SAMPLE = re.compile(r'^disqontrol_(\w+)(?:\{(.*)\})? (\S+)$')


def parse(text: str) -> dict[tuple[str, str], float]:
    """{(metric without prefix, labels text): value}; every line must be a
    comment or a well-formed sample, and every metric must be typed first."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2].removeprefix("disqontrol_"))
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        family = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.removesuffix(s) in typed), name)
        assert family in typed, f"{name} has no TYPE line before its samples"
        samples[(name, labels or "")] = float(value)
    return samples


@pytest.mark.timeout(120)
def test_metrics_count_the_jobs_and_queues_and_say_when_the_master_is_down(tmp_path):
    # Given a daemon that ran some jobs, one of them failing for good
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {"work": {"worker": python_worker(), "max_retries": 0}}).start()
    try:
        daemon.add("work", list(range(JOBS)) + [{"n": JOBS, "fail": True}])
        wait_for(lambda: daemon.broker.length("failed-jobs") == 1 and len(daemon.runs()) >= JOBS + 1,
                 timeout=60, message="the jobs done and the failure parked")
        group = 'group="work"'

        # When the metrics are asked for
        def counted():
            done = ctl(daemon, "metrics")
            assert done.returncode == 0, done.stderr
            metrics = parse(done.stdout)
            return metrics if metrics[("jobs_done_total", group)] == JOBS else None
        metrics = wait_for(counted, timeout=30, message=f"{JOBS} jobs done in the metrics")

        # Then they tell the master and the broker answered, what the group did, and the queues
        assert metrics[("master_up", "")] == 1 and metrics[("broker_up", "")] == 1
        assert metrics[("jobs_failed_total", group)] == 1
        assert metrics[("consumer_processes", group)] == 1
        assert metrics[("consumer_rss_bytes", group)] > 1024 * 1024
        assert metrics[("queue_ready_jobs", 'queue="work"')] == 0
        assert metrics[("failure_queue_jobs", 'queue="failed-jobs"')] == 1

        # and --output writes the same text to a file others can read
        out = tmp_path / "textfile" / "disqontrol.prom"
        out.parent.mkdir()
        assert ctl(daemon, "metrics", "--output", str(out)).returncode == 0
        assert parse(out.read_text())[("jobs_done_total", group)] == JOBS
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
        assert [p.name for p in out.parent.iterdir()] == ["disqontrol.prom"]  # no temporary left
    finally:
        daemon.stop()

    # When the master is gone, the metrics still come, and say so (what an alert needs)
    done = ctl(daemon, "metrics")
    assert done.returncode == 0, done.stderr
    down = parse(done.stdout)
    assert down[("master_up", "")] == 0 and down[("broker_up", "")] == 1
    assert ("jobs_done_total", 'group="work"') not in down
    assert down[("failure_queue_jobs", 'queue="failed-jobs"')] == 1


@pytest.mark.timeout(120)
def test_the_job_counters_keep_a_retired_consumers_jobs(tmp_path):
    # Given a consumer that did some jobs
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}}).start()
    try:
        daemon.add("work", range(JOBS))
        daemon.wait_runs(JOBS, timeout=60)
        [first] = daemon.consumer_pids()

        # When a reload replaces it (a new generation; the old consumer retires)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.consumer_pids() and first not in daemon.consumer_pids(), timeout=60,
                 message="the consumer of the new generation alone")

        # Then the group's counter still has its jobs: a counter must not go down
        done = ctl(daemon, "metrics")
        assert done.returncode == 0, done.stderr
        metrics = parse(done.stdout)
        assert metrics[("master_generation", "")] == 2
        assert metrics[("jobs_done_total", 'group="work"')] == JOBS
    finally:
        daemon.stop()


@pytest.mark.timeout(120)
def test_a_running_job_shows_its_age_for_a_stuck_job_alert(tmp_path):
    # Given a consumer running a job that takes long
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}}).start()
    try:
        daemon.add("work", [{"n": 1, "sleep": 60}])

        # When the metrics are asked for while it runs
        def aged():
            done = ctl(daemon, "metrics")
            assert done.returncode == 0, done.stderr
            age = parse(done.stdout)[("oldest_job_seconds", 'group="work"')]
            return age if age >= 2 else None
        # Then the group's oldest job age grows (a job past its timeout shows here first)
        assert wait_for(aged, timeout=60, interval=0.5, message="the running job's age in the metrics") >= 2
    finally:
        daemon.signal(signal.SIGQUIT)  # fast: the sleeping job need not finish
        daemon.stop()


LONG_JOB_AGE = 6.0  # s the long command job has run before a short one starts beside it


@pytest.mark.timeout(120)
def test_the_oldest_job_age_is_the_oldest_jobs_not_the_latest_started(tmp_path):
    # Given a consumer whose job window runs a long command job
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"cmd": {"worker": command_worker(tmp_path)}},
                    consumer_defaults={"job_batch": 4}).start()
    try:
        daemon.add("cmd", [{"sleep": True}])

        def oldest() -> float:
            done = ctl(daemon, "metrics")
            assert done.returncode == 0, done.stderr
            return parse(done.stdout)[("oldest_job_seconds", 'group="cmd"')]
        wait_for(lambda: oldest() >= LONG_JOB_AGE, timeout=60, interval=0.5, message="the long job's age")
        # When a short job starts and ends beside it
        daemon.add("cmd", ["short"])
        daemon.wait_runs(1)
        # Then the metric still reads the long job's age (it read the short
        # one's: a stuck job among others that come and go never showed)
        assert oldest() >= LONG_JOB_AGE
    finally:
        daemon.signal(signal.SIGQUIT)  # fast: the sleeping job need not finish
        daemon.stop()


LATENCY_SHOWN = 2.0  # s the second job must have waited before the check


@pytest.mark.timeout(120)
def test_a_queue_whose_consumer_does_not_keep_up_shows_its_latency(tmp_path):
    # Given one consumer taking one job at a time, busy with a long job, and a job waiting behind it
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}},
                    consumer_defaults={"job_batch": 1, "max_processes": 1}).start()
    try:
        daemon.add("work", [{"n": 1, "sleep": 60}])
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 1, timeout=30, message="the long job taken")
        daemon.add("work", [2])

        # When status and the metrics are asked for once it has waited a while
        def waited():
            status = ctl_json(daemon, "status")
            [row] = [q for q in status["queues"] if q["queue"] == "work"]
            return row if row["latency"] >= LATENCY_SHOWN else None
        row = wait_for(waited, timeout=60, interval=0.5, message="the waiting job's latency in status")

        # Then status --json, the status table and the metrics tell how long it has waited
        assert row["ready"] == 1 and row["latency"] < 60
        table = ctl(daemon, "status")
        assert "LATENCY" in table.stdout and re.search(r"\bwork\s+1\s+0\s+1\s+\d+\.\ds\s", table.stdout), table.stdout
        done = ctl(daemon, "metrics")
        assert done.returncode == 0, done.stderr
        assert parse(done.stdout)[("queue_latency_seconds", 'queue="work"')] >= LATENCY_SHOWN
    finally:
        daemon.signal(signal.SIGQUIT)  # fast: the sleeping job need not finish
        daemon.stop()


def test_metrics_into_a_directory_that_is_not_there_exits_2_naming_it(tmp_path):
    # Given the textfile collector's directory not made yet (no master needed)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}})
    target = tmp_path / "textfile_collector" / "disqontrol.prom"
    # When the metrics timer's command runs
    done = ctl(daemon, "metrics", "--output", str(target))
    # Then one line says which path and why, exit 2 (it was a traceback, exit 1, every 15 s)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"--output: cannot write {str(target)!r}" in done.stderr, done.stderr
    assert not target.parent.exists()
