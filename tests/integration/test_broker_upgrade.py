"""Upgrades with jobs waiting (docs/brokers.md, Upgrades and rollbacks):
producers and consumers opening a file of the release before versions at
once upgrade it once and lose nothing; a daemon started on such a file
upgrades it before forking and runs its jobs; a file of a newer release
stops the daemon's start and `disqontrol addjob` with exit code 2."""
from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers import sqlite_schema
from tests.integration.ctl_support import ctl
from tests.support.daemon import DAEMON, Daemon, python_worker
from tests.support.procs import wait_for
from tests.unit.test_sqlite_schema import dump, header, stamp_newer, v1_copy

ADDJOB = [str(Path(sys.executable).parent / "disqontrol"), "addjob"]
SCHEDULER = [sys.executable, "-m", "disqontrold.cli", "scheduler"]
OPENERS = 3  # producers, and as many consumers
EXIT_CONFIG = 2
EXIT_REFUSED = 1
NOTE_TIMEOUT = 30.0  # s: a note to systemd is sent within seconds (systemd.EXTEND_FIRST)
# One process: wait for the go file, open the broker, add a job or take one.
OPENER = textwrap.dedent("""
    import logging, os, sys, time
    from disqontrol_client.brokers import open_broker
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url, role, go = sys.argv[1:]
    while not os.path.exists(go):
        time.sleep(0.001)
    broker = open_broker(url)
    if role == "producer":
        broker.add("new", b"added")
    else:
        [job] = broker.reserve(["waiting"], timeout=5)
        broker.ack([job.id])
    broker.close()
""")
# Every v1 job the daemon runs (the failure queue's is not consumed): n of its body.
V1_RUNS = {"0", "1", "2", "3", "4", "5", "6", "7", "9"}
V1_QUEUES = ("waiting", "delayed", "leased", "redelivered", "nacked", "scheduled", "acked")


def _newer_file_and_daemon(tmp_path: Path) -> tuple[Path, Daemon]:
    """A file a newer release wrote, and a daemon (not started) configured on it."""
    path = tmp_path / "jobs.db"
    open_broker(f"sqlite://{path}").close()
    stamp_newer(path)
    return path, Daemon(tmp_path, f"sqlite://{path}", {"work": {"worker": python_worker()}})


def test_producers_and_consumers_opening_an_old_file_at_once_upgrade_it_once(tmp_path: Path) -> None:
    # Given a file of the release before versions, and producers and consumers starting together
    path = v1_copy(tmp_path)
    jobs, claims, _ = dump(path)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, f"sqlite://{path}", role, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for role in ("producer", "consumer") * OPENERS]
    try:
        # When they all open it at the same moment
        go.touch()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # Then each one worked, and the file was upgraded exactly once
    assert [proc.returncode for proc in procs] == [0] * len(procs), outputs
    assert sum(out.count("event=broker_data_upgraded") for out in outputs) == 1, outputs
    assert header(path)[:2] == (sqlite_schema.APPLICATION_ID, sqlite_schema.VERSION)
    # And nothing was lost: the added jobs, the waiting ones not taken, every other job as it was
    with open_broker(f"sqlite://{path}") as broker:
        assert broker.length("new") == OPENERS
        assert broker.length("waiting") == 4 - OPENERS
    after, claims_after, _ = dump(path)
    assert [row for row in after if row[1] not in ("new", "waiting")] == [
        row for row in jobs if row[1] != "waiting"]
    assert claims_after == claims


def test_a_daemon_started_on_an_old_file_upgrades_it_and_runs_its_jobs(tmp_path: Path) -> None:
    # Given a file of the release before versions, with jobs in every state
    path = v1_copy(tmp_path)
    daemon = Daemon(tmp_path, f"sqlite://{path}", {q: {"worker": python_worker()} for q in V1_QUEUES})
    # When the daemon starts on it
    daemon.start()
    try:
        # Then its master upgraded the file before forking any consumer
        [upgraded] = daemon.events("broker_data_upgraded")
        assert f"pid={daemon.pid} " in upgraded and "from_version=1" in upgraded
        assert daemon.log().index("event=broker_data_upgraded") < daemon.log().index("event=consumer_ready")
        # And every job runs: waiting, delayed, leased and redelivered ones once their lease lapses
        runs = wait_for(lambda: {body for body, _ in daemon.runs()} >= V1_RUNS and daemon.runs(), timeout=60,
                        interval=0.1, message="every job of the old file run")
        assert sorted(body for body, _ in runs) == sorted(V1_RUNS)
        # And the failure queue's job is still there, with its last error
        [(body, metadata)] = daemon.failed_jobs()
        assert body == 8 and metadata["last-error"]["message"] == "exit code 3: boom"
    finally:
        daemon.stop()


def test_a_daemon_refuses_to_start_on_a_file_of_a_newer_release(tmp_path: Path) -> None:
    # Given a file a newer release wrote (a deploy rolled back)
    path, daemon = _newer_file_and_daemon(tmp_path)
    # When the daemon starts, Then it exits 2 before forking a consumer, saying why in its log and on stderr
    daemon.start(consumers=0)
    try:
        assert daemon.wait_exit() == EXIT_CONFIG
    finally:
        daemon.stop()
    [refused] = daemon.events("broker_data_refused")
    assert "level=error" in refused and "written by a newer disqontrol" in refused
    assert not daemon.events("consumer_started") and not daemon.events("consumer_ready")
    assert f"data version {sqlite_schema.VERSION + 1}" in daemon.stderr_path.read_text()
    assert header(path)[1] == sqlite_schema.VERSION + 1


