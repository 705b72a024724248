"""The master's operations API through the real control socket client."""
from __future__ import annotations

from tests.integration.ctl_support import ctl, ctl_status
from tests.support.daemon import Daemon, python_worker


def test_status_reload_and_stop_through_disqontrolctl(tmp_path):
    # Given a daemon with two consumers that has done a job
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": 2}).start(consumers=2)
    try:
        daemon.add("work", [1])
        daemon.wait_runs(1)
        daemon.wait_event("control_socket_open")

        # When status is asked
        status = ctl_status(daemon)

        # Then it shows the master and both consumers with their counters
        assert status["master"]["pid"] == daemon.pid
        assert status["master"]["generation"] == 1
        consumers = status["consumers"]
        assert sorted(c["pid"] for c in consumers) == sorted(daemon.consumer_pids())
        assert sum(c["done"] for c in consumers) == 1
        assert {c["state"] for c in consumers} == {"idle"}

        # When a reload is asked, it is taken and a new generation runs
        reloaded = ctl(daemon, "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "taken" in reloaded.stdout
        assert ctl_status(daemon)["master"]["generation"] == 2

        # When a stop is asked, the master is gone with exit code 0
        assert ctl(daemon, "stop").returncode == 0
        assert daemon.wait_exit(30) == 0
    finally:
        daemon.stop()
