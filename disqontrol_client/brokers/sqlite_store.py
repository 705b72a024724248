"""One process's connection to the sqlite broker's file: opening it (WAL,
pragmas, schema), reopening after a fork, and retrying a busy database;
the schema's SQL statements, and running one over a list of ids.

Every write is either one autocommit statement or a ``BEGIN IMMEDIATE``
transaction, so it takes sqlite's write lock before it reads: two writers
never deadlock, and a single ``UPDATE ... RETURNING`` reads and writes in one
transaction. Contention is left to sqlite's busy handler (it sleeps 1, 2,
5, ... ms between tries). Queueing writers on a ``flock`` instead was tried:
fair, but 1.5-1.8x slower for two consumers, as each commit then hands the
lock to the other process, where sqlite lets the holder run on in bursts.
"""
from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from typing import Callable, Optional, Sequence, TypeVar

from disqontrol_client.brokers import sqlite_schema
from disqontrol_client.errors import BrokerUnavailable
from disqontrol_client.logfmt import log_event

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_SQLITE_VERSION = (3, 35, 0)  # UPDATE ... RETURNING
BUSY_TIMEOUT = 30.0  # s: sqlite waits this long for a foreign writer before SQLITE_BUSY
BUSY_RETRIES = 3  # then we retry the whole write this many times
PAGE_SIZE = 2048  # bytes; measured ~20% faster leases than 4096 (fewer bytes per WAL frame)
WAL_AUTOCHECKPOINT = 8000  # pages: fewer checkpoints (each one fsyncs twice)
WAL_SIZE_LIMIT = 32 * 1024 * 1024  # bytes the WAL is truncated to after a checkpoint
CACHED_STATEMENTS = 256
CHUNK = 500  # ids per IN (...) statement
MIB = 1024 * 1024
DISK_FULL = "disk is full"  # in sqlite's SQLITE_FULL message
VERSION_RECHECK = 1.0  # s between two looks at an open file's data version (a newer release upgrading it)
WAL_SWITCH_PAUSE = 0.001  # s before the switch to WAL is tried again, doubling ...
WAL_SWITCH_MAX_PAUSE = 0.05  # s ... up to this, for at most the busy timeout
# Debian's libsqlite3 is built with SECURE_DELETE on: every delete (each ack)
# then zeroes the freed bytes, and a page freed that way is written to the WAL
# once more: 8.4 WAL frames per acked-and-leased batch of 10 instead of 7.7.
# Job payloads are not secrets kept from the file's owner; the OS's own
# file permissions guard them, deleted or not.

# The statements of the broker over its schema (sqlite_schema: the tables and their versions).
# A lease cut short by its producer's ``retry`` made as long as the run needs (never shortened).
EXTEND_IDS = "UPDATE jobs SET due = max(due, ?) WHERE leased = 1 AND id IN ({})"
INSERT = "INSERT INTO jobs (queue, payload, due, retry, expires, ctime) VALUES (?, ?, ?, ?, ?, ?)"
_LEASE_SET = (
    "UPDATE jobs SET leased = 1, deliveries = deliveries + leased, due = ?1 + retry WHERE id {} "
    "(SELECT id FROM jobs WHERE queue = ?2 AND due <= ?1 AND expires > ?1 ORDER BY due, id LIMIT ?3)"
    " RETURNING id, payload, nacks, deliveries, retry"
)
LEASE_ONE = _LEASE_SET.format("=")  # "=" skips the IN-list temp table: much cheaper
LEASE_MANY = _LEASE_SET.format("IN")
# Queue names by hopping through the (queue, due) index, one lookup per queue
# rather than a scan of every job (DISTINCT would read them all).
QUEUES = """
WITH RECURSIVE names(queue) AS (
    SELECT min(queue) FROM jobs
    UNION ALL
    SELECT (SELECT min(queue) FROM jobs WHERE queue > names.queue) FROM names
    WHERE names.queue IS NOT NULL
)
SELECT queue FROM names WHERE queue IS NOT NULL
AND EXISTS (SELECT 1 FROM jobs WHERE jobs.queue = names.queue AND expires > ?)
"""
DROP_EXPIRED_CLAIMS = "DELETE FROM claims WHERE expires <= ?"
TAKE_CLAIM = "INSERT OR IGNORE INTO claims VALUES (?, ?)"
WAITING = "expires > ?2 AND (leased = 0 OR due <= ?2)"  # ready or delayed, alive
DELETE_IDS = "DELETE FROM jobs WHERE id IN ({})"
# The head of a queue (reserve's order) among its ready rows: a waiting row
# past its due time, or a leased one whose lease (due) ran out.
OLDEST_READY = "SELECT due FROM jobs WHERE queue = ?1 AND due <= ?2 AND expires > ?2 ORDER BY due LIMIT 1"


