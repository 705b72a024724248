"""The built-in scheduler in a real daemon: `disqontrolctl status` lists its
entries, a broken crontab refuses a reload (and --check), a fixed one is
taken and its entries replace the old ones."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.ctl_support import ctl_status
from tests.support.daemon import Daemon, python_worker


def with_scheduler(daemon: Daemon, crontab: str) -> None:
    """Add a scheduler section to the helper's config and write the crontab."""
    (daemon.dir / "crontab").write_text(crontab)
    data = yaml.safe_load(daemon.config_path.read_text())
    data["disqontrol"]["scheduler"] = {"crontab": "crontab", "missed_runs": "skip", "timezone": "UTC"}
    daemon.config_path.write_text(yaml.safe_dump(data))


def schedules(daemon: Daemon) -> list[tuple[str, str]]:
    return [(e["schedule"], e["queue"]) for e in ctl_status(daemon)["scheduler"]["entries"]]


def start_daemon(tmp_path: Path, crontab: str) -> Daemon:
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"tick": {"worker": python_worker()}})
    with_scheduler(daemon, crontab)
    daemon.start()
    daemon.wait_event("scheduler_started")
    return daemon


def test_status_lists_the_entries_with_their_next_run(tmp_path):
    # Given a daemon whose scheduler has one every-minute entry
    daemon = start_daemon(tmp_path, '* * * * * tick {"n": "a"}\n')
    try:
        # Then `disqontrolctl status` shows the entry with its next run
        status = ctl_status(daemon)["scheduler"]
        assert status["missed_runs"] == "skip" and status["timezone"] == "UTC"
        [entry] = status["entries"]
        assert (entry["schedule"], entry["queue"], entry["body"]) == ("* * * * *", "tick", {"n": "a"})
        assert entry["next_run"].endswith(":00+00:00") and entry["entry"].endswith("crontab:1")
    finally:
        daemon.stop()


def test_a_broken_crontab_refuses_the_reload_and_a_fixed_one_is_taken(tmp_path):
    # Given a daemon whose scheduler has one every-minute entry
    daemon = start_daemon(tmp_path, '* * * * * tick {"n": "a"}\n')
    try:
        # When the crontab breaks and SIGHUP arrives
        (tmp_path / "crontab").write_text('0 0 * * mon-xyz tick {"n": "b"}\n')
        daemon.signal(signal.SIGHUP)
        # Then the reload is refused naming the file and line; the scheduler keeps its entry
        [refused] = daemon.wait_event("reload_refused")
        assert "crontab:1:" in refused and "mon-xyz" in refused
        assert not daemon.events("scheduler_reloaded") and not daemon.events("reload_taken")
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
        # Then the scheduler takes the new entries
        [reloaded] = daemon.wait_event("scheduler_reloaded")
        assert "entries=1" in reloaded
    finally:
        daemon.stop()
