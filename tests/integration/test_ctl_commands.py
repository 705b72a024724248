"""disqontrolctl status / queues / reload / stop against a real daemon."""
from __future__ import annotations

import json
import socket

import pytest
import yaml

from disqontrol_client.job import Job
from tests.integration.ctl_support import ctl, ctl_json
from tests.support.daemon import Daemon, python_worker, running
from tests.support.procs import wait_for

SLOW_JOB_S = 4  # long enough to be seen in flight, short enough for a graceful stop
CONSUMERS = 2


YEARLY = "0 0 1 1 * work 99"  # a crontab entry that will not fire during a test


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}},
               consumer_defaults={"min_processes": CONSUMERS})
    # with the built-in scheduler, so that status shows its next runs
    (tmp_path / "crontab").write_text(YEARLY + "\n")
    config = yaml.safe_load(d.config_path.read_text())
    config["disqontrol"]["scheduler"] = {"crontab": "crontab"}
    d.config_path.write_text(yaml.safe_dump(config))
    d.start(consumers=CONSUMERS)
    yield d
    d.stop()


def _busy_with(daemon: Daemon, job_id: str):
    status = ctl_json(daemon, "status")
    return status if any(c["job"] == job_id for c in status["consumers"]) else None


def test_status_while_a_job_is_in_flight(daemon):
    # Given a slow job being run
    [job_id] = daemon.add("work", [{"n": 1, "sleep": SLOW_JOB_S}])
    # When status is asked (JSON) while it runs
    status = wait_for(lambda: _busy_with(daemon, job_id), timeout=30, message="the job in flight")
    # Then the master, both consumers and the queue are described
    master = status["master"]
    assert master["pid"] == daemon.pid and master["generation"] == 1
    assert master["config"] == str(daemon.config_path) and master["broker"].startswith("sqlite://")
    consumers = status["consumers"]
    assert sorted(c["pid"] for c in consumers) == sorted(daemon.consumer_pids())
    assert all(c["queues"] == ["work"] and c["rss_mib"] > 0 and c["restarts"] == 0 for c in consumers)
    [busy] = [c for c in consumers if c["job"] == job_id]
    assert busy["state"] == "busy" and busy["job_age"] >= 0
    [work] = [q for q in status["queues"] if q["queue"] == "work"]
    assert work == {"queue": "work", "ready": 0, "delayed": 0, "in_flight": 1, "latency": 0.0,
                    "failure_queue": "failed-jobs", "failed": 0}
    # And the scheduler's next run
    [entry] = status["scheduler"]["entries"]
    assert entry["queue"] == "work" and entry["body"] == 99 and "-01-01T00:00:00" in entry["next_run"]
    # And the table says the same for people
    table = ctl(daemon, "status")
    assert table.returncode == 0, table.stderr
    assert f"pid {daemon.pid}" in table.stdout and f"generation 1" in table.stdout
    assert f"busy {job_id} for" in table.stdout or "idle" in table.stdout  # the job may just have ended
    assert "IN FLIGHT" in table.stdout and "failed-jobs" in table.stdout
    assert "NEXT RUN" in table.stdout and "0 0 1 1 *" in table.stdout
    # And a malformed request gets an error reply, the master serving on
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect(str(daemon.dir / "run" / "disqontrol.sock"))
        raw.sendall(b'{"cmd": "status"\n')
        reply = json.loads(raw.makefile("rb").readline())
    assert reply["ok"] is False and "not JSON" in reply["error"]
    assert ctl_json(daemon, "status")["master"]["pid"] == daemon.pid


def test_queues_counts_ready_delayed_and_failed(daemon):
    # Given a delayed job on "work"
    daemon.broker.add("work", Job({"n": 2}, "work").encode(), delay=3600)
    # When the queues are listed
    data = ctl_json(daemon, "queues")
    # Then "work" shows it delayed, and the failure queue is listed empty
    [work] = [q for q in data["queues"] if q["queue"] == "work"]
    assert (work["ready"], work["delayed"], work["in_flight"]) == (0, 1, 0)
    assert data["failure_queues"] == [{"queue": "failed-jobs", "length": 0}]
    table = ctl(daemon, "queues")
    assert table.returncode == 0 and "work" in table.stdout and "FAILURE QUEUE" in table.stdout


def test_reload_taken_then_refused_with_the_reason(daemon):
    # When the same config is reloaded
    taken = ctl(daemon, "reload")
    # Then it is taken: a new generation
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.startswith("reload taken:") and "generation 2" in taken.stdout
    wait_for(lambda: ctl_json(daemon, "status")["master"]["generation"] == 2, timeout=30)
    # When a broken config is reloaded
    daemon.write_config({"work": {"worker": {"type": "inline_php"}}})
    refused = ctl(daemon, "reload")
    # Then it is refused naming the key, and the master keeps generation 2
    assert refused.returncode == 1
    assert refused.stdout.startswith("reload refused:") and "inline_php" in refused.stdout
    assert running(daemon.pid)
    # And status still shows the master (generation 2), but says the edited
    # config is broken (exit 2): the queue counts need a valid config
    status = ctl(daemon, "status", "--json")
    assert status.returncode == 2 and "inline_php" in status.stderr
    assert json.loads(status.stdout)["master"]["generation"] == 2


def test_graceful_stop_waits_for_the_job_in_hand(daemon):
    # Given a slow job in flight
    [job_id] = daemon.add("work", [{"n": 3, "sleep": SLOW_JOB_S}])
    wait_for(lambda: _busy_with(daemon, job_id), timeout=30, message="the job in flight")
    # When the master is stopped gracefully
    result = ctl(daemon, "stop")
    # Then ctl returns once the master is gone, after the job finished
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"master {daemon.pid} stopped"
    assert not running(daemon.pid)
    assert [body for body, _ in daemon.runs()] == ["3"]
    assert daemon.wait_exit(10) == 0
    assert not (daemon.dir / "run" / "disqontrol.sock").exists()
    # And ctl now says no master runs (exit 3)
    after = ctl(daemon, "status")
    assert after.returncode == 3 and "no master is running" in after.stderr


def test_fast_stop(daemon):
    [job_id] = daemon.add("work", [{"n": 4, "sleep": 60}])
    wait_for(lambda: _busy_with(daemon, job_id), timeout=30, message="the job in flight")
    result = ctl(daemon, "stop", "--fast")
    assert result.returncode == 0, result.stderr
    assert not running(daemon.pid)
    # The killed job is not lost: it is still in the broker, leased until its lease ends
    assert daemon.broker.show(job_id) is not None