def check_sqlite_version() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        raise BrokerUnavailable(
            f"sqlite broker: SQLite {sqlite3.sqlite_version} is too old; it needs >= {need} "
            "(UPDATE ... RETURNING). Use a newer Python/SQLite or a redis:// broker."
        )
    if not _has_json_functions():
        raise BrokerUnavailable(
            f"sqlite broker: SQLite {sqlite3.sqlite_version} was built without its JSON functions "
            "(json_each: built in from 3.38, an option before); the reserve of many queues and the "
            "backlog need them. Use a Python/SQLite built with them or a redis:// broker."
        )


@functools.lru_cache(maxsize=1)
def _has_json_functions() -> bool:
    """json_each walks a group's queue names in one statement (sqlite_due,
    sqlite_looking); a 3.35-3.37 build may lack it, and every reserve of
    more than a few queues would then fail, not the start."""
    try:
        sqlite3.connect(":memory:").execute("SELECT count(*) FROM json_each('[1]')").close()
    except sqlite3.OperationalError:
        return False
    return True


@functools.lru_cache(maxsize=CACHED_STATEMENTS)
def with_ids(sql: str, count: int) -> str:
    """``sql`` with its ``{}`` filled by ``count`` placeholders (cached: acks
    of a batch size repeat the same text, which sqlite3 then finds prepared)."""
    return sql.format(",".join("?" * count))


def by_ids(db: sqlite3.Connection, sql: str, head: tuple, rowids: Sequence[int]) -> int:
    """Run ``sql`` (an ``IN ({})`` statement) over ``rowids``, ``CHUNK`` at a
    time, inside the caller's transaction; rows changed."""
    changed = 0
    for start in range(0, len(rowids), CHUNK):
        part = tuple(rowids[start:start + CHUNK])
        changed += db.execute(with_ids(sql, len(part)), head + part).rowcount
    return changed


def delete_then_lease(
    db: sqlite3.Connection, acked: Sequence[int], now: float, queues: Sequence[str], count: int
) -> list[tuple[str, list]]:
    """Inside the caller's transaction: delete the ``acked`` rows, then lease
    up to ``count`` due rows, queue by queue in order: (queue, rows) each."""
    by_ids(db, DELETE_IDS, (), acked)
    out: list[tuple[str, list]] = []
    want = count
    for queue in queues:
        rows = db.execute(LEASE_ONE if want == 1 else LEASE_MANY, (now, queue, want)).fetchall()
        out.append((queue, rows))
        want -= len(rows)
        if want <= 0:
            break
    return out


