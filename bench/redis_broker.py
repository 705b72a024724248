"""Redis figures for bench/broker.py: our engine beside the raw limit of the
same redis-server, measured in the same run, printed as ratios.

    .venv/bin/python bench/redis_broker.py

Raw limits: two processes each doing one BLPOP round trip per job (what a
single-job reserve cannot beat), and two processes popping in pipelines of
100 (what batches could approach). Ours: add and add_many(10) from two
producer processes; reserve+ack one at a time and reserve(count=10) + one
batch ack from two consumer processes; enqueue -> start latency of a
consumer blocked in reserve. Each figure is bounded in jobs and seconds.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from disqontrol_client.brokers import NewJob, open_broker  # noqa: E402
from tests.support.redis_server import RedisServer, server_binary  # noqa: E402

JOBS = 20000  # per figure, split over the processes
PROCESSES = 2
BATCH = 10
PIPELINE = 100
PHASE_SECONDS = 20.0  # a figure stops early past this, counting what was done
LATENCY_SAMPLES = 200
LATENCY_GAP = 0.005  # s between two latency probes: the consumer is idle again
PAYLOAD = b'{"body":{"id":5},"metadata":{"retries":0,"original-id":null}}'
MS = 1000


def _fill(url: str, key: str, count: int) -> None:
    client = redis.Redis.from_url(url)
    for start in range(0, count, PIPELINE * 10):
        client.rpush(key, *[PAYLOAD] * min(PIPELINE * 10, count - start))
    client.close()


def _raw_blpop(url: str, key: str, share: int, deadline: float) -> int:
    client = redis.Redis.from_url(url)
    done = 0
    while done < share and time.time() < deadline and client.blpop([key], timeout=1):
        done += 1
    return done


def _raw_pipelined_by(size: int, push: bool = False) -> Callable[[str, str, int, float], int]:
    """Pipelines of ``size`` LPOPs (or RPUSHes of one payload): one round trip each."""
    def pipelined(url: str, key: str, share: int, deadline: float) -> int:
        client = redis.Redis.from_url(url)
        done = 0
        while done < share and time.time() < deadline:
            pipe = client.pipeline(transaction=False)
            for _ in range(size):
                if push:
                    pipe.rpush(key, PAYLOAD)
                else:
                    pipe.lpop(key)
            replies = pipe.execute()
            got = size if push else sum(1 for item in replies if item is not None)
            if not got:
                break
            done += got
        return done

    return pipelined


def _add(url: str, queue: str, share: int, deadline: float) -> int:
    broker = open_broker(url)
    done = 0
    while done < share and time.time() < deadline:
        broker.add(queue, PAYLOAD)
        done += 1
    return done


def _add_many(url: str, queue: str, share: int, deadline: float) -> int:
    broker = open_broker(url)
    done = 0
    while done < share and time.time() < deadline:
        broker.add_many([NewJob(queue, PAYLOAD)] * BATCH)
        done += BATCH
    return done


def _consume(count: int) -> Callable[[str, str, int, float], int]:
    def consume(url: str, queue: str, share: int, deadline: float) -> int:
        broker = open_broker(url)
        done = 0
        while done < share and time.time() < deadline:
            jobs = broker.reserve([queue], count=count, timeout=1)
            if not jobs:
                break
            broker.ack([job.id for job in jobs])
            done += len(jobs)
        return done

    return consume


def _job(work: Callable[[str, str, int, float], int], url: str, queue: str, share: int, start: float,
         deadline: float, results: "multiprocessing.Queue[int]") -> None:
    time.sleep(max(0.0, start - time.time()))  # every process starts at the same instant
    results.put(work(url, queue, share, deadline))


def rate(work: Callable[[str, str, int, float], int], url: str, queue: str, jobs: int = JOBS,
         processes: int = PROCESSES) -> float:
    """jobs/s of ``processes`` processes sharing ``jobs``, from a common start."""
    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    start = time.time() + 0.5  # lets the forks settle
    deadline = start + PHASE_SECONDS
    procs = [multiprocessing.Process(target=_job, args=(work, url, queue, jobs // processes, start, deadline,
                                                        results)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    done = sum(results.get() for _ in procs)
    elapsed = time.time() - start
    for proc in procs:
        proc.join()
    return done / elapsed


def _latency_consumer(url: str, queue: str, samples: int, results: "multiprocessing.Queue[list[float]]") -> None:
    broker = open_broker(url)
    seen: list[float] = []
    while len(seen) < samples:
        jobs = broker.reserve([queue], timeout=5)
        now = time.time()
        if not jobs:
            break
        seen.extend(now - float(job.payload) for job in jobs)
        broker.ack([job.id for job in jobs])
    results.put(seen)


def _wait_for_blpop(url: str, timeout: float = 30.0) -> None:
    """Until some client is blocked in BLPOP: the latency consumer is waiting."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while not any(c["cmd"] == "blpop" for c in client.client_list()):
        if time.monotonic() > deadline:
            raise RuntimeError("the latency consumer never blocked in reserve")
        time.sleep(LATENCY_GAP)
    client.close()


