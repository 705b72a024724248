"""The sqlite broker's data layout, its version, and the upgrades between versions.

Why versions: users upgrade (and roll back) with jobs waiting in the file.
A release that changed the layout would otherwise misread an older file, and
an older release rolled back over a newer file would misread it silently.

Every file is stamped in its header: ``PRAGMA application_id`` says it is a
disqontrol database, ``PRAGMA user_version`` which layout it holds. On open:
the current version is used as is; an older one is upgraded in place, in
the same ``BEGIN IMMEDIATE`` transaction that reads its version (so two
processes opening it at once upgrade it once, and a crash leaves the old
file whole); a newer one, or a file of another application, is refused
with ``BrokerDataError``. A file written before versions existed (neither
pragma set) that holds version 1's tables is version 1.

Versions:
 1. ``jobs`` with ``payload`` third, before the columns every lease, count
    and ttl sweep reads: for a job whose body overflows its page, reading
    ``expires`` walked the body's overflow pages. 1,000 jobs of 1 MiB:
    ``length`` / ``stats`` / ``backlog`` / one ttl sweep step took 370-570
    CPU ms each (the sweep runs every second while consumers reserve).
 2. ``payload`` last: the same calls take 0.1-2 CPU ms (docs/brokers.md).
"""
from __future__ import annotations

import sqlite3
from typing import Callable

from disqontrol_client.errors import BrokerDataError

APPLICATION_ID = 0x44517374  # "DQst": marks a file as a disqontrol sqlite database
VERSION = 2  # the layout this release writes
OLDEST = 1  # the oldest layout this release upgrades
UNSTAMPED = 0  # both pragmas' value in a file that never set them
UPGRADE_CHUNK = 100  # rows moved per step of an upgrade (100 jobs of 1 MiB: 100 MiB more file at most)

JOBS_TABLE = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale ack misses
    queue TEXT NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,          -- waiting: ready time, leased: lease expiry
    retry REAL NOT NULL,
    expires REAL NOT NULL,      -- ctime + ttl
    ctime REAL NOT NULL,
    nacks INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,  -- additional deliveries
    payload BLOB NOT NULL       -- last: the columns before it are read without its overflow pages
)"""
JOBS_INDEX = "CREATE INDEX jobs_queue_due ON jobs (queue, due)"
CLAIMS_TABLE = "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, expires REAL NOT NULL)"
SCHEMA = (JOBS_TABLE.format(name="jobs"), JOBS_INDEX, CLAIMS_TABLE)

# Version 1's jobs columns, in their order: how an unstamped file is recognised.
V1_COLUMNS = ("id", "queue", "payload", "leased", "due", "retry", "expires", "ctime", "nacks", "deliveries")
V2_COPY_COLUMNS = ", ".join(c for c in V1_COLUMNS if c != "payload") + ", payload"


def _pragma(db: sqlite3.Connection, name: str) -> int:
    return db.execute(f"PRAGMA {name}").fetchone()[0]


def _stamp(db: sqlite3.Connection, version: int) -> None:
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {version}")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Move ``payload`` last: a new table, the rows copied with their ids,
    the old one dropped, the new one renamed, the index made again; the
    AUTOINCREMENT mark is kept, so an id acked before the upgrade is never
    given to a new job (a stale ack of it would delete that job)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
    db.execute(JOBS_TABLE.format(name="jobs_v2"))
    moved = 0
    while True:  # a chunk at a time, each deleted once copied: its pages are reused by the next
        last = db.execute("SELECT max(id) FROM (SELECT id FROM jobs WHERE id > ? ORDER BY id LIMIT ?)",
                          (moved, UPGRADE_CHUNK)).fetchone()[0]
        if last is None:
            break
        db.execute(f"INSERT INTO jobs_v2 ({V2_COPY_COLUMNS}) SELECT {V2_COPY_COLUMNS} FROM jobs"
                   " WHERE id > ? AND id <= ? ORDER BY id", (moved, last))
        db.execute("DELETE FROM jobs WHERE id > ? AND id <= ?", (moved, last))
        moved = last
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")
    if row is not None:
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'jobs'", row)
        db.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', ? WHERE NOT EXISTS"
                   " (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs')", row)
    db.execute(JOBS_INDEX)
    db.execute(CLAIMS_TABLE)


#: version -> the upgrade from it to the next, run inside the opening transaction
UPGRADES: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}


def _tables(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def _columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))


def reads() -> str:
    """The versions this release opens, for messages."""
    return f"{OLDEST} to {VERSION} (older ones are upgraded in place)"


def _refuse(path: str, why: str) -> BrokerDataError:
    return BrokerDataError(f"sqlite broker: {path!r} {why}")


def _newer(path: str, version: int) -> BrokerDataError:
    return _refuse(path, f"holds data version {version}, written by a newer disqontrol; this release "
                         f"reads versions {reads()}: upgrade disqontrol, or point the broker at another file")


def _foreign(path: str, app_id: int, version: int, tables: list[str]) -> BrokerDataError:
    return _refuse(path, f"is not a disqontrol database (application_id {app_id}, user_version {version}, "
                         f"tables {', '.join(tables) or 'none'}); point the broker at a file of its own")


def current(db: sqlite3.Connection, path: str) -> bool:
    """True when the file is stamped with this release's version (no write
    needed: the common case costs two header reads, no write lock); raises
    when it is stamped newer. False: ``upgrade`` must run."""
    if _pragma(db, "application_id") != APPLICATION_ID:
        return False
    version = _pragma(db, "user_version")
    if version > VERSION:
        raise _newer(path, version)
    return version == VERSION


def older(db: sqlite3.Connection) -> int:
    """The older version the file holds, read without a lock (0: a new
    file, the current version, or not ours): so that an upgrade, which may
    wait for the write lock and then take minutes, is announced before it."""
    app_id, version = _pragma(db, "application_id"), _pragma(db, "user_version")
    if app_id == UNSTAMPED and version == UNSTAMPED:
        return OLDEST if "jobs" in _tables(db) else UNSTAMPED
    return version if app_id == APPLICATION_ID and OLDEST <= version < VERSION else UNSTAMPED


def upgrade(db: sqlite3.Connection, path: str) -> int:
    """Inside the caller's ``BEGIN IMMEDIATE`` transaction: make a new file,
    or bring an older one to ``VERSION``. Returns the version found (0: a
    new file). Idempotent: another process that got the lock first leaves
    nothing to do."""
    app_id, version = _pragma(db, "application_id"), _pragma(db, "user_version")
    found = version
    if app_id == UNSTAMPED and version == UNSTAMPED:
        tables = _tables(db)
        if not tables:
            for statement in SCHEMA:
                db.execute(statement)
            _stamp(db, VERSION)
            return UNSTAMPED
        if "jobs" not in tables or _columns(db, "jobs") != V1_COLUMNS:
            raise _foreign(path, app_id, version, tables)
        db.execute(CLAIMS_TABLE)  # files older than the scheduler's claims lack it
        found = version = OLDEST
    elif app_id != APPLICATION_ID or version < OLDEST:
        raise _foreign(path, app_id, version, _tables(db))
    if version > VERSION:
        raise _newer(path, version)
    while version < VERSION:
        UPGRADES[version](db)
        version += 1
    _stamp(db, VERSION)
    return found
