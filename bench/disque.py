"""The Disque engine of bench/broker.py: a 3-node cluster, and the raw
baseline, the same work in plain redis-py commands (what pydisque sends,
without our failover, node bookkeeping or id checks). Only when
$DISQUE_SERVER names a disque-server binary:

    DISQUE_SERVER=/path/to/disque-server .venv/bin/python bench/broker.py --engine disque

``store`` yields the URL of an empty cluster; the raw work functions follow
bench/broker.py's ``run_parallel`` protocol: ``work(*args, start=None)``
opens a connection (untimed), ``work(*args, start=handle)`` does the work
and returns the jobs done.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from disqontrol_client.brokers.disque import ADDJOB_TIMEOUT_MS, DEFAULT_REPLICATE, parse_url  # noqa: E402
from disqontrol_client.brokers.disque_client import node_connection  # noqa: E402
from tests.support.disque_cluster import ENV_BINARY, DisqueCluster  # noqa: E402

RAW_RETRY = 600  # s: the lease our engine gives by default (DEFAULT_RETRY)

_cluster: Optional[DisqueCluster] = None


def available() -> bool:
    return bool(os.environ.get(ENV_BINARY))


@contextlib.contextmanager
def store(tmp: Path) -> Iterator[str]:
    """The URL of an empty 3-node cluster, started once per bench run."""
    global _cluster
    if _cluster is None:
        _cluster = DisqueCluster(os.environ[ENV_BINARY], Path(tempfile.mkdtemp(dir=tmp))).start()
        atexit.register(_cluster.stop)
    _cluster.flush()
    yield _cluster.url


def _raw_connect(url: str):  # -> redis.Redis
    host, _, port = parse_url(url)[0][0].rpartition(":")
    return node_connection(host, int(port))


def raw_add(url: str, jobs: int, batch: int, queue: str, payload: bytes, seconds: float, *,
            start: object) -> object:
    """ADDJOBs straight through redis-py (a pipeline per batch)."""
    if start is None:
        return _raw_connect(url)
    connection = start
    command = ["ADDJOB", queue, payload, ADDJOB_TIMEOUT_MS, "REPLICATE", DEFAULT_REPLICATE, "RETRY", RAW_RETRY]
    done, deadline = 0, time.monotonic() + seconds
    while done < jobs and time.monotonic() < deadline:
        if batch == 1:
            connection.execute_command(*command)
        else:
            pipe = connection.pipeline(transaction=False)
            for _ in range(batch):
                pipe.execute_command(*command)
            pipe.execute()
        done += batch
    connection.close()
    return done


def raw_reserve_ack(url: str, batch: int, queue: str, seconds: float, *, start: object) -> object:
    """GETJOB NOHANG COUNT n WITHCOUNTERS + ACKJOB straight through redis-py."""
    if start is None:
        return _raw_connect(url)
    connection = start
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs = connection.execute_command("GETJOB", "NOHANG", "COUNT", batch, "WITHCOUNTERS", "FROM", queue)
        if not jobs:
            break
        connection.execute_command("ACKJOB", *[job[1] for job in jobs])
        done += len(jobs)
    connection.close()
    return done


RunParallel = Callable[[Callable[..., object], tuple, int], tuple[int, float]]


def raw_figures(run_parallel: RunParallel, prefill: Callable[[str, int], None], queue: str,
                payload: bytes, seconds: float) -> dict[str, Callable[[str, int, int, int], float]]:
    """The raw baselines in bench/broker.py's shape: kind -> (url, jobs,
    batch, processes) -> jobs/s, run by its ``run_parallel`` on its queue
    and payload (``prefill`` fills the queue), each bounded by ``seconds``."""
    def add(url: str, jobs: int, batch: int, processes: int) -> float:
        done, secs = run_parallel(raw_add, (url, jobs, batch, queue, payload, seconds), processes)
        return done / secs

    def reserve_ack(url: str, jobs: int, batch: int, processes: int) -> float:
        prefill(url, jobs)
        done, secs = run_parallel(raw_reserve_ack, (url, batch, queue, seconds), processes)
        return done / secs

    return {"add": add, "reserve_ack": reserve_ack}
