"""The shipped unit file: systemd's own verifier accepts it, and it keeps the
settings the master relies on."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from disqontrold.reload import LOAD_TIMEOUT
from disqontrold.systemd import READY_WAIT_LIMIT

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "disqontrold.service"
INSTALLED_BINARY = "/usr/local/bin/disqontrold"


def _service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser["Service"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    # The real ExecStart names the installed binary, absent on a test machine:
    # verify a copy pointing at a binary that exists, so every other line is checked.
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, shutil.which("true") or "/bin/true"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "disqontrold.service" not in result.stderr, result.stderr  # no warning about our unit


def test_unit_keeps_the_contract_of_the_master():
    service = _service_section()
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["RuntimeDirectory"] == "disqontrol"
    assert service["User"] == service["Group"] == "disqontrol"
    # A graceful stop waits for the default job_process_timeout (600 s).
    assert int(service["TimeoutStopSec"]) > 600
    assert int(service["WatchdogSec"]) > 0
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[key] == "yes"
    assert service["ProtectSystem"] == "strict"
    writable = service["ReadWritePaths"].split()
    assert {"/var/log/disqontrol", "/run/disqontrol", "/var/lib/disqontrol"} <= set(writable)


def test_start_timeout_outlasts_the_slowest_start_the_master_allows():
    # systemd must not kill a start that is still checking a slow config
    # (the loader child may take LOAD_TIMEOUT) or waiting for its consumers.
    assert int(_service_section()["TimeoutStartSec"]) > LOAD_TIMEOUT + READY_WAIT_LIMIT
