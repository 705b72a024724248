"""The master's signals: graceful and fast stops, scaling up and down."""
from __future__ import annotations

import collections
import signal

from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

SLOW_JOBS = 6
SLOW_SECONDS = 2


def sqlite(tmp_path) -> str:
    return f"sqlite://{tmp_path}/jobs.db"


def test_sigterm_lets_jobs_in_hand_finish_and_exits_0(tmp_path):
    # Given two consumers each busy with a slow job, and more slow jobs waiting
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": 2, "job_batch": 1}).start(consumers=2)
    try:
        daemon.add("work", [{"n": n, "sleep": SLOW_SECONDS} for n in range(SLOW_JOBS)])
        wait_for(lambda: sum(" busy " in daemon.title(p) for p in daemon.consumer_pids()) == 2,
                 timeout=30, message="two busy consumers")

        # When the master gets SIGTERM
        daemon.signal(signal.SIGTERM)

        # Then it exits 0 once the jobs in hand are done
        assert daemon.wait_exit(60) == 0
        done = collections.Counter(body for body, _ in daemon.runs())
        assert len(done) >= 2 and max(done.values()) == 1
        # and nothing is lost: the rest wait in the queue, none is left leased
        [stats] = daemon.broker.stats(["work"])
        assert stats.in_flight == 0
        assert len(done) + stats.ready == SLOW_JOBS
        assert daemon.events("master_stopped")
    finally:
        daemon.stop()


def test_sigquit_stops_fast_and_the_job_comes_back(tmp_path):
    # Given a consumer busy with a long job
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}}).start()
    try:
        [job_id] = daemon.add("work", [{"n": 0, "sleep": 60}])
        wait_for(lambda: any(" busy " in daemon.title(p) for p in daemon.consumer_pids()),
                 timeout=30, message="a busy consumer")

        # When the master gets SIGQUIT
        daemon.signal(signal.SIGQUIT)

        # Then it exits 0 without waiting for the job, which stays in the broker
        assert daemon.wait_exit(15) == 0
        assert daemon.runs() == []
        assert daemon.broker.show(job_id) is not None
    finally:
        daemon.stop()


def test_sigttin_and_sigttou_change_the_process_count_within_bounds(tmp_path):
    # Given a group allowed 1..3 processes, running 1
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": 1, "max_processes": 3}).start()
    try:
        def send(signum: int, expected: int) -> None:
            handled = len(daemon.events("signal_received"))
            daemon.signal(signum)
            wait_for(lambda: len(daemon.events("signal_received")) > handled, timeout=10,
                     message="the master to handle the signal")
            wait_for(lambda: len(daemon.consumer_pids()) == expected, timeout=30,
                     message=f"{expected} consumers")

        # When SIGTTIN comes three times, then SIGTTOU three times
        for expected in (2, 3, 3):
            send(signal.SIGTTIN, expected)
        assert len(daemon.events("consumers_scaled")) == 2  # the third one was past max
        for expected in (2, 1, 1):
            send(signal.SIGTTOU, expected)
        # Then the count stayed within 1..3 and the last consumer still works
        assert len(daemon.events("consumers_scaled")) == 4
        daemon.add("work", [5])
        assert daemon.wait_runs(1)[0][0] == "5"
    finally:
        daemon.stop()
