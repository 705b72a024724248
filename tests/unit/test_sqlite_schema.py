"""The sqlite broker's data versions (sqlite_schema): a new file is stamped,
a file of a release before versions (tests/support/v1_jobs.db, made by
make_v1_db.py with that release's code) is upgraded in place with every job
and claim intact, a newer or foreign file is refused untouched, and a failed
upgrade leaves the old file whole."""
from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Callable

import pytest

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.brokers import sqlite_schema
from disqontrol_client.errors import BrokerDataError, BrokerUnavailable
from tests.support.procs import wait_for

V1_FILE = Path(__file__).parent.parent / "support" / "v1_jobs.db"
V1_SEQ = 12  # the id counter of the file: job 12 was acked, 9 replaced into the failure queue
JOB_COLUMNS = "id, queue, payload, leased, due, retry, expires, ctime, nacks, deliveries"


def v1_copy(directory: Path) -> Path:
    """A copy of the v1 file with its times moved to now (its delays and
    leases as long from now as from when it was made)."""
    path = directory / "jobs.db"
    shutil.copyfile(V1_FILE, path)
    db = sqlite3.connect(path, isolation_level=None)
    shift = time.time() - db.execute("SELECT max(ctime) FROM jobs").fetchone()[0]
    db.execute("UPDATE jobs SET due = due + ?1, expires = expires + ?1, ctime = ctime + ?1", (shift,))
    db.execute("UPDATE claims SET expires = expires + ?", (shift,))
    db.close()
    return path


def dump(path: Path) -> tuple[list, list, list]:
    db = sqlite3.connect(path)
    try:
        return (db.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id").fetchall(),
                db.execute("SELECT key, expires FROM claims ORDER BY key").fetchall(),
                db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    finally:
        db.close()


def stamp_newer(path: Path) -> None:
    """Make the file look written by the next release."""
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {sqlite_schema.VERSION + 1}")
    db.close()


def header(path: Path) -> tuple[int, int, list[str]]:
    db = sqlite3.connect(path)
    try:
        return (db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0],
                [r[1] for r in db.execute("PRAGMA table_info(jobs)")])
    finally:
        db.close()


def test_a_new_file_is_stamped_with_the_current_version_and_payload_last(tmp_path: Path) -> None:
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as broker:
        broker.add("q", b"x")
    app_id, version, columns = header(tmp_path / "jobs.db")
    assert (app_id, version) == (sqlite_schema.APPLICATION_ID, sqlite_schema.VERSION)
    assert columns[-1] == "payload"