def latency(url: str) -> list[float]:
    """enqueue -> start delays (s) seen by a consumer blocked in reserve."""
    results: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    consumer = multiprocessing.Process(target=_latency_consumer, args=(url, "bench-latency", LATENCY_SAMPLES,
                                                                       results))
    consumer.start()
    broker = open_broker(url)
    _wait_for_blpop(url)
    for _ in range(LATENCY_SAMPLES):
        broker.add("bench-latency", repr(time.time()).encode())
        time.sleep(LATENCY_GAP)
    seen = results.get()
    consumer.join()
    broker.close()
    return sorted(seen)


# -- the plug for bench/broker.py: an empty store and raw baselines ----------

_SERVER: list[RedisServer] = []  # one redis-server for the whole bench run


@contextlib.contextmanager
def redis_store(tmp: Path) -> Iterator[str]:
    """The URL of an empty database of one redis-server started on first use."""
    if not _SERVER:
        _SERVER.append(RedisServer(tmp / "redis").start())
        atexit.register(_SERVER[0].stop)
    client = redis.Redis.from_url(_SERVER[0].url)
    client.flushall()
    client.close()
    yield _SERVER[0].url


def raw_add(url: str, jobs: int, batch: int, processes: int) -> float:
    """One RPUSH round trip per job, or one pipeline of ``batch`` RPUSHes."""
    return rate(_raw_pipelined_by(batch, push=True), url, "raw", jobs, processes)


def raw_reserve_ack(url: str, jobs: int, batch: int, processes: int) -> float:
    """One BLPOP round trip per job, or LPOPs pipelined by ``batch``."""
    _fill(url, "raw", jobs)
    work = _raw_blpop if batch == 1 else _raw_pipelined_by(batch)
    return rate(work, url, "raw", jobs, processes)


RAW = {"add": raw_add, "reserve_ack": raw_reserve_ack}


def figures(url: str) -> list[str]:
    """Printable lines: each of our figures beside its raw limit."""
    _fill(url, "raw-1", JOBS)
    raw_single = rate(_raw_blpop, url, "raw-1")
    _fill(url, "raw-100", JOBS)
    raw_piped = rate(_raw_pipelined_by(PIPELINE), url, "raw-100")
    lines = [f"{'redis raw BLPOP per job (2 procs)':44s} {raw_single:10.0f} jobs/s",
             f"{'redis raw pipelined x100 (2 procs)':44s} {raw_piped:10.0f} jobs/s"]
    ours = [
        ("redis add", _add, "bench-1", raw_single),
        (f"redis add_many x{BATCH}", _add_many, "bench-10", raw_piped),
        ("redis reserve+ack", _consume(1), "bench-1", raw_single),
        (f"redis reserve x{BATCH} + batch ack", _consume(BATCH), "bench-10", raw_piped),
    ]
    for label, work, queue, limit in ours:
        jobs_per_s = rate(work, url, queue)
        lines.append(f"{label + ' (2 procs)':44s} {jobs_per_s:10.0f} jobs/s  {jobs_per_s / limit:5.2f} of raw")
    delays = latency(url)
    if delays:
        p50 = statistics.median(delays) * MS
        p99 = delays[int(len(delays) * 0.99) - 1] * MS
        lines.append(f"{'redis enqueue->start (idle consumer)':44s} p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    return lines


def main() -> int:
    if not server_binary():
        print("redis: skipped (redis-server is not installed; make test-services installs it)")
        return 0
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir)).start()
        try:
            for line in figures(server.url):
                print(line)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
