"""Deploys: new worker code on disk plus a reload (SIGHUP) must run the new
code, the way releases are usually laid out (``current -> releases/N``)."""
from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

from tests.support.daemon import Daemon
from tests.support.procs import wait_for

# A bootstrap whose worker records which release it came from.
BOOTSTRAP = '''
import os

RELEASE = {release!r}

def make(environment, name):
    def run(job):
        with open(os.environ["DQ_OUT"], "a") as out:
            out.write(f"{{job.body}}-{{RELEASE}} 0\\n")
    return run

WORKERS = {{"release": make}}
'''


def _release(root: Path, name: str) -> Path:
    directory = root / "releases" / name
    directory.mkdir(parents=True)
    (directory / "disqontrol_bootstrap.py").write_text(textwrap.dedent(BOOTSTRAP.format(release=name)))
    return directory


def _point_current(root: Path, release: Path) -> None:
    """Swap ``current`` atomically, as deploy tools do (symlink + rename)."""
    staged = root / "current.new"
    staged.symlink_to(release)
    os.replace(staged, root / "current")


def test_sighup_after_a_symlink_swapped_release_runs_the_new_bootstrap(tmp_path):
    # Given a daemon whose --bootstrap is under current -> releases/1
    _point_current(tmp_path, _release(tmp_path, "1"))
    queues = {"work": {"worker": {"type": "inline_python_worker", "name": "release"}}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues)
    daemon.start(args=["--bootstrap", str(tmp_path / "current" / "disqontrol_bootstrap.py")])
    try:
        daemon.add("work", ["a"])
        assert daemon.wait_runs(1)[0][0] == "a-1"

        # When release 2 is deployed (current -> releases/2) and the daemon reloaded
        _point_current(tmp_path, _release(tmp_path, "2"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")
        daemon.wait_event("consumer_ready", 2)
        wait_for(lambda: len(daemon.consumer_pids()) == 1, timeout=60, message="the old consumer gone")

        # Then the new generation runs release 2's code
        daemon.add("work", ["b"])
        assert daemon.wait_runs(2)[1][0] == "b-2"
    finally:
        daemon.stop()
