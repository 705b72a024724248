#!/usr/bin/env python3
"""Why sqlite data version 2 put ``payload`` last: CPU ms of broker calls
over 1,000 jobs, 1 KiB or 1 MiB bodies, with the body column third (version
1's order) or last (version 2's), in a fresh connection.

With the body before ``leased``/``due``/``expires``, reading those of a job
whose body overflows its page walks the body's overflow pages. Both files
are stamped as the current version, so opening them converts neither.

Usage: python bench/payload_column.py [RUNS] [DIR]   (DIR default /tmp; ~1 GiB free needed)
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Callable

from disqontrol_client.brokers import NewJob
from disqontrol_client.brokers.sqlite import SqliteBroker
from disqontrol_client.brokers.sqlite_schema import (
    APPLICATION_ID, CLAIMS_TABLE, JOBS_INDEX, JOBS_TABLE, VERSION,
)

JOBS = 1000
BATCH = 50
SIZES = (1024, 1024 * 1024)
MS = 1000
V1_TABLE = ("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload BLOB NOT NULL,"
            " leased INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL, retry REAL NOT NULL, expires REAL NOT NULL,"
            " ctime REAL NOT NULL, nacks INTEGER NOT NULL DEFAULT 0, deliveries INTEGER NOT NULL DEFAULT 0)")


def cpu_ms(call: Callable[[], object]) -> float:
    started = time.process_time()
    call()
    return (time.process_time() - started) * MS


def make(path: str, order: str) -> None:
    """An empty file with the body third or last, stamped as current."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size=2048")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(JOBS_TABLE.format(name="jobs") if order == "last" else V1_TABLE)
    db.execute(JOBS_INDEX)
    db.execute(CLAIMS_TABLE)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {VERSION}")
    db.close()


def run(directory: str, order: str, size: int) -> dict[str, float]:
    path = os.path.join(directory, f"jobs-{order}-{size}.db")
    make(path, order)
    broker = SqliteBroker(path)
    body = os.urandom(size)
    for _ in range(JOBS // BATCH):
        broker.add_many([NewJob("q", body) for _ in range(BATCH)])
    broker.close()
    broker = SqliteBroker(path)  # a cold sqlite cache (the OS's is warm)
    got: list = []
    out = {
        "length": cpu_ms(lambda: broker.length("q")),
        "stats": cpu_ms(lambda: broker.stats(["q"])),
        "backlog": cpu_ms(lambda: broker.backlog(["q"], JOBS)),
        "sweep": cpu_ms(lambda: broker._write(lambda db: broker._sweep(db, time.time()))),
        "reserve 10x10": cpu_ms(lambda: [got.extend(broker.reserve(["q"], count=10, timeout=0)) for _ in range(10)]),
        "ack 100": cpu_ms(lambda: broker.ack([d.id for d in got])),
    }
    broker.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    directory = tempfile.mkdtemp(dir=sys.argv[2] if len(sys.argv) > 2 else "/tmp")
    try:
        for size in SIZES:
            for order in ("third", "last"):
                rows = [run(directory, order, size) for _ in range(runs)]
                print(f"body {size} B, payload {order}: " + "  ".join(
                    f"{key}=" + "/".join(f"{row[key]:.1f}" for row in rows) for key in rows[0]), flush=True)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
