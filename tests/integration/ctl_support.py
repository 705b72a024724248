"""Running `disqontrolctl` as a user would, against a test Daemon."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support.daemon import Daemon

CTL = [sys.executable, "-m", "disqontrold.ctl"]
CTL_TIMEOUT = 90.0  # s: `stop` waits for a graceful stop on a loaded machine


def ctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        CTL + ["--config", str(daemon.config_path), *args],
        capture_output=True, text=True, timeout=CTL_TIMEOUT, cwd=daemon.dir,
    )


def ctl_json(daemon: Daemon, *args: str) -> Any:
    result = ctl(daemon, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ctl_status(daemon: Daemon) -> dict[str, Any]:
    """`disqontrolctl status --json`, which must succeed."""
    return ctl_json(daemon, "status")
