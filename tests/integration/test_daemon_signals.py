"""The master's signals: graceful and fast stops, scaling up and down."""
from __future__ import annotations

import collections
import shutil
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


def test_sighup_during_a_graceful_stop_is_refused_out_loud_and_starts_nothing(tmp_path):
    # Given a consumer busy with a slow job
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}}).start()
    try:
        daemon.add("work", [{"n": 1, "sleep": SLOW_SECONDS}])
        wait_for(lambda: any(" busy " in daemon.title(p) for p in daemon.consumer_pids()),
                 timeout=30, message="a busy consumer")

        # When SIGHUP follows SIGTERM while the job finishes
        daemon.signal(signal.SIGTERM)
        daemon.wait_event("master_stopping")
        daemon.signal(signal.SIGHUP)

        # Then the reload is refused with its reason in the log (an operator
        # saw only "signal_received"), no consumer is started, the job ends
        [refused] = daemon.wait_event("reload_refused")
        assert "the master is stopping" in refused
        assert daemon.wait_exit(60) == 0
        assert len(daemon.events("consumer_started")) == 1
        assert [body for body, _ in daemon.runs()] == ["1"]
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


def test_sigquit_acks_the_batch_jobs_that_ended_and_hands_back_those_not_started(tmp_path):
    # Given an inline consumer holding a batch of 5: two ended, the third running, two not started
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker(), "max_retries": 0}},
                    consumer_defaults={"job_batch": 5}).start()
    try:
        ids = daemon.add("work", [1, 2, {"n": 3, "sleep": 60}, 4, 5])
        daemon.wait_runs(2)
        wait_for(lambda: any(f" busy {ids[2]}" in daemon.title(p) for p in daemon.consumer_pids()),
                 timeout=30, message="the consumer busy with the third job")

        # When the master gets SIGQUIT
        daemon.signal(signal.SIGQUIT)
        assert daemon.wait_exit(15) == 0

        # Then the two that succeeded are acked (not run again), the two not
        # started are ready again with no delivery held against them (with
        # max_retries 0, one would park them unrun), and only the job in hand
        # waits for its lease
        assert daemon.broker.show(ids[0]) is None and daemon.broker.show(ids[1]) is None
        for job_id in ids[3:]:
            shown = daemon.broker.show(job_id)
            assert shown["state"] == "ready" and shown["nacks"] == 1, shown
        assert daemon.broker.show(ids[2])["state"] == "leased"
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
        # (refused out loud: an operator saw only signal_received)
        [refused] = daemon.events("consumers_scale_refused")
        assert " processes=3 wanted=4 bounds=1..3" in refused
        for expected in (2, 1, 1):
            send(signal.SIGTTOU, expected)
        # Then the count stayed within 1..3 and the last consumer still works
        assert len(daemon.events("consumers_scaled")) == 4
        assert " processes=1 wanted=0 bounds=1..3" in daemon.events("consumers_scale_refused")[-1]
        daemon.add("work", [5])
        assert daemon.wait_runs(1)[0][0] == "5"
    finally:
        daemon.stop()


def test_sigusr1_reopens_the_log_file_after_rotation(tmp_path):
    # Given a running daemon whose log file was moved away (logrotate without copytruncate)
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}}).start()
    try:
        rotated = daemon.log_path.with_suffix(".log.1")
        daemon.log_path.rename(rotated)

        # When the master gets SIGUSR1 and a job runs afterwards
        daemon.signal(signal.SIGUSR1)
        daemon.wait_event("logs_reopened")
        daemon.add("work", [1])
        daemon.wait_runs(1)

        # Then the consumer's job line lands in the new file, not the rotated one
        [done] = daemon.wait_event("job_done")
        assert "queue=work" in done
        assert "event=job_done" not in rotated.read_text()
    finally:
        daemon.stop()


def test_sigusr1_after_the_log_directory_was_removed_makes_it_again(tmp_path):
    # Given a running daemon whose log directory was removed (a cleanup script, an rm -r)
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}}).start()
    try:
        shutil.rmtree(daemon.log_path.parent)

        # When the master gets SIGUSR1 (logrotate's postrotate) and a job runs afterwards
        daemon.signal(signal.SIGUSR1)
        daemon.wait_event("logs_reopened")  # raises if the master died
        daemon.add("work", [1])
        daemon.wait_runs(1)

        # Then the master and its consumer run on, logging into the file made again
        assert daemon.proc.poll() is None
        [done] = daemon.wait_event("job_done")
        assert "queue=work" in done
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()


def test_a_consumer_is_recycled_after_max_jobs_per_process_without_backoff(tmp_path):
    # Given a consumer that must be replaced after every 5 jobs
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}},
                    consumer_defaults={"max_jobs_per_process": 5, "job_batch": 1}).start()
    try:
        first = daemon.consumer_pids()

        # When 12 jobs are added
        daemon.add("work", range(12))

        # Then all run exactly once, by successive processes, none counted as a crash
        runs = daemon.wait_runs(12)
        assert sorted(int(b) for b, _ in runs) == list(range(12))
        daemon.wait_event("consumer_recycled", 2)
        wait_for(lambda: daemon.consumer_pids() and daemon.consumer_pids() != first, timeout=30,
                 message="a fresh consumer")
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()