def test_addjob_refuses_a_file_of_a_newer_release(tmp_path: Path) -> None:
    path, daemon = _newer_file_and_daemon(tmp_path)
    done = subprocess.run([*ADDJOB, "work", "1", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.startswith("disqontrol: sqlite broker:") and "upgrade disqontrol" in done.stderr
    assert str(path) in done.stderr and not done.stdout


def test_the_cron_scheduler_pass_refuses_a_file_of_a_newer_release_with_exit_2(tmp_path: Path) -> None:
    # Given a file of a newer release and a crontab with a run due every minute
    path, daemon = _newer_file_and_daemon(tmp_path)
    crontab = tmp_path / "crontab"
    crontab.write_text("* * * * * work 1\n")
    # When the system cron runs a pass, Then it exits 2 (not 3, "unreachable": retrying cannot help)
    done = subprocess.run([*SCHEDULER, "--config", str(daemon.config_path), "--crontab", str(crontab)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert "written by a newer disqontrol" in done.stderr


def test_a_reload_onto_a_file_of_a_newer_release_is_refused_and_the_old_one_runs_on(tmp_path: Path) -> None:
    # Given a daemon running on one file, and another file a newer release wrote
    newer_path = tmp_path / "newer.db"
    open_broker(f"sqlite://{newer_path}").close()
    stamp_newer(newer_path)
    queues = {"work": {"worker": python_worker()}}
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", queues).start()
    try:
        # When the config is changed to the newer file and reloaded
        daemon.broker_url = f"sqlite://{newer_path}"
        daemon.write_config(queues)
        done = ctl(daemon, "reload")
        # Then the reload is refused, saying why, and the running consumers serve the old file on
        assert done.returncode == EXIT_REFUSED, done.stdout + done.stderr
        assert "written by a newer disqontrol" in done.stdout + done.stderr
        assert daemon.events("reload_refused") and not daemon.events("reload_taken")
        daemon.broker_url = f"sqlite://{tmp_path}/jobs.db"
        daemon.add("work", [1])
        daemon.wait_runs(1)
    finally:
        daemon.stop()


def test_a_running_daemon_stops_taking_jobs_once_a_newer_release_upgrades_its_file(tmp_path: Path) -> None:
    # Given a daemon running on a file
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": python_worker()}}).start()
    try:
        daemon.add("work", [1])
        daemon.wait_runs(1)
        # When a newer release upgrades the file under it (a producer deployed before the daemon)
        stamp_newer(tmp_path / "jobs.db")
        # Then its consumer stops using the file and says why, instead of reading it as version 2
        [refused] = daemon.wait_event("broker_unreachable")
        assert "operation=reserve" in refused and "written by a newer disqontrol" in refused
    finally:
        daemon.stop()


def _next_note(notes: socket.socket, want: str) -> str:
    """The next message to 'systemd' that starts with ``want`` (others skipped)."""
    notes.settimeout(NOTE_TIMEOUT)
    while True:
        note = notes.recv(4096).decode()
        if note.startswith(want):
            return note


def test_a_start_held_up_by_an_upgrade_says_why_and_keeps_systemd_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a file of the release before versions, whose write lock is held meanwhile (a long upgrade's
    # stand-in: an upgrade of several GB outlasts the unit's TimeoutStartSec), and a daemon run by 'systemd'
    path = v1_copy(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    notes = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notes.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    daemon = Daemon(tmp_path, f"sqlite://{path}", {"waiting": {"worker": python_worker()}})
    try:
        # When it starts
        daemon.start(consumers=0)
        # Then its log says it upgrades the file, and it asks systemd to wait longer, saying why
        [upgrading] = daemon.wait_event("broker_data_upgrading")
        assert "from_version=1" in upgrading and f"path={path}" in upgrading
        note = _next_note(notes, "EXTEND_TIMEOUT_USEC=")
        assert "STATUS=" in note and "upgrad" in note, note
        # And once the upgrade can run, it ends and the daemon comes up on the upgraded file
        holder.execute("ROLLBACK")
        holder.close()
        daemon.wait_event("broker_data_upgraded")
        assert _next_note(notes, "READY=1")
        assert header(path)[1] == sqlite_schema.VERSION
    finally:
        daemon.stop()
        notes.close()


def test_a_daemonized_start_on_a_file_of_a_newer_release_exits_2_in_the_foreground(tmp_path: Path) -> None:
    # Given a file a newer release wrote (a rollback), and an init script that starts the daemon with --daemonize
    path, daemon = _newer_file_and_daemon(tmp_path)
    pidfile = tmp_path / "custom.pid"
    # When it starts, Then the launcher itself exits 2 with the reason on stderr, as for a bad config,
    # instead of exiting 0 while the detached master stops (the init script said OK, nothing ran)
    launcher = subprocess.run(
        [*DAEMON, "--config", str(daemon.config_path), "--daemonize", "--pidfile", str(pidfile)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert launcher.returncode == EXIT_CONFIG, launcher.stderr
    assert "written by a newer disqontrol" in launcher.stderr
    assert not pidfile.exists() and header(path)[1] == sqlite_schema.VERSION + 1
