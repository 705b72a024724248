"""Disque figures: our engine beside the same work in raw redis-py commands
(what pydisque sends, without envelope decoding, failover or node
bookkeeping) on the same 3-node cluster. Only when $DISQUE_SERVER names a
disque-server binary.

    DISQUE_SERVER=/path/to/disque-server .venv/bin/python bench/disque.py

bench/broker.py plugs the engine in with ``Engine(store, raw_figures(run_parallel))``
when ``available()``: ``store`` yields the URL of an empty cluster, and the
raw work functions follow its ``run_parallel`` protocol: ``work(*args,
start=None)`` opens a connection (untimed) and ``work(*args, start=handle)``
does the work, returning jobs done.
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

from disqontrol_client.brokers import NewJob, open_broker  # noqa: E402
from disqontrol_client.brokers.disque import ADDJOB_TIMEOUT_MS, DEFAULT_REPLICATE, parse_url  # noqa: E402
from disqontrol_client.brokers.disque_client import node_connection  # noqa: E402
from disqontrol_client.job import encode_envelope, fresh_metadata  # noqa: E402
from tests.support.disque_cluster import ENV_BINARY, DisqueCluster  # noqa: E402

QUEUE = "bench"
JOBS = 5000
BATCH = 10
MAX_SECONDS = 30.0  # per measurement
PREFILL_CHUNK = 1000
PAYLOAD = encode_envelope({"image": "pictures/2026/11/28/cat.png", "width": 640}, fresh_metadata())
RAW_ADDJOB = ["ADDJOB", QUEUE, PAYLOAD, ADDJOB_TIMEOUT_MS, "REPLICATE", DEFAULT_REPLICATE, "RETRY", 600]

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


def raw_add(url: str, jobs: int, batch: int, *, start: object) -> object:
    """ADDJOBs straight through redis-py (a pipeline per batch)."""
    if start is None:
        return _raw_connect(url)
    connection = start
    done, deadline = 0, time.monotonic() + MAX_SECONDS
    while done < jobs and time.monotonic() < deadline:
        if batch == 1:
            connection.execute_command(*RAW_ADDJOB)
        else:
            pipe = connection.pipeline(transaction=False)
            for _ in range(batch):
                pipe.execute_command(*RAW_ADDJOB)
            pipe.execute()
        done += batch
    connection.close()
    return done


def raw_reserve_ack(url: str, batch: int, *, start: object) -> object:
    """GETJOB NOHANG COUNT n WITHCOUNTERS + ACKJOB straight through redis-py."""
    if start is None:
        return _raw_connect(url)
    connection = start
    done, deadline = 0, time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        jobs = connection.execute_command("GETJOB", "NOHANG", "COUNT", batch, "WITHCOUNTERS", "FROM", QUEUE)
        if not jobs:
            break
        connection.execute_command("ACKJOB", *[job[1] for job in jobs])
        done += len(jobs)
    connection.close()
    return done


RunParallel = Callable[[Callable[..., object], tuple, int], tuple[int, float]]


def raw_figures(run_parallel: RunParallel) -> dict[str, Callable[[str, int, int, int], float]]:
    """The raw baselines in bench/broker.py's shape: kind -> (url, jobs,
    batch, processes) -> jobs/s, run by its ``run_parallel``."""
    def add(url: str, jobs: int, batch: int, processes: int) -> float:
        done, secs = run_parallel(raw_add, (url, jobs, batch), processes)
        return done / secs

    def reserve_ack(url: str, jobs: int, batch: int, processes: int) -> float:
        prefill(url, jobs)
        done, secs = run_parallel(raw_reserve_ack, (url, batch), processes)
        return done / secs

    return {"add": add, "reserve_ack": reserve_ack}


def prefill(url: str, jobs: int) -> None:
    with open_broker(url) as broker:
        for first in range(0, jobs, PREFILL_CHUNK):
            broker.add_many([NewJob(QUEUE, PAYLOAD)] * min(PREFILL_CHUNK, jobs - first))


def ours_add(url: str, jobs: int, batch: int, *, start: object) -> object:
    if start is None:
        return open_broker(url)
    broker = start
    done, deadline = 0, time.monotonic() + MAX_SECONDS
    items = [NewJob(QUEUE, PAYLOAD)] * batch
    while done < jobs and time.monotonic() < deadline:
        if batch == 1:
            broker.add(QUEUE, PAYLOAD)
        else:
            broker.add_many(items)
        done += batch
    broker.close()
    return done


def ours_reserve_ack(url: str, batch: int, *, start: object) -> object:
    if start is None:
        return open_broker(url)
    broker = start
    done, deadline = 0, time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        got = broker.reserve([QUEUE], count=batch, timeout=0)
        if not got:
            break
        broker.ack([d.id for d in got])
        done += len(got)
    broker.close()
    return done


def _serial(work: Callable[..., object], args: tuple) -> float:
    """jobs/s of one process doing ``work`` (the standalone run)."""
    handle = work(*args, start=None)
    started = time.perf_counter()
    done = work(*args, start=handle)
    return done / (time.perf_counter() - started)  # type: ignore[operator]


def main() -> int:
    if not available():
        sys.stdout.write(f"disque: skipped (${ENV_BINARY} is not set)\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="disqontrol-bench-") as tmp:
        for batch in (1, BATCH):
            for kind, ours, raw in (("add", ours_add, raw_add), ("reserve_ack", ours_reserve_ack, raw_reserve_ack)):
                rates = []
                for work in (ours, raw):
                    with store(Path(tmp)) as url:
                        if kind == "add":
                            rates.append(_serial(work, (url, JOBS, batch)))
                        else:
                            prefill(url, JOBS)
                            rates.append(_serial(work, (url, batch)))
                name = f"{kind}_batch{batch}" if batch > 1 else kind
                sys.stdout.write(f"disque  {name:22s} {rates[0]:9.0f} jobs/s  raw {rates[1]:9.0f} jobs/s  "
                                 f"ratio {rates[0] / rates[1]:5.2f}\n")
        if _cluster is not None:
            _cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
