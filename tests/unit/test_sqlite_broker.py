"""What only the sqlite engine promises: clear errors for unusable files,
clean-up of dead waiters' sockets, a connection per process after fork."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.broker import NewJob
from disqontrol_client.brokers.sqlite import SqliteBroker
from disqontrol_client.brokers.sqlite_wake import SOCKET_SUFFIX, WAKE_DIR_SUFFIX
from disqontrol_client.errors import BrokerError, BrokerUnavailable, ConfigError
from tests.support.procs import stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
KILLED_WRITER_BOUND = 2.0  # s: the kernel frees the lock at once; this allows a loaded machine

FOREIGN_HOLD = 0.5  # s a foreign writer keeps the database locked
SHORT_DELAY = 0.3  # s
SHORT_TTL = 0.5  # s
WAKE_SLACK = 0.25  # s allowed past the due time on a loaded machine
THREADS, THREAD_JOBS = 4, 300
POLL_WAIT = 0.5  # s


def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "jobs.db"
    with open_broker(f"sqlite://{path}") as b:
        b.add("q", b"x")
    assert path.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_directory_is_broker_unavailable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BrokerUnavailable, match="locked"):
        open_broker(f"sqlite://{locked}/sub/jobs.db")


def test_uncreatable_directory_is_broker_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(BrokerUnavailable, match=str(blocker)):
        open_broker(f"sqlite://{blocker}/jobs.db")


def test_a_file_that_is_not_a_database_is_broker_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BrokerUnavailable, match="jobs.db"):
        open_broker(f"sqlite://{path}")


def test_url_without_a_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sqlite:///path"):
        open_broker("sqlite://")


def test_url_options_are_a_config_error_not_part_of_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has an unknown option 'mode'; a sqlite URL takes only shards=N"):
        open_broker(f"sqlite://{tmp_path}/jobs.db?mode=ro")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, allowed", [({"ttl": 0}, "ttl"), ({"delay": -1}, "delay")])
def test_bad_job_values_name_the_value(tmp_path: Path, kwargs: dict, allowed: str) -> None:
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as b:
        with pytest.raises(BrokerError, match=allowed):
            b.add("q", b"x", **kwargs)


def test_a_dead_waiters_socket_is_removed_by_the_next_add(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    wake_dir = Path(str(db) + WAKE_DIR_SUFFIX)
    wake_dir.mkdir()
    stale = wake_dir / f"999999-dead{SOCKET_SUFFIX}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: like a killed consumer

    with open_broker(f"sqlite://{db}") as b:
        b.add("q", b"x")

    assert not stale.exists()


def test_a_waiters_socket_exists_only_while_it_waits(tmp_path: Path) -> None:
    # Given a consumer blocked in reserve (in a thread of this process)
    db = tmp_path / "jobs.db"
    wake_dir = Path(str(db) + WAKE_DIR_SUFFIX)
    consumer, producer = open_broker(f"sqlite://{db}"), open_broker(f"sqlite://{db}")
    got: list = []
    waiting = threading.Thread(target=lambda: got.extend(consumer.reserve(["q"], timeout=10)))
    waiting.start()
    try:
        wait_for(lambda: wake_dir.exists() and len(list(wake_dir.iterdir())) == 1,
                 message="the waiter's socket")
        # When a job arrives
        job = producer.add("q", b"x")
    finally:
        waiting.join(15)
    # Then it is woken and its socket is gone, so adds stop writing to it
    assert [d.id for d in got] == [job]
    assert list(wake_dir.iterdir()) == []
    consumer.close()
    producer.close()


def test_long_paths_still_wake(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    b = open_broker(f"sqlite://{deep}/jobs.db")
    assert b.reserve(["q"], timeout=0.05) == []  # binds through /proc/self/fd
    job = b.add("q", b"x")
    assert [d.id for d in b.reserve(["q"], timeout=1)] == [job]
    b.close()


def test_child_process_opens_its_own_connection(tmp_path: Path) -> None:
    b = SqliteBroker.from_url(f"sqlite://{tmp_path}/jobs.db")
    b.add("q", b"from parent")
    pid = os.fork()
    if pid == 0:  # the child uses the inherited object: it must reconnect
        code = 1
        try:
            got = b.reserve(["q"], timeout=1)
            b.ack([d.id for d in got])
            code = 0 if [d.payload for d in got] == [b"from parent"] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.length("q") == 0 and b.stats(["q"])[0].in_flight == 0
    b.close()


def test_a_foreign_writer_delays_but_does_not_fail_an_add(tmp_path: Path) -> None:
    # Given a writer that does not take our lock (like the sqlite3 shell) mid-transaction
    db = tmp_path / "jobs.db"
    b = open_broker(f"sqlite://{db}")
    foreign = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    foreign.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(FOREIGN_HOLD, lambda: foreign.execute("COMMIT"))
    timer.start()
    try:
        # When we add meanwhile, Then sqlite's busy timeout absorbs the wait
        started = time.monotonic()
        job = b.add("q", b"x")
        assert time.monotonic() - started >= FOREIGN_HOLD * 0.5
    finally:
        timer.join()
        foreign.close()
    assert b.show(job)["state"] == "ready"
    b.close()


def test_opening_a_new_database_another_connection_is_writing_waits_for_it(tmp_path: Path) -> None:
    # Given a new database (not yet WAL) that another process is writing, as
    # when two processes open a brand-new file at once
    db = tmp_path / "jobs.db"
    foreign = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    foreign.execute("PRAGMA user_version = 0")  # makes the file (no table: a new database still)
    foreign.execute("BEGIN IMMEDIATE")  # a write lock: no switch to WAL meanwhile
    timer = threading.Timer(FOREIGN_HOLD, lambda: foreign.execute("COMMIT"))
    timer.start()
    try:
        # When we open it, Then the open waits for the writer instead of
        # failing with "database is locked" (sqlite's busy handler does not
        # wait for a journal mode switch)
        with open_broker(f"sqlite://{db}") as b:
            assert b.show(b.add("q", b"x"))["state"] == "ready"
    finally:
        timer.join()
        foreign.close()


def test_a_sub_second_delay_wakes_a_blocked_reserve_on_time(tmp_path: Path) -> None:
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as b:
        added = time.monotonic()
        job = b.add("q", b"x", delay=SHORT_DELAY)
        got = b.reserve(["q"], timeout=5)
        waited = time.monotonic() - added
    assert [d.id for d in got] == [job]
    assert SHORT_DELAY * 0.9 <= waited < SHORT_DELAY + WAKE_SLACK


def test_expired_rows_are_swept_from_the_file(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with open_broker(f"sqlite://{db}") as b:
        b.add("q", b"short", ttl=SHORT_TTL)
        kept = b.add("q", b"kept", delay=60)
        wait_for(lambda: b.length("q") == 1, timeout=10, message="the short job to expire")
        # consumers sweep as they reserve
        wait_for(lambda: b.reserve(["q"], timeout=0.2) == [] and rows(db) == 1, timeout=10,
                 message="the sweep to delete the expired row")
        assert b.show(kept)["state"] == "delayed"


def rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    finally:
        conn.close()


def test_threads_sharing_one_broker_get_their_own_ids(tmp_path: Path) -> None:
    # Given one producer object shared by request threads (as a web app would)
    b = open_broker(f"sqlite://{tmp_path}/jobs.db")
    added: dict[str, bytes] = {}

    def produce(n: int) -> None:
        for i in range(THREAD_JOBS):
            payload = f"t{n}-{i}".encode()
            added[b.add("q", payload)] = payload

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then every id names the job its caller added
    assert len(added) == THREADS * THREAD_JOBS
    assert all(b.show(i)["payload"] == p for i, p in added.items())
    b.close()


def test_without_a_usable_wake_dir_reserve_polls_gently(tmp_path: Path) -> None:
    # Given a file where the wake directory should be
    db = tmp_path / "jobs.db"
    Path(str(db) + WAKE_DIR_SUFFIX).write_text("in the way")
    with open_broker(f"sqlite://{db}") as b:
        # When a reserve waits on an empty queue
        cpu = time.process_time()
        assert b.reserve(["q"], timeout=POLL_WAIT) == []
        # Then it slept between checks instead of spinning
        assert time.process_time() - cpu < POLL_WAIT / 2
        # and still sees an add, from the next check
        job = b.add("q", b"x")
        assert [d.id for d in b.reserve(["q"], timeout=1)] == [job]


def test_a_waiter_bound_after_a_producer_listed_the_dir_is_woken(tmp_path: Path) -> None:
    # Given a producer that has just listed the wake directory
    db = tmp_path / "jobs.db"
    with open_broker(f"sqlite://{db}") as b:
        b.add("q", b"first")
        # When a consumer binds afterwards (on kernels with coarse directory
        # times, possibly within the same tick)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(Path(str(db) + WAKE_DIR_SUFFIX) / f"1-late{SOCKET_SUFFIX}"))
        sock.settimeout(1)
        try:
            b.add("q", b"second")
            # Then the next add still wakes it
            assert sock.recv(16)
        finally:
            sock.close()


HOLD_LOCK_FOREVER = """
import sys, time
from disqontrol_client.brokers.broker import NewJob
from disqontrol_client.brokers.sqlite import SqliteBroker
b = SqliteBroker.from_url(sys.argv[1])
db = b._conn()
def hold():
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO jobs (queue, payload, due, retry, expires, ctime) VALUES ('q', x'00', 0, 1, 9e99, 0)")
    print("holding", flush=True)
    time.sleep(600)
