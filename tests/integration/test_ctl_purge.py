"""disqontrolctl failed purge asks before it deletes: a typed "y" on a
terminal, or --yes in a script; a purge cannot be undone."""
from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest
import yaml

from disqontrol_client.brokers import open_broker
from disqontrol_client.job import LAST_ERROR, ORIGINAL_QUEUE, encode_envelope, fresh_metadata
from tests.integration.ctl_support import CTL, CTL_TIMEOUT
from tests.support.procs import wait_for

FAILURE_QUEUE = "failed-jobs"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose failure queue holds three parked jobs (as the daemon parks them)."""
    path = tmp_path / "disqontrol.yml"
    path.write_text(yaml.safe_dump({"disqontrol": {
        "broker": f"sqlite://{tmp_path}/jobs.db", "log_dir": "log", "run_dir": "run",
        "queues": {"q": {"worker": {"type": "command", "command": "/bin/true"}}},
    }}))
    broker = open_broker(f"sqlite://{tmp_path}/jobs.db")
    try:
        for n in range(3):
            metadata = {**fresh_metadata(), ORIGINAL_QUEUE: "q", LAST_ERROR: {"message": "exit code 3"}}
            broker.add(FAILURE_QUEUE, encode_envelope(n, metadata))
    finally:
        broker.close()
    return path


def parked(config: Path) -> int:
    broker = open_broker(f"sqlite://{config.parent}/jobs.db")
    try:
        return broker.length(FAILURE_QUEUE)
    finally:
        broker.close()


def purge(config: Path, *args: str) -> subprocess.CompletedProcess:
    """`failed purge` from a script: stdin is not a terminal."""
    return subprocess.run(CTL + ["--config", str(config), "failed", "purge", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=CTL_TIMEOUT)


def purge_on_terminal(config: Path, answer: str) -> tuple[int, str]:
    """`failed purge` with a terminal as stdin, typing ``answer`` once asked;
    (exit code, what the terminal showed)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(CTL + ["--config", str(config), "failed", "purge"], stdin=terminal,
                            stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    shown = b""
    try:
        def asked() -> bool:
            nonlocal shown
            shown += os.read(controller, 4096)
            return b"[y/N]" in shown
        wait_for(asked, timeout=CTL_TIMEOUT, interval=0.01, message="the purge prompt")
        os.write(controller, answer.encode() + b"\n")
        code = proc.wait(timeout=CTL_TIMEOUT)
        while True:  # the rest of the output (EIO once the process has closed the terminal)
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    return code, shown.decode(errors="replace")


def test_a_purge_from_a_script_without_yes_deletes_nothing_and_names_the_flag(config):
    # When a script purges without --yes
    result = purge(config)
    # Then it exits 2, naming --yes and what it would delete, and every job is still there
    assert result.returncode == 2, result
    assert "--yes" in result.stderr and "3 job(s)" in result.stderr and FAILURE_QUEUE in result.stderr
    assert parked(config) == 3


def test_a_purge_with_yes_deletes_and_says_how_many(config):
    result = purge(config, "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3 job(s) purged"
    assert parked(config) == 0


def test_a_purge_on_a_terminal_asks_and_deletes_only_on_yes(config):
    # When the operator answers no (the default) to the prompt
    code, shown = purge_on_terminal(config, "")
    # Then the prompt named the count and the failure queue, and nothing was deleted
    assert f"Delete 3 job(s) from {FAILURE_QUEUE}? [y/N]" in shown
    assert code == 1 and "nothing deleted" in shown
    assert parked(config) == 3

    # When the operator answers y
    code, shown = purge_on_terminal(config, "y")
    # Then the jobs are gone and the count is printed
    assert code == 0 and "3 job(s) purged" in shown, shown
    assert parked(config) == 0


def test_purge_help_says_it_asks_and_ends_with_the_exit_codes():
    result = subprocess.run(CTL + ["failed", "purge", "--help"], capture_output=True, text=True,
                            timeout=CTL_TIMEOUT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--yes" in text and "[y/N]" in text
    assert text.rstrip(".").endswith("3 the broker cannot be reached")


def test_a_purge_with_stdin_closed_needs_yes_too(config):
    # When a script runs the purge with its stdin closed (`<&-`: Python's sys.stdin is None)
    result = subprocess.run(["/bin/sh", "-c", 'exec "$@" <&-', "sh", *CTL, "--config", str(config), "failed", "purge"],
                            capture_output=True, text=True, timeout=CTL_TIMEOUT)
    # Then it is the same usage error, not a traceback, and nothing is deleted
    assert result.returncode == 2 and "--yes" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert parked(config) == 3
