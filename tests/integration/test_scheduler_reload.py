"""The built-in scheduler in a real daemon: `disqontrolctl status` lists its
entries, a broken crontab refuses a reload (and --check), a fixed one is
taken and its entries replace the old ones."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

REPO = Path(__file__).resolve().parents[2]


def with_scheduler(daemon: Daemon, crontab: str) -> None:
    """Add a scheduler section to the helper's config and write the crontab."""
    (daemon.dir / "crontab").write_text(crontab)
    data = yaml.safe_load(daemon.config_path.read_text())
    data["disqontrol"]["scheduler"] = {"crontab": "crontab", "missed_runs": "skip", "timezone": "UTC"}
    daemon.config_path.write_text(yaml.safe_dump(data))


def ctl_status(daemon: Daemon) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "disqontrold.ctl", "--config", str(daemon.config_path), "status", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def schedules(daemon: Daemon) -> list[tuple[str, str]]:
    return [(e["schedule"], e["queue"]) for e in ctl_status(daemon)["scheduler"]["entries"]]


def test_status_lists_entries_and_a_broken_crontab_refuses_the_reload(tmp_path):
    # Given a daemon whose scheduler has one every-minute entry
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"tick": {"worker": python_worker()}})
    with_scheduler(daemon, '* * * * * tick {"n": "a"}\n')
    daemon.start()
    try:
        daemon.wait_event("scheduler_started")
        # Then status shows the entry with its next run
        [entry] = ctl_status(daemon)["scheduler"]["entries"]
        assert (entry["schedule"], entry["queue"], entry["body"]) == ("* * * * *", "tick", {"n": "a"})
        assert entry["next_run"].endswith(":00+00:00")

        # When the crontab breaks and SIGHUP arrives
        (tmp_path / "crontab").write_text('0 0 * * mon-xyz tick {"n": "b"}\n')
        daemon.signal(signal.SIGHUP)
        # Then the reload is refused naming the file and line, the entry stays
        [refused] = daemon.wait_event("reload_refused")
        assert "crontab:1:" in refused and "mon-xyz" in refused
        assert schedules(daemon) == [("* * * * *", "tick")]
        # And --check refuses the same crontab with exit code 2
        check = subprocess.run(
            [sys.executable, "-m", "disqontrold.cli", "--config", str(daemon.config_path), "--check"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )
        assert check.returncode == 2 and "mon-xyz" in check.stderr

        # When it is fixed with another entry and SIGHUP arrives
        (tmp_path / "crontab").write_text('@hourly tick {"n": "c"}\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")
        # Then the scheduler runs the new entry only
        wait_for(lambda: schedules(daemon) == [("@hourly", "tick")], timeout=30, interval=0.2,
                 message="the reloaded crontab in status")
        daemon.wait_event("scheduler_reloaded")
    finally:
        daemon.stop()
