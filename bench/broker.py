"""Broker throughput: our engine against the same work in raw client calls.

    python bench/broker.py [--engine sqlite|redis|disque|all] [--jobs N]

One line per figure: name, jobs/s, the raw baseline's jobs/s measured in the
same run (the engine's limit on this machine), their ratio, the target and
PASS/MISS (targets are the sqlite engine's; redis and disque figures are
context against their own limits). Figures: add one job at a time and in batches of 10 (one
producer process), reserve+ack one at a time and in batches of 10 (two
consumer processes; each reserve acks the previous batch, as the daemon
drains; sqlite also prints a raw baseline doing the same, the delete and the
lease in one transaction, beside the two-transaction one), each the best of --repeat runs; then the wake-up
latency of a consumer blocked in reserve when another process adds.
sqlite also runs the batch figures on ``?shards=2`` (docs/brokers.md): adds
from 2 producer processes, and reserve+ack by 2 consumers of a queue filled
by 2 producer processes, as a web app's workers would; the raw baseline then
does the same on 2 files, one per process.
Bounded in jobs (--jobs) and in time (MAX_SECONDS per measurement).

An engine plugs in through ENGINES: a context manager giving the URL of an
empty store, and the raw baseline of each kind of figure.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from disqontrol_client.brokers import NewJob, open_broker  # noqa: E402
from disqontrol_client.brokers import sqlite_store  # noqa: E402
from disqontrol_client.job import encode_envelope, fresh_metadata  # noqa: E402

import redis_broker  # noqa: E402 (bench/redis_broker.py, beside this file)

KNOWN_ENGINES = ("sqlite", "redis", "disque")
DEFAULT_JOBS = 20000
DEFAULT_REPEAT = 3  # each figure is the best of this many runs: the machine may be busy
WAKE_SAMPLES = 20
WAKE_PAUSE = 0.02  # s between the consumer blocking and our add
WAKE_TARGET_MS = 50.0
MAX_SECONDS = 30.0  # per measurement: workers stop there and report what they did
CONSUMERS = 2
PRODUCERS = 2  # of the sharded figures (a web app's workers)
SHARDS = 2
SHARDED = "_shards"  # raw baseline key suffix of the sharded figures
BATCH = 10
PREFILL_CHUNK = 1000
QUEUE = "bench"
FOLDED = "_folded"  # raw baseline key (and line name) of a figure with the ack in the lease
PAYLOAD = encode_envelope({"image": "pictures/2026/11/28/cat.png", "width": 640}, fresh_metadata())


@dataclass(frozen=True)
class Figure:
    name: str
    kind: str  # "add" or "reserve_ack"
    batch: int
    processes: int
    target: float  # jobs/s
    shards: int = 1  # > 1: on ?shards=N, beside a raw baseline of one file per process


FIGURES = (
    Figure("add", "add", 1, 1, 10000),
    Figure(f"add_batch{BATCH}", "add", BATCH, 1, 10000),
    Figure("reserve_ack", "reserve_ack", 1, CONSUMERS, 15000),
    Figure(f"reserve_ack_batch{BATCH}", "reserve_ack", BATCH, CONSUMERS, 100000),
    Figure(f"add_batch{BATCH}_shards{SHARDS}", "add", BATCH, PRODUCERS, 10000, SHARDS),
    Figure(f"reserve_ack_batch{BATCH}_shards{SHARDS}", "reserve_ack", BATCH, CONSUMERS, 100000, SHARDS),
)

# A raw baseline: (url, jobs, batch, processes) -> jobs/s
Raw = Callable[[str, int, int, int], float]


@dataclass(frozen=True)
class Engine:
    store: Callable[[Path], ContextManager[str]]  # yields the URL of an empty store
    raw: dict[str, Raw]  # figure kind -> raw baseline
    # The throughput targets are the sqlite engine's (issue #2); the network
    # engines' figures are context, each against its own raw limit.
    has_targets: bool = False


# -- running work in processes ------------------------------------------------

def _worker(work: Callable[..., int], args: tuple, ready: mp.Event, go: mp.Event,
            done: "mp.Queue[int]") -> None:
    setup = work(*args, start=None)  # open connections before the clock starts
    ready.set()
    go.wait()
    done.put(work(*args, start=setup))


def run_parallel(work: Callable[..., int], args: tuple, processes: int,
                 indexed: bool = False) -> tuple[int, float]:
    """Run ``work`` in ``processes`` forked processes at once: (jobs, seconds).

    ``work(*args, start=None)`` prepares and returns a handle (untimed);
    ``work(*args, start=handle)`` does the work and returns jobs done.
    ``indexed``: each process gets its number as one more argument."""
    ctx = mp.get_context("fork")
    go, done = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(processes)]
    procs = [ctx.Process(target=_worker, args=(work, (*args, i) if indexed else args, r, go, done))
             for i, r in enumerate(readies)]
    for p in procs:
        p.start()
    for r in readies:
        if not r.wait(MAX_SECONDS):
            raise RuntimeError("a bench worker did not start")
    started = time.perf_counter()
    go.set()
    total = sum(done.get(timeout=MAX_SECONDS * 2) for _ in procs)
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join(MAX_SECONDS)
    return total, elapsed


# -- our broker ---------------------------------------------------------------

def broker_add(url: str, jobs: int, batch: int, *, start: object) -> object:
    if start is None:
        return open_broker(url)
    broker = start
    deadline = time.monotonic() + MAX_SECONDS
    done = 0
    items = [NewJob(QUEUE, PAYLOAD)] * batch
    while done < jobs and time.monotonic() < deadline:
        if batch == 1:
            broker.add(QUEUE, PAYLOAD)
        else:
            broker.add_many(items)
        done += batch
    broker.close()
    return done


def broker_reserve_ack(url: str, batch: int, *, start: object) -> object:
    if start is None:
        return open_broker(url)
    broker = start
    deadline = time.monotonic() + MAX_SECONDS
    done = 0
    previous: list[str] = []
    while time.monotonic() < deadline:  # as the daemon drains: each reserve acks the last batch
        got = broker.reserve([QUEUE], count=batch, timeout=0, ack=previous)
        previous = [d.id for d in got]
        if not got:
            break
        done += len(got)
    broker.ack(previous)
    broker.close()
    return done


def prefill(url: str, jobs: int) -> None:
    with open_broker(url) as broker:
        for start in range(0, jobs, PREFILL_CHUNK):
            broker.add_many([NewJob(QUEUE, PAYLOAD)] * min(PREFILL_CHUNK, jobs - start))


def measure_broker(url: str, figure: Figure, jobs: int) -> float:
    if figure.shards > 1:
        url = f"{url}?shards={figure.shards}"
    if figure.kind == "add":
        done, secs = run_parallel(broker_add, (url, jobs // figure.processes, figure.batch), figure.processes)
    elif figure.shards > 1:  # filled by producer processes, each on its home shard
        run_parallel(broker_add, (url, jobs // PRODUCERS, BATCH), PRODUCERS)
        done, secs = run_parallel(broker_reserve_ack, (url, figure.batch), figure.processes)
    else:
        prefill(url, jobs)
        done, secs = run_parallel(broker_reserve_ack, (url, figure.batch), figure.processes)
    return done / secs


# -- sqlite: the raw baseline -------------------------------------------------

RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, queue TEXT, payload BLOB,"
    " leased INTEGER DEFAULT 0, due REAL)",
    "CREATE INDEX IF NOT EXISTS raw_queue_due ON raw (queue, due)",
)
RAW_INSERT = "INSERT INTO raw (queue, payload, due) VALUES (?, ?, ?)"
RAW_LEASE = ("UPDATE raw SET leased = 1, due = ?1 + 600 WHERE id {} (SELECT id FROM raw"
             " WHERE queue = ?2 AND due <= ?1 ORDER BY due LIMIT ?3) RETURNING id, payload")


def _raw_connect(url: str, file: str = "") -> sqlite3.Connection:
    """Plain sqlite3 with the engine's own pragmas: the limit we compare to."""
    db = sqlite3.connect(url[len("sqlite://"):] + ".raw" + file, timeout=MAX_SECONDS, isolation_level=None)
    db.execute(f"PRAGMA page_size={sqlite_store.PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA secure_delete=OFF")
    db.execute(f"PRAGMA wal_autocheckpoint={sqlite_store.WAL_AUTOCHECKPOINT}")
    for statement in RAW_SCHEMA:
        db.execute(statement)
    return db


