"""Disque figures for bench/broker.py: our engine beside raw redis-py
commands (what pydisque sends, no envelope, no failover) on the same 3-node
cluster. Runs only when $DISQUE_SERVER names a disque-server binary.

    DISQUE_SERVER=/path/to/disque-server .venv/bin/python bench/disque.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from disqontrol_client.brokers import NewJob, open_broker  # noqa: E402
from tests.support.disque_cluster import DisqueCluster  # noqa: E402

JOBS = 2000
BATCH = 10
PAYLOAD = b'{"body":{"id":5},"metadata":{"retries":0}}'
ADDJOB_TIMEOUT_MS = 5000
REPLICATE = 2
WARMUP = 200


def rate(label: str, jobs: int, run: Callable[[], None]) -> tuple[str, float]:
    start = time.perf_counter()
    run()
    return label, jobs / (time.perf_counter() - start)


def figures(cluster: DisqueCluster) -> list[tuple[str, float]]:
    """jobs/s for add, batch add, and reserve+ack, ours and raw."""
    rows = []
    raw = cluster.client(0)
    broker = open_broker(cluster.node_url(0))

    def raw_add() -> None:
        for _ in range(JOBS):
            raw.execute_command("ADDJOB", "bench-raw", PAYLOAD, ADDJOB_TIMEOUT_MS, "REPLICATE", REPLICATE)

    def raw_consume() -> None:
        for _ in range(JOBS // BATCH):
            jobs = raw.execute_command("GETJOB", "NOHANG", "COUNT", BATCH, "WITHCOUNTERS", "FROM", "bench-raw")
            raw.execute_command("ACKJOB", *[job[1] for job in jobs])

    def our_add() -> None:
        for _ in range(JOBS):
            broker.add("bench", PAYLOAD)

    def our_add_many() -> None:
        for _ in range(JOBS // BATCH):
            broker.add_many([NewJob("bench-many", PAYLOAD)] * BATCH)

    def our_consume() -> None:
        for _ in range(JOBS // BATCH):
            broker.ack([d.id for d in broker.reserve(["bench"], count=BATCH, timeout=0)])

    for _ in range(WARMUP):  # connections, queue creation, CPU caches
        raw.execute_command("ADDJOB", "bench-warm", PAYLOAD, ADDJOB_TIMEOUT_MS, "REPLICATE", REPLICATE)
        broker.add("bench-warm", PAYLOAD)
    rows.append(rate("disque raw ADDJOB (redis-py)", JOBS, raw_add))
    rows.append(rate("disque add", JOBS, our_add))
    rows.append(rate(f"disque add_many x{BATCH}", JOBS, our_add_many))
    rows.append(rate(f"disque raw GETJOB+ACKJOB x{BATCH}", JOBS, raw_consume))
    rows.append(rate(f"disque reserve+ack x{BATCH}", JOBS, our_consume))
    raw.close()
    broker.close()
    return rows


def main() -> int:
    binary = os.environ.get("DISQUE_SERVER")
    if not binary:
        print("disque: skipped ($DISQUE_SERVER is not set)")
        return 0
    with tempfile.TemporaryDirectory() as workdir:
        cluster = DisqueCluster(binary, Path(workdir)).start()
        try:
            for label, jobs_per_s in figures(cluster):
                print(f"{label:40s} {jobs_per_s:10.0f} jobs/s")
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