b._exclusive(hold)
"""


def test_a_writer_killed_mid_transaction_does_not_wedge_the_broker(tmp_path: Path) -> None:
    # Given another process killed while holding sqlite's write lock in an open transaction
    url = f"sqlite://{tmp_path}/jobs.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK_FOREVER, url], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
    finally:
        stop_process(holder)
        holder.stdout.close()
    # When we write, Then it goes through at once and the dead transaction left nothing
    with open_broker(url) as b:
        started = time.monotonic()
        job = b.add("q", b"x")
        assert time.monotonic() - started < KILLED_WRITER_BOUND
        assert [d.id for d in b.peek("q", 10)] == [job]


def test_moved_names_a_database_file_deleted_or_replaced_under_the_connection(tmp_path: Path) -> None:
    # Given an open broker on a file
    db = tmp_path / "jobs.db"
    with open_broker(f"sqlite://{db}") as b, open_broker(f"sqlite://{tmp_path}/other.db") as other:
        other.add("q", b"x")
        assert b.moved() is None
        # When the file is replaced (a restore), then deleted
        os.replace(tmp_path / "other.db", db)
        assert b.moved() == "replaced"
        db.unlink()
        # Then moved() says so each time
        assert b.moved() == "deleted"


def test_peek_and_scan_give_a_queue_in_the_order_it_was_added_whatever_the_delays(tmp_path: Path) -> None:
    # Given jobs whose delays shrink as they are added (due order is the reverse
    # of id order), beside another queue's jobs and one leased job
    with SqliteBroker(str(tmp_path / "jobs.db")) as b:
        added = [b.add("q", b"x", delay=100 - i) for i in range(30)]
        b.add_many([NewJob("other", b"y")] * 50)
        leased = b.add("q", b"z")
        assert [d.id for d in b.reserve(["q"], count=1, timeout=0)] == [leased]

        # Then a page and a walk (in pages smaller than the queue) give them oldest first,
        # without the leased job nor the other queue's
        assert [d.id for d in b.peek("q", 10, skip=5)] == added[5:15]
        assert [d.id for d in b.scan("q", page=7)] == added
