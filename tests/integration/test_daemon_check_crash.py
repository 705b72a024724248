"""An unexpected error while loading a config (here a real one: YAML nested
deeper than the parser's recursion limit) is shown as itself at --check,
never as a raw exit status of the loader child (SIGHUP: test_daemon_reload)."""
from __future__ import annotations

import subprocess

from tests.support.daemon import DAEMON

#: Nesting that makes PyYAML's recursive composer raise RecursionError.
NESTING = 3000
CHECK_TIMEOUT = 60.0  # s: --check forks a loader child; a loaded machine is slow
EXIT_CONFIG_ERROR = 2


def write_too_deep_config(path) -> None:
    path.write_text("disqontrol: " + "[" * NESTING + "]" * NESTING + "\n")


def test_check_shows_the_loaders_real_error_and_exits_2(tmp_path):
    config = tmp_path / "disqontrol.yml"
    write_too_deep_config(config)
    check = subprocess.run(DAEMON + ["--config", str(config), "--check"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=CHECK_TIMEOUT)
    assert check.returncode == EXIT_CONFIG_ERROR, check.stderr
    # The user sees what failed, what was being done and where, not "status 17920"
    assert "validating the config" in check.stderr
    assert "the checker raised RecursionError: maximum recursion depth exceeded" in check.stderr
    assert "(at File " in check.stderr
    assert "exited with status" not in check.stderr