@pytest.mark.parametrize("chunk", [sqlite_schema.UPGRADE_CHUNK, 3])  # 3: rows moved in several steps
def test_a_file_of_the_release_before_versions_is_upgraded_with_every_job_intact(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # Given a database as the release before versions left it
    monkeypatch.setattr(sqlite_schema, "UPGRADE_CHUNK", chunk)
    path = v1_copy(tmp_path)
    assert header(path)[:2] == (0, 0)
    jobs, claims, seq = dump(path)
    assert len(jobs) == 10 and len(claims) == 2 and seq == [("jobs", V1_SEQ)]
    # When this release opens it
    with caplog.at_level(logging.INFO), open_broker(f"sqlite://{path}") as broker:
        # Then every job is there with its id, body, counters, due time and lease state
        assert dump(path) == (jobs, claims, seq)
        assert header(path) == (sqlite_schema.APPLICATION_ID, sqlite_schema.VERSION,
                                ["id", "queue", "leased", "due", "retry", "expires", "ctime", "nacks",
                                 "deliveries", "payload"])
        leased = broker.show("S-6")
        assert leased is not None and leased["state"] == "leased" and leased["retry"] == 2
        assert broker.show("S-7")["additional_deliveries"] == 1 and broker.show("S-8")["nacks"] == 1
        assert broker.show("S-5")["state"] == "delayed"
        assert len(broker.show("S-4")["payload"]) > 200 * 1024
        [parked] = broker.peek("failed-jobs", 10)
        assert parked.id == "S-10" and b"boom" in parked.payload
        # And the claims hold: the scheduler's run is not added twice
        assert not broker.claim("sched:abc:2026-11-28T15:00", 60)
        # And an id acked before the upgrade is never given again
        assert broker.add("q", b"new") == f"S-{V1_SEQ + 1}"
        assert [d.id for d in broker.reserve(["waiting"], count=10, timeout=0)] == ["S-1", "S-2", "S-3", "S-4"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
                      " AND sql IS NOT NULL").fetchall() == [("jobs_queue_due",)]
    db.close()
    upgraded = [r.getMessage() for r in caplog.records if "event=broker_data_upgraded" in r.getMessage()]
    assert len(upgraded) == 1 and "from_version=1" in upgraded[0] and "to_version=2" in upgraded[0]


def test_every_shard_file_of_the_release_before_versions_is_upgraded(tmp_path: Path) -> None:
    # Given a ?shards=2 database of the release before versions: both files version 1
    path = v1_copy(tmp_path)
    shutil.copyfile(path, tmp_path / "jobs.db.shard1")
    jobs = dump(path)[0]
    # When this release opens it, Then both are upgraded with their jobs, each served under its ids
    with open_broker(f"sqlite://{path}?shards=2") as broker:
        assert broker.length("waiting") == 8
        assert broker.show("S1-6")["state"] == "leased" and broker.show("S-6")["state"] == "leased"
    for shard in (path, tmp_path / "jobs.db.shard1"):
        assert header(shard)[:2] == (sqlite_schema.APPLICATION_ID, sqlite_schema.VERSION)
        assert dump(shard)[0] == jobs


def test_a_failed_upgrade_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a v1 file, and an upgrade that fails half way (the disk full, a kill)
    path = v1_copy(tmp_path)
    before = dump(path)
    real = sqlite_schema.UPGRADES[1]

    def half_way(db: sqlite3.Connection) -> None:
        real(db)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setitem(sqlite_schema.UPGRADES, 1, half_way)
    # When it is opened, Then the open fails and the file is as it was
    with pytest.raises(Exception, match="disk is full"):
        open_broker(f"sqlite://{path}")
    assert header(path) == (0, 0, list(JOB_COLUMNS.split(", ")))
    assert dump(path) == before


SHORT_BUSY = 0.1  # s: the busy timeout of an opener that must give up quickly


def test_an_open_that_waits_out_another_process_s_upgrade_says_so(tmp_path: Path) -> None:
    # Given a v1 file whose write lock another process holds (its upgrade of a large file, minutes)
    path = v1_copy(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        # When a producer opens it and its waits run out
        with pytest.raises(BrokerUnavailable) as failed:
            open_broker(f"sqlite://{path}", busy_timeout=SHORT_BUSY)
    finally:
        holder.close()
    # Then it says the lock is held, not that the user lacks permissions
    message = str(failed.value)
    assert "another process holds its write lock" in message and "readable and writable" not in message


def test_an_upgrade_that_fills_the_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = v1_copy(tmp_path)

    def full(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setitem(sqlite_schema.UPGRADES, 1, full)
    with pytest.raises(BrokerUnavailable) as failed:
        open_broker(f"sqlite://{path}")
    message = str(failed.value)
    assert "free disk" in message and "readable and writable" not in message


def test_a_file_of_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    # Given a file a newer release wrote (a rollback)
    path = tmp_path / "jobs.db"
    with open_broker(f"sqlite://{path}") as broker:
        broker.add("q", b"x")
    stamp_newer(path)
    # When this release opens it, Then it refuses, naming the file, its version and the ones it reads
    with pytest.raises(BrokerDataError) as refused:
        open_broker(f"sqlite://{path}")
    message = str(refused.value)
    assert str(path) in message and f"version {sqlite_schema.VERSION + 1}" in message
    assert "newer disqontrol" in message and f"versions 1 to {sqlite_schema.VERSION}" in message
    assert refused.value.exit_code == 2
    assert header(path)[1] == sqlite_schema.VERSION + 1


def test_a_shard_file_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/jobs.db?shards=2"
    open_broker(url).close()
    stamp_newer(tmp_path / "jobs.db.shard1")
    with pytest.raises(BrokerDataError, match="jobs.db.shard1"):
        open_broker(url)


@pytest.mark.parametrize("setup", [
    "CREATE TABLE users (name TEXT)",  # another application's database
    "PRAGMA user_version = 7",  # one that versions its own layout
    "PRAGMA application_id = 1",
])
def test_a_file_of_another_application_is_refused_untouched(tmp_path: Path, setup: str) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute(setup)
    db.close()
    with pytest.raises(BrokerDataError, match="is not a disqontrol database"):
        open_broker(f"sqlite://{path}")
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'").fetchone() == (0,)
    db.close()


def test_an_open_broker_stops_once_a_newer_release_upgrades_its_file(tmp_path: Path) -> None:
    # Given a broker open on a file, in use
    path = tmp_path / "jobs.db"
    with open_broker(f"sqlite://{path}") as broker:
        broker.add("q", b"x")
        # When a newer release upgrades the file under it (its producer deployed before the daemon)
        stamp_newer(path)
        # Then within a second every call refuses, instead of running version 2's statements on it
        refused = wait_for(lambda: _refusal(lambda: broker.add("q", b"y")), timeout=10, interval=0.05,
                           message="the add refused")
        assert "written by a newer disqontrol" in refused
        for call in (lambda: broker.reserve(["q"], timeout=0), lambda: broker.length("q")):
            assert _refusal(call)


def _refusal(call: Callable[[], object]) -> str:
    try:
        call()
    except BrokerDataError as exc:
        return str(exc)
    return ""


HOT_CALLS = 300  # reserve-with-ack calls of the loop below
STATEMENTS_PER_RESERVE = 4  # BEGIN IMMEDIATE, the ack's DELETE, the lease's UPDATE ... RETURNING, COMMIT
TTL_SWEEP = ("DELETE FROM jobs WHERE id >=", "SELECT max(id) FROM jobs")  # a step each second, not per call
HEADER_READS = 2  # application_id, user_version: per second at most


def test_the_version_check_adds_no_statement_to_a_reserve_ack_loop(tmp_path: Path) -> None:
    # Given an open broker with jobs waiting, each of its statements traced
    broker = open_broker(f"sqlite://{tmp_path}/jobs.db")
    broker.add_many([NewJob("q", b"x") for _ in range(HOT_CALLS)])
    statements: list[str] = []
    broker._open[0]._store.conn().set_trace_callback(statements.append)  # type: ignore[attr-defined]
    # When a consumer reserves one job at a time, acking the last one with it
    started = time.monotonic()
    ack: list[str] = []
    for _ in range(HOT_CALLS):
        ack = [d.id for d in broker.reserve(["q"], count=1, timeout=0, ack=ack)]
    elapsed = time.monotonic() - started
    broker.close()
    # Then each call costs what it did before versions, and the header is read once a second at most
    headers = [s for s in statements if s.startswith("PRAGMA")]
    calls = [s for s in statements if not s.startswith(("PRAGMA", *TTL_SWEEP))]
    assert len(calls) == HOT_CALLS * STATEMENTS_PER_RESERVE - 1, calls[:8]  # the first call has no ack
    assert len(headers) <= HEADER_READS * (elapsed + 1), headers