def _raw_add(url: str, jobs: int, batch: int, file: object = "", *, start: object) -> object:
    if start is None:
        return _raw_connect(url, str(file))
    db: sqlite3.Connection = start  # type: ignore[assignment]
    done = 0
    while done < jobs:
        now = time.time()
        if batch == 1:
            db.execute(RAW_INSERT, (QUEUE, PAYLOAD, now))
        else:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(RAW_INSERT, [(QUEUE, PAYLOAD, now)] * batch)
            db.execute("COMMIT")
        done += batch
    db.close()
    return done


def _raw_delete(db: sqlite3.Connection, ids: list[int]) -> None:
    db.execute(f"DELETE FROM raw WHERE id IN ({','.join('?' * len(ids))})", ids)


def _raw_reserve_ack(url: str, batch: int, folded: bool, file: object = "", *, start: object) -> object:
    """Lease then delete a batch: two transactions, or with ``folded`` the
    delete of the previous batch and the next lease in one."""
    if start is None:
        return _raw_connect(url, str(file))
    db: sqlite3.Connection = start  # type: ignore[assignment]
    lease = RAW_LEASE.format("=" if batch == 1 else "IN")
    done = 0
    previous: list[int] = []
    while True:
        db.execute("BEGIN IMMEDIATE")
        if previous:
            _raw_delete(db, previous)
        rows = db.execute(lease, (time.time(), QUEUE, batch)).fetchall()
        db.execute("COMMIT")
        if not rows:
            break
        if folded:
            previous = [r[0] for r in rows]
        else:
            _raw_delete(db, [r[0] for r in rows])
        done += len(rows)
    db.close()
    return done


