"""SIGHUP reloads: a new generation of consumers takes over without losing
or repeating a job; a broken config is refused and the old one runs on."""
from __future__ import annotations

import collections
import signal

import pytest

from tests.integration.ctl_support import ctl_json
from tests.integration.test_daemon_check_crash import write_too_deep_config
from tests.support.cgroups import UNLIMITED, needs_pids_cgroup, no_more_processes
from tests.support.daemon import Daemon, command_worker, python_worker
from tests.support.procs import wait_for

JOBS = 1000


def sqlite(tmp_path) -> str:
    return f"sqlite://{tmp_path}/jobs.db"


@pytest.mark.timeout(240)
def test_sighup_under_load_loses_no_job_and_runs_none_twice(tmp_path):
    # Given a daemon working through 1,000 jobs (inline and command)
    queues = {"inline": {"worker": python_worker()}, "cmd": {"worker": command_worker(tmp_path)}}
    daemon = Daemon(tmp_path, sqlite(tmp_path), queues, consumer_defaults={"job_batch": 5}).start(consumers=2)
    try:
        daemon.add("inline", range(0, JOBS // 2))
        daemon.add("cmd", range(JOBS // 2, JOBS))
        wait_for(lambda: len(daemon.runs()) >= 50, timeout=60, message="jobs flowing")
        first_generation = set(daemon.consumer_pids())

        # When the config is reloaded twice while jobs flow, the second time with 2 processes a group
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken", 1)
        daemon.write_config(queues, consumer_defaults={"job_batch": 5, "min_processes": 2})
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken", 2)

        # Then every job runs exactly once
        runs = daemon.wait_runs(JOBS, timeout=180)
        counts = collections.Counter(body for body, _ in runs)
        assert sorted(int(b) for b in counts) == list(range(JOBS))
        assert max(counts.values()) == 1
        # and the old consumers were replaced by the new generation's 4
        wait_for(lambda: len(daemon.consumer_pids()) == 4, timeout=60, message="4 new consumers")
        assert not first_generation & set(daemon.consumer_pids())
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()


def test_broken_config_on_sighup_keeps_the_old_consumers(tmp_path):
    # Given a running daemon
    queues = {"work": {"worker": python_worker()}}
    daemon = Daemon(tmp_path, sqlite(tmp_path), queues).start()
    try:
        before = daemon.consumer_pids()

        # When its config is broken and SIGHUP arrives
        daemon.write_config({"work": {"worker": {"type": "inline_php"}}})
        daemon.signal(signal.SIGHUP)

        # Then the reload is refused with the key path in the log
        [refused] = daemon.wait_event("reload_refused")
        assert "inline_php" in refused and "worker.type" in refused
        # and the old consumer runs on and still takes jobs
        assert_old_consumers_run_on(daemon, before)
    finally:
        daemon.stop()


def test_sighup_with_a_config_the_loader_crashes_on_is_refused_naming_the_error(tmp_path):
    # Given a running daemon
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}}).start()
    try:
        before = daemon.consumer_pids()

        # When its config is replaced by one the loader crashes on (RecursionError), and SIGHUP arrives
        write_too_deep_config(daemon.config_path)
        daemon.signal(signal.SIGHUP)

        # Then the reload is refused, the log naming the real error and its traceback
        [refused] = daemon.wait_event("reload_refused")
        assert "RecursionError" in refused and "validating the config" in refused
        [crashed] = daemon.wait_event("config_check_crashed")
        assert "Traceback (most recent call last)" in crashed and "load_config" in crashed
        # and the old consumer runs on and still takes jobs
        assert_old_consumers_run_on(daemon, before)
    finally:
        daemon.stop()


def assert_old_consumers_run_on(daemon: Daemon, before: list[int]) -> None:
    """After a refused reload: the same consumers, still taking jobs."""
    assert daemon.consumer_pids() == before
    daemon.add("work", [1])
    assert daemon.wait_runs(1)[0][0] == "1"
    assert not daemon.events("reload_taken")


def test_reload_keeps_the_process_count_of_unchanged_groups_within_their_new_bounds(tmp_path):
    # Given three groups of 1..3 processes (no autoscaling), each raised to 2 by SIGTTIN
    queues = {name: {"worker": python_worker()} for name in ("a", "b", "c", "d")}
    groups = [{"queues": ["a"]}, {"queues": ["b"]}, {"queues": ["c"]}, {"queues": ["d"], "max_processes": 1}]
    defaults = {"min_processes": 1, "max_processes": 3, "autoscale": False}
    daemon = Daemon(tmp_path, sqlite(tmp_path), queues, consumers=groups, consumer_defaults=defaults).start(4)
    try:
        daemon.signal(signal.SIGTTIN)
        wait_for(lambda: _live_groups(daemon) == {(1, "a"): 2, (1, "b"): 2, (1, "c"): 2, (1, "d"): 1},
                 timeout=60, message="2 processes for a, b and c")

        # When the config is reloaded with b allowed only 1 and c merged with d into a new group
        daemon.write_config(queues, consumers=[{"queues": ["a"]}, {"queues": ["b"], "max_processes": 1},
                                               {"queues": ["c", "d"]}], consumer_defaults=defaults)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")

        # Then a keeps its 2, b is clamped to 1, the new group starts at its minimum
        wait_for(lambda: _live_groups(daemon) == {(2, "a"): 2, (2, "b"): 1, (2, "c+d"): 1}, timeout=60,
                 message="the new generation's process counts, the old one gone")
        assert not daemon.events("consumer_crashed")
    finally:
        daemon.stop()


def _live_groups(daemon: Daemon) -> dict[tuple[int, str], int]:
    """Consumers per (generation, group) as `disqontrolctl status` shows them."""
    status = ctl_json(daemon, "status")
    return collections.Counter((c["generation"], c["group"]) for c in status["consumers"])



@needs_pids_cgroup
def test_sighup_while_no_process_can_be_forked_is_refused_and_the_daemon_runs_on(tmp_path):
    # Given a running daemon in a pids cgroup (systemd's TasksMax) that it has filled
    daemon = Daemon(tmp_path, sqlite(tmp_path), {"work": {"worker": python_worker()}}).start()
    try:
        with no_more_processes([daemon.pid, *daemon.consumer_pids()], tmp_path.name) as group:
            # When it is asked to reload
            daemon.signal(signal.SIGHUP)

            # Then the reload is refused naming the fork that failed, and the daemon runs on
            [refused] = daemon.wait_event("reload_refused")
            assert "fork" in refused
            (group / "pids.max").write_text(UNLIMITED)
            assert_old_consumers_run_on(daemon, daemon.consumer_pids())
    finally:
        daemon.stop()