def in_transaction(db: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run ``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


DB_FILE_SUFFIXES = ("", "-wal", "-shm")  # the database and the WAL files sqlite keeps beside it
NEW_FILE_MODE = 0o666  # of a new database file, less the umask (SQLite's own: 0o644)
MEMORY = ":memory:"  # no file to make
ROOT_UID = 0


def give_to_dir_owner(paths: Sequence[str]) -> None:
    """Files root creates beside the database belong to the directory's owner.

    An operator's `disqontrolctl queues` or `disqontrol addjob` run as root
    before the daemon (user disqontrol, /var/lib/disqontrol) first opened the
    database would otherwise create it, its WAL files or its wake directory
    owned by root: the daemon then starts, yet every reserve fails with
    "attempt to write a readonly database". Other users cannot chown, and
    for them the files are theirs already."""
    if os.geteuid() != ROOT_UID:
        return
    for path in paths:
        try:
            directory = os.stat(os.path.dirname(os.path.abspath(path)))
            if directory.st_uid == ROOT_UID:
                return
            if os.lstat(path).st_uid == ROOT_UID:
                os.chown(path, directory.st_uid, directory.st_gid, follow_symlinks=False)
        except FileNotFoundError:  # no WAL file (yet), or just checkpointed away
            continue


def _create_by_umask(path: str) -> None:
    """Make a missing database file as any other file: mode 0666 less the
    umask. SQLite makes it 0644 less the umask, so under the unit's
    ``UMask=0007`` an app's producer in the daemon's group still could not
    write it ("attempt to write a readonly database"); its -wal and -shm
    take the database's mode. An empty file is a new database to SQLite."""
    if path == MEMORY:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, NEW_FILE_MODE))
    except FileExistsError:
        return
    except OSError as exc:
        raise BrokerUnavailable(f"sqlite broker: cannot create {path!r}: {exc.strerror}; the file and its "
                                "directory must be readable and writable by this user") from exc


def _identity(path: str) -> Optional[tuple[int, int]]:
    """(st_dev, st_ino) of the file at ``path``; None when there is none."""
    try:
        seen = os.stat(path)
    except FileNotFoundError:
        return None
    return seen.st_dev, seen.st_ino


