"""disqontrolctl against a stand-in master process: a real process serving the
real ControlServer with master_handlers, whose reload / stop are scripted.
(The full daemon is exercised in tests/integration/test_ctl_*.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from disqontrold import ctl, ctl_client
from disqontrold.reload import LOAD_TIMEOUT
from tests.support.procs import stop_process, wait_for

STAND_IN = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from disqontrold.control import ControlServer, master_handlers

    class StandIn:
        stopping = False
        def status(self):
            return {"master": {"pid": os.getpid(), "uptime": 5, "config": None, "generation": 1}, "consumers": []}
        def request_reload(self):
            return (sys.argv[2] == "take", "config unchanged" if sys.argv[2] == "take" else "queues.x.worker.type: bad")
        def request_stop(self, fast):
            self.stopping = True

    master = StandIn()
    server = ControlServer(Path(sys.argv[1]), master_handlers(master)).open()
    while not master.stopping:
        server.process(timeout=0.1)
    server.process(timeout=0.1)  # flush the stop reply
    server.close()
    """
)


@pytest.fixture
def stand_in(tmp_path, request):
    sock = tmp_path / "disqontrol.sock"
    proc = subprocess.Popen([sys.executable, "-c", STAND_IN, str(sock), request.param], start_new_session=True)
    wait_for(sock.exists, timeout=20, message="the stand-in master's socket")
    yield sock, proc
    stop_process(proc)


def _ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "disqontrold.ctl", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("stand_in", ["take"], indirect=True)
def test_reload_taken_exits_0(stand_in):
    result = _ctl("--socket", str(stand_in[0]), "reload")
    assert result.returncode == 0 and result.stdout.strip() == "reload taken: config unchanged"


@pytest.mark.parametrize("stand_in", ["refuse"], indirect=True)
def test_reload_refused_exits_1_with_the_reason(stand_in):
    result = _ctl("--socket", str(stand_in[0]), "reload")
    assert result.returncode == 1 and result.stdout.strip() == "reload refused: queues.x.worker.type: bad"


@pytest.mark.parametrize("stand_in", ["take"], indirect=True)
def test_reload_waits_as_long_as_the_master_may_check_the_config(stand_in, monkeypatch, capsys):
    # `systemctl reload` runs `disqontrolctl reload`: the master answers once
    # it has checked the new config (importing the workers may take up to
    # LOAD_TIMEOUT); a shorter wait failed the reload while it went on
    asked: list[float] = []

    def timed_request(path, cmd, timeout=ctl_client.REPLY_TIMEOUT, **fields):
        asked.append(timeout)
        return ctl_client.request(path, cmd, timeout, **fields)

    monkeypatch.setattr(ctl, "request", timed_request)
    assert ctl.main(["--socket", str(stand_in[0]), "reload"]) == 0
    assert capsys.readouterr().out.strip() == "reload taken: config unchanged"
    assert asked and asked[0] > LOAD_TIMEOUT, asked


@pytest.mark.parametrize("stand_in", ["take"], indirect=True)
def test_stop_waits_until_the_master_is_gone(stand_in):
    sock, proc = stand_in
    result = _ctl("--socket", str(sock), "stop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"master {proc.pid} stopped"
    assert proc.poll() is not None or wait_for(lambda: proc.poll() is not None, timeout=5)
    assert not Path(sock).exists()


def test_no_master_exits_3_naming_the_socket(tmp_path):
    sock = tmp_path / "disqontrol.sock"
    result = _ctl("--socket", str(sock), "status")
    assert result.returncode == 3
    assert str(sock) in result.stderr and "no master is running" in result.stderr
    # and says what to do about it, on the same one line
    [line] = result.stderr.splitlines()
    assert "start it (systemctl start disqontrold" in line and "--socket" in line


def test_usage_error_exits_2():
    assert _ctl("failed", "frobnicate").returncode == 2
    assert _ctl("stop", "--fast=maybe").returncode == 2
