"""Build tests/support/v1_jobs.db: a database as a release before data
versions (layout version 1, unstamped) left it, for the upgrade tests.

Run it with such a release's client on the path, e.g. from a checkout:
    git archive 33e0756 disqontrol_client | tar -x -C /tmp/v1code
    PYTHONPATH=/tmp/v1code python tests/support/make_v1_db.py tests/support/v1_jobs.db
It holds, each in its own queue so the test can find it: waiting jobs (one
of 200 KiB, past a page: overflow pages), a delayed one (3 s), a leased one
(2 s lease), one redelivered after its lease lapsed (deliveries 1), a nacked
one (nacks 1), a job in the failure queue (put there by replace), a
scheduler run added with its claim and a bare claim, and a job acked last,
so the id counter is above every row's id. Times are rebased by the test.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time

from disqontrol_client.brokers import NewJob, open_broker

BIG = 200 * 1024
SMALL_LEASE = 0.2  # s: lapses while this script runs, so the next reserve redelivers it


def envelope(body: object, **extra: object) -> bytes:
    metadata = {"retries": 0, "original-id": None, "creation-time": int(time.time()),
                "job-lifetime": 2592000, "process-timeout": 600, **extra}
    return json.dumps({"body": body, "metadata": metadata}).encode()


def build(path: str) -> None:
    broker = open_broker(f"sqlite://{path}")
    broker.add_many([NewJob("waiting", envelope(n)) for n in range(3)])
    broker.add("waiting", envelope({"n": 3, "pad": "x" * BIG}))
    broker.add("delayed", envelope(4), delay=3)
    broker.add("leased", envelope(5), retry=2)
    assert len(broker.reserve(["leased"], timeout=0)) == 1
    broker.add("redelivered", envelope(6), retry=SMALL_LEASE)
    assert len(broker.reserve(["redelivered"], timeout=0)) == 1
    time.sleep(SMALL_LEASE * 2)
    assert broker.reserve(["redelivered"], timeout=0)[0].additional_deliveries == 1
    broker.add("nacked", envelope(7))
    broker.nack([d.id for d in broker.reserve(["nacked"], timeout=0)])
    broker.add("failing", envelope(8))
    [doomed] = broker.reserve(["failing"], timeout=0)
    broker.replace(doomed.id, NewJob("failed-jobs", envelope(
        8, retries=3, **{"original-id": doomed.id, "original-queue": "failing",
                         "last-error": {"message": "exit code 3: boom", "time": int(time.time())}}),
        ttl=3932100))
    assert broker.add_claimed([("sched:abc:2026-11-28T15:00", NewJob("scheduled", envelope(9)))], 86400)[0]
    assert broker.claim("sched:def:2026-11-28T15:00", 86400)
    broker.add("acked", envelope(10))
    broker.ack([d.id for d in broker.reserve(["acked"], timeout=0)])
    broker.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()


if __name__ == "__main__":
    target = sys.argv[1]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(target + suffix):
            os.remove(target + suffix)
    build(target)