def _size_mib(path: str) -> int:
    """The file's size with its WAL, in MiB (what an upgrade rewrites)."""
    size = 0
    for suffix in ("", "-wal"):
        try:
            size += os.path.getsize(path + suffix)
        except FileNotFoundError:
            continue
    return round(size / MIB)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY / SQLITE_LOCKED)."""
    return "locked" in str(exc) or "busy" in str(exc)


class Store:
    """The connection of this process (opened lazily, again after a fork)."""

    def __init__(self, path: str, busy_timeout: float = BUSY_TIMEOUT) -> None:
        check_sqlite_version()
        self.path = path
        self.busy_timeout = busy_timeout
        self._db: Optional[sqlite3.Connection] = None
        self._thread_lock = threading.Lock()
        self._pid = 0
        self._identity: Optional[tuple[int, int]] = None  # of the file opened, at its opening
        self._version_check_at = 0.0  # monotonic time of the next look at the data version

    def _check_version(self, db: sqlite3.Connection) -> None:
        """Raise BrokerDataError, at every call from now on, once a newer
        release has upgraded the file under this open connection (its
        statements name columns a newer layout may have changed); looked at
        once a second at most (two header reads)."""
        sqlite_schema.current(db, self.path)
        self._version_check_at = time.monotonic() + VERSION_RECHECK

    def conn(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            if time.monotonic() >= self._version_check_at:
                self._check_version(self._db)
            return self._db
        # After a fork the parent's connection is neither used nor closed here.
        self._db = None
        self._thread_lock = threading.Lock()  # another thread may have held it at fork
        self._pid = os.getpid()
        self._db = self._open()
        self._version_check_at = time.monotonic() + VERSION_RECHECK
        try:
            self._identity = _identity(self.path)
        except OSError:
            self._identity = None
        return self._db

    def moved(self) -> Optional[str]:
        """'deleted' or 'replaced' when the open file is no longer at
        ``path`` (an ``rm`` or a restore under a running daemon: its jobs
        went on in a file nobody else can reach, the new ones were never
        run), else None."""
        if self._db is None or self._pid != os.getpid() or self._identity is None:
            return None  # not open here, or no file seen at its opening (":memory:")
        try:
            now = _identity(self.path)
        except OSError:  # cannot look (a directory made unreadable): nothing known to have moved
            return None
        if now == self._identity:
            return None
        return "deleted" if now is None else "replaced"

    def _open(self) -> sqlite3.Connection:
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise BrokerUnavailable(
                f"sqlite broker: cannot create directory {parent!r} for {self.path!r}: {exc.strerror}"
            ) from exc
        _create_by_umask(self.path)
        try:
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=CACHED_STATEMENTS,
            )
        except sqlite3.Error as exc:
            raise self._cannot_open(exc) from exc
        try:
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes on a new file
            self._switch_to_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA secure_delete=OFF")  # see SECURE_DELETE above
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._versioned(db)
            give_to_dir_owner([self.path + suffix for suffix in DB_FILE_SUFFIXES])
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._cannot_open(exc) from exc
            raise
        return db

    def _cannot_open(self, exc: sqlite3.Error) -> BrokerUnavailable:
        """The error, with what the user can do about it: an open also
        creates, upgrades (taking the write lock, writing a WAL of the
        file's size) and stamps the file."""
        if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
            hint = ("another process holds its write lock (an upgrade of older data takes minutes on a large "
                    "file: look for event=broker_data_upgrading); try again once it is done")
        elif isinstance(exc, sqlite3.OperationalError) and DISK_FULL in str(exc):
            hint = "free disk beside it (an upgrade of older data needs about the file's size, for its WAL)"
        else:
            hint = "the file and its directory must be readable and writable by this user"
        return BrokerUnavailable(f"sqlite broker: cannot open {self.path!r}: {exc}; {hint}")

    def _versioned(self, db: sqlite3.Connection) -> None:
        """Make a new file or upgrade an older one (``sqlite_schema``), in one
        ``BEGIN IMMEDIATE`` transaction; a current file costs no write lock."""
        if sqlite_schema.current(db, self.path):
            return
        older = sqlite_schema.older(db)
        if older:  # said before the lock and the work: a long wait is explained
            log_event(log, "broker_data_upgrading", path=self.path, from_version=older,
                      to_version=sqlite_schema.VERSION, size_mib=_size_mib(self.path))
        started = time.monotonic()
        found = self.exclusive(lambda: in_transaction(db, lambda: sqlite_schema.upgrade(db, self.path)))
        if found not in (sqlite_schema.UNSTAMPED, sqlite_schema.VERSION):  # not new, nor upgraded meanwhile
            log_event(log, "broker_data_upgraded", path=self.path, from_version=found,
                      to_version=sqlite_schema.VERSION, duration_ms=round((time.monotonic() - started) * 1000))

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        """``PRAGMA journal_mode=WAL``, waiting for other connections.

        On a new file (not WAL yet) the switch fails at once with "database
        is locked", without sqlite's busy handler, while another connection
        writes it or switches it too: two processes opening a brand-new
        database at once (the first consumers, or every process of a
        ``?shards=N`` database, which opens N new files) made one of them
        fail with BrokerUnavailable. So it is retried here, with pauses, for
        up to the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout
        pause = WAL_SWITCH_PAUSE
        while True:
            try:
                with self._thread_lock:
                    db.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, WAL_SWITCH_MAX_PAUSE)

    def exclusive(self, work: Callable[[], T]) -> T:
        """Run the write ``work``; retry a bounded number of times if sqlite
        still reports the db locked after its busy timeout."""
        for attempt in range(BUSY_RETRIES + 1):
            # sqlite serializes processes; this serializes threads sharing the
            # connection (an app may share one producer between request threads).
            with self._thread_lock:
                try:
                    return work()
                except sqlite3.OperationalError as exc:
                    if attempt == BUSY_RETRIES or not _busy(exc):
                        raise
                    log_event(log, "sqlite_busy", logging.WARNING, path=self.path, attempt=attempt + 1)
        raise AssertionError("unreachable")

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(db)`` in one write transaction."""
        db = self.conn()
        return self.exclusive(lambda: in_transaction(db, lambda: work(db)))

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None