def sqlite_raw_add(url: str, jobs: int, batch: int, processes: int) -> float:
    done, secs = run_parallel(_raw_add, (url, jobs, batch), processes)
    return done / secs


def _raw_fill(url: str, jobs: int, file: str = "") -> None:
    db = _raw_connect(url, file)
    db.execute("DELETE FROM raw")
    db.execute("BEGIN IMMEDIATE")
    db.executemany(RAW_INSERT, [(QUEUE, PAYLOAD, time.time())] * jobs)
    db.execute("COMMIT")
    db.close()


def sqlite_raw_reserve_ack(url: str, jobs: int, batch: int, processes: int, folded: bool = False) -> float:
    _raw_fill(url, jobs)
    done, secs = run_parallel(_raw_reserve_ack, (url, batch, folded), processes)
    return done / secs


def sqlite_raw_add_files(url: str, jobs: int, batch: int, processes: int) -> float:
    """Each process adds to a file of its own."""
    done, secs = run_parallel(_raw_add, (url, jobs // processes, batch), processes, indexed=True)
    return done / secs


def sqlite_raw_reserve_ack_files(url: str, jobs: int, batch: int, processes: int) -> float:
    """Each process leases from (and acks in) a file of its own, the acks
    folded into the next lease as our engine does."""
    for file in range(processes):
        _raw_fill(url, jobs // processes, str(file))
    done, secs = run_parallel(_raw_reserve_ack, (url, batch, True), processes, indexed=True)
    return done / secs


def sqlite_raw_reserve_ack_folded(url: str, jobs: int, batch: int, processes: int) -> float:
    return sqlite_raw_reserve_ack(url, jobs, batch, processes, folded=True)


@contextlib.contextmanager
def empty_sqlite_store(tmp: Path) -> Iterator[str]:
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        yield f"sqlite://{d}/jobs.db"


ENGINES: dict[str, Engine] = {
    "sqlite": Engine(empty_sqlite_store, {"add": sqlite_raw_add, "reserve_ack": sqlite_raw_reserve_ack,
                                          "reserve_ack" + FOLDED: sqlite_raw_reserve_ack_folded,
                                          "add" + SHARDED: sqlite_raw_add_files,
                                          "reserve_ack" + SHARDED: sqlite_raw_reserve_ack_files},
                     has_targets=True),
}
if redis_broker.server_binary():  # raw baselines: RPUSH / BLPOP per job, pipelines per batch
    ENGINES["redis"] = Engine(redis_broker.redis_store, redis_broker.RAW)

from bench import disque as disque_bench  # noqa: E402  (needs $DISQUE_SERVER)

if disque_bench.available():
    ENGINES["disque"] = Engine(
        disque_bench.store, disque_bench.raw_figures(run_parallel, prefill, QUEUE, PAYLOAD, MAX_SECONDS))


# -- report -------------------------------------------------------------------

def best_of(repeat: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(repeat))


def _wake_consumer(url: str, samples: int, ready: mp.Event, woke: "mp.Queue[float]") -> None:
    with open_broker(url) as broker:
        ready.set()
        for _ in range(samples):
            got = broker.reserve([QUEUE], timeout=MAX_SECONDS)
            woke.put(time.monotonic())
            broker.ack([d.id for d in got])


def wake_latency_ms(url: str, samples: int = WAKE_SAMPLES) -> list[float]:
    """How long a consumer blocked in reserve (another process) takes to
    return after our add starts, in ms."""
    ctx = mp.get_context("fork")
    ready, woke = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_wake_consumer, args=(url, samples, ready, woke))
    proc.start()
    ready.wait(MAX_SECONDS)
    latencies = []
    with open_broker(url) as broker:
        for _ in range(samples):
            time.sleep(WAKE_PAUSE)  # let the consumer reach its sleep: we measure the wake-up
            added = time.monotonic()
            broker.add(QUEUE, PAYLOAD)
            latencies.append((woke.get(timeout=MAX_SECONDS) - added) * 1000)
    proc.join(MAX_SECONDS)
    return sorted(latencies)


def bench_engine(name: str, engine: Engine, jobs: int, tmp: Path,
                 figures: Sequence[Figure] = FIGURES, repeat: int = DEFAULT_REPEAT) -> list[str]:
    lines = []
    for figure in figures:
        kind = figure.kind + (SHARDED if figure.shards > 1 else "")
        if kind not in engine.raw:
            continue  # sharded figures: sqlite's only

        def ours() -> float:
            with engine.store(tmp) as url:
                return measure_broker(url, figure, jobs)

        def raw() -> float:
            with engine.store(tmp) as url:
                return engine.raw[kind](url, jobs, figure.batch, figure.processes)

        mine, limit = best_of(repeat, ours), best_of(repeat, raw)
        verdict = "PASS" if mine >= figure.target else "MISS"
        judged = f"target {figure.target:7.0f}  {verdict}" if engine.has_targets else "(context: no target)"
        lines.append(f"{name:7s} {figure.name:22s} {mine:9.0f} jobs/s  raw {limit:9.0f} jobs/s  "
                     f"ratio {mine / limit:5.2f}  {judged}")
        folded = engine.raw.get(kind + FOLDED)
        if folded is not None:  # the same work with the ack folded into the lease
            def raw_folded() -> float:
                with engine.store(tmp) as url:
                    return folded(url, jobs, figure.batch, figure.processes)

            limit = best_of(repeat, raw_folded)
            lines.append(f"{name:7s} {figure.name + FOLDED:22s} {'':9s}         raw {limit:9.0f} jobs/s  "
                         f"ratio {mine / limit:5.2f}  (1 transaction per batch)")
    with engine.store(tmp) as url:
        lat = wake_latency_ms(url)
    median, worst = lat[len(lat) // 2], lat[-1]
    verdict = "PASS" if median <= WAKE_TARGET_MS else "MISS"
    lines.append(f"{name:7s} {'wake_latency':22s} median {median:6.2f} ms  max {worst:6.2f} ms"
                 f"  ({len(lat)} adds from another process)  target {WAKE_TARGET_MS:.0f} ms  {verdict}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=[*KNOWN_ENGINES, "all"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="jobs per figure")
    parser.add_argument("--only", metavar="FIGURE", action="append",
                        choices=[f.name for f in FIGURES], help="run only this figure (repeatable)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per figure (best kept)")
    args = parser.parse_args(argv)
    names = list(ENGINES) if args.engine == "all" else [args.engine]
    missing = [n for n in names if n not in ENGINES]
    if missing:
        hint = " (the disque bench runs when $DISQUE_SERVER names a disque-server)" if "disque" in missing else ""
        parser.error(f"no bench for engine {missing[0]!r} yet; available: {', '.join(ENGINES)}{hint}")
    with tempfile.TemporaryDirectory(prefix="disqontrol-bench-") as tmp:
        for name in names:
            figures = [f for f in FIGURES if not args.only or f.name in args.only]
            for line in bench_engine(name, ENGINES[name], args.jobs, Path(tmp), figures, args.repeat):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
