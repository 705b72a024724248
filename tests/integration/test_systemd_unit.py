"""The shipped unit files: systemd's own verifier accepts them, the daemon's
keeps the settings the master relies on, and the metrics timer's service
writes its file where it may."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from disqontrol_client import exitcodes
from disqontrold.broker_check import CHECK_TIMEOUT
from disqontrold.ctl import RELOAD_REPLY_TIMEOUT
from disqontrold.reload import LOAD_TIMEOUT
from disqontrold.systemd import READY_WAIT_LIMIT

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "disqontrold.service"
INSTALLED_BINARY = "/usr/local/bin/disqontrold"
INSTALLED_CTL = "/usr/local/bin/disqontrolctl"


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
    for binary in (INSTALLED_BINARY, INSTALLED_CTL):
        text = text.replace(binary + " ", (shutil.which("true") or "/bin/true") + " ")
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "disqontrold.service" not in result.stderr, result.stderr  # no warning about our unit


def test_unit_keeps_the_contract_of_the_master():
    service = _service_section()
    assert service["Type"] == "notify"
    # a reload through the control socket: a refused config fails `systemctl reload`
    assert service["ExecReload"].split() == [INSTALLED_CTL, "--config", "/etc/disqontrol/disqontrol.yml", "reload"]
    assert service["ExecStart"].split()[1:] == ["--config", "/etc/disqontrol/disqontrol.yml"]
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    # A config error is not restarted every RestartSec for ever (too slow for StartLimitBurst).
    assert str(exitcodes.USAGE) in service["RestartPreventExitStatus"].split()
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
    # nor the ExecReload (`disqontrolctl reload`, which waits for the master's check)
    assert int(_service_section()["TimeoutStartSec"]) > RELOAD_REPLY_TIMEOUT
    # and `disqontrolctl reload` waits for the master's checks of both the config and the new broker
    assert RELOAD_REPLY_TIMEOUT > LOAD_TIMEOUT + CHECK_TIMEOUT


METRICS_UNIT = UNIT.with_name("disqontrol-metrics.service")
METRICS_TIMER = UNIT.with_name("disqontrol-metrics.timer")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def test_metrics_units_write_the_textfile_where_they_may_as_the_daemon_user():
    service = _unit(METRICS_UNIT)["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] == service["Group"] == "disqontrol"  # the control socket is the daemon user's
    command = service["ExecStart"].split()
    assert command[:3] == ["/usr/local/bin/disqontrolctl", "metrics", "--output"]
    writable = service["ReadWritePaths"].split()
    assert str(Path(command[3]).parent) in writable  # must exist: no "-"
    assert "-/var/lib/disqontrol" in writable  # a sqlite reader in WAL mode writes the -shm file, if sqlite
    timer = _unit(METRICS_TIMER)
    assert 0 < int(timer["Timer"]["OnUnitActiveSec"]) <= 60
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize("unit", [METRICS_UNIT, METRICS_TIMER], ids=lambda p: p.name)
def test_systemd_analyze_verify_accepts_the_metrics_units(tmp_path, unit):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    for source in (METRICS_UNIT, METRICS_TIMER):  # a timer is verified beside its service
        text = source.read_text().replace("/usr/local/bin/disqontrolctl", shutil.which("true") or "/bin/true")
        (tmp_path / source.name).write_text(text)
    result = subprocess.run([analyze, "verify", str(tmp_path / unit.name)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr
