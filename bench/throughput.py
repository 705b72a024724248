#!/usr/bin/env python3
"""Throughput of a real daemon (SPEC targets on 2 cores, 2 consumer processes).

Prints, each with its target and the ratio to it:
- drain rate (jobs/s) of N no-op jobs for inline, isolated and command
  (/bin/true) workers, timed from the moment they fall due (they are added
  beforehand, delayed to one due time, so the producer's CPU is not in it);
- the raw rate of spawning /bin/true from 2 Python processes (posix_spawn),
  measured right before and right after the command drain: the command
  figure is a ratio against the mean of the two;
- the machine's fork limit (bench/forkrate.py: fork + _exit + waitpid from
  2 processes), for a bare interpreter and for one grown to the consumer's
  anonymous memory, measured in the same run: the isolated figure is a
  ratio against both;
- the drain rate of command jobs of which one in 50 sleeps 0.5 s ("mixed"):
  what a long job costs the others;
- for isolated and command, the CPU one job costs (the consumers and their
  job processes, from /proc) beside what one raw fork / spawn costs: unlike
  rates, these hold on a machine other tests are loading.
- enqueue -> start latency p50 / p99 on an idle daemon;
- master and consumer RSS.

Usage: python bench/throughput.py [--engine sqlite|redis] [--jobs N] [--only inline|isolated|command|mixed ...]
Every phase is bounded by --phase-timeout seconds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.forkrate import anon_mib, in_parallel  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

CONSUMERS = 2
JOBS = 10_000
BATCH = 50  # job_batch of the drain runs
ADD_CHUNK = 1000  # jobs per add_many call
ADD_LEAD_SECONDS = 3.0  # s: the drained jobs are added delayed by this, all due at once
LATENCY_SAMPLES = 200
LATENCY_GAP = 0.01  # s between two latency probes: the daemon is idle for each
SPAWN_SECONDS = 3.0
PHASE_TIMEOUT = 180.0
POLL = 0.02  # s between two looks at the queue length
MIB = 1024 * 1024
MS = 1000
RAW_SPAWN_SHARE = 0.80  # target of the command rate, as a share of the raw spawn rate
FORK_SECONDS = 3.0
FORKRATE = Path(__file__).resolve().parent / "forkrate.py"
STAT_UTIME, STAT_CSTIME = 11, 14  # utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat

TARGETS = {  # name: (target, higher is better)
    "inline jobs/s": (10_000, True),
    "isolated jobs/s": (2_000, True),
    "latency p50 ms": (5.0, False),
    "latency p99 ms": (20.0, False),
    "master RSS MiB": (35.0, False),
    "consumer RSS MiB": (35.0, False),
}

KINDS = {  # the drains: kind -> its worker
    "inline": {"type": "inline_python_worker", "name": "benchworkers:noop"},
    "isolated": {"type": "isolated_python_worker", "name": "benchworkers:noop"},
    "command": {"type": "command", "command": "/bin/true"},
    # /bin/sh jobs, one in MIXED_EVERY sleeping MIXED_SLEEP s: what a long
    # job costs the others (no target; whole batches waited for it).
    "mixed": {"type": "command", "command": "/bin/sh mixed.sh"},
}
MIXED_EVERY = 50
MIXED_SLEEP = 0.5  # s
MIXED_SHARE = 5  # the mixed drain runs --jobs / MIXED_SHARE jobs
MIXED_SH = f"""n="${{2#--body=}}"
if [ $((n % {MIXED_EVERY})) -eq 0 ]; then sleep {MIXED_SLEEP}; fi
"""

BENCH_WORKERS = '''
import os, time

def noop(job):
    return None

def latency(job):
    started = time.time()
    with open(os.environ["DQ_OUT"], "a") as out:
        out.write(f"{started - job.body:.6f}\\n")
'''


def report(name: str, value: float, target: float, higher_is_better: bool) -> None:
    ratio = value / target if target else float("nan")
    verdict = "ok" if (value >= target if higher_is_better else value <= target) else "MISSED"
    sign = ">=" if higher_is_better else "<="
    print(f"{name:<22} {value:>10.1f}   target {sign} {target:<8g} ratio {ratio:5.2f}  {verdict}", flush=True)


def raw_spawn_rate(seconds: float = SPAWN_SECONDS, processes: int = CONSUMERS) -> tuple[float, float]:
    """/bin/true spawned and reaped per second by ``processes`` forked
    Pythons, and the CPU ms one spawn costs (the Pythons and /bin/true)."""
    def spawn_loop() -> int:
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.waitpid(os.posix_spawn("/bin/true", ["/bin/true"], os.environ), 0)
            count += 1
        return count

    total, cpu = in_parallel(processes, spawn_loop)
    return total / seconds, cpu / max(total, 1) * MS


def cpu_seconds(pids: list[int]) -> float:
    """CPU used by these processes and the children they reaped (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[STAT_UTIME:STAT_CSTIME + 1])
    return total / os.sysconf("SC_CLK_TCK")


def raw_fork_rate(anon_mib: Optional[float] = None, seconds: float = FORK_SECONDS,
                  processes: int = CONSUMERS) -> tuple[float, float]:
    """fork + _exit + waitpid per second by ``processes`` fresh interpreters
    (grown to ``anon_mib`` of anonymous memory when given): the machine's
    fork limit; and the CPU ms one fork costs."""
    argv = [sys.executable, "-S", str(FORKRATE), str(seconds), str(processes)]
    if anon_mib is not None:
        argv.append(f"{anon_mib:.1f}")
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds * 10 + 30)
    rate, cpu_ms = done.stdout.split()
    return float(rate), float(cpu_ms)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL)
    return False


def start_daemon(workdir: Path, url: str, queue: str, worker: dict) -> Daemon:
    workdir.mkdir()
    (workdir / "benchworkers.py").write_text(BENCH_WORKERS)
    (workdir / "mixed.sh").write_text(MIXED_SH)  # the daemon's cwd is workdir
    daemon = Daemon(workdir, url, {queue: {"worker": worker}},
                    consumer_defaults={"min_processes": CONSUMERS, "max_processes": CONSUMERS,
                                       "job_batch": BATCH})
    return daemon.start(consumers=CONSUMERS)


def drain_rate(daemon: Daemon, queue: str, jobs: int, timeout: float) -> tuple[float, bool]:
    """Jobs/s from the moment the jobs fall due until the queue is empty and
    nothing is leased.

    The jobs are added beforehand, each delayed to one common due time: the
    producer's own CPU (building and encoding 10,000 envelopes, ~0.3-0.5 s
    of a core) stays out of the drain's figure, as it is out of the raw
    baselines; the consumers, blocked in reserve until then, all start at
    once, as on a burst of jobs."""
    due = time.time() + ADD_LEAD_SECONDS
    for first in range(0, jobs, ADD_CHUNK):
        daemon.add(queue, range(first, min(first + ADD_CHUNK, jobs)), delay=due - time.time())
    late = time.time() - due
    if late > 0:
        sys.stderr.write(f"warning: adding {jobs} jobs outlasted the {ADD_LEAD_SECONDS:g} s lead by"
                         f" {late:.2f} s; the drain figure includes that much adding\n")
    started = time.monotonic() + (due - time.time())
    time.sleep(max(0.0, started - time.monotonic()))  # a known instant, not a condition

    def drained() -> bool:
        # A cheap look first: sqlite's stats() counts every row (~4 CPU ms at
        # 10,000 jobs), so polling it every POLL took a sixth of a core from
        # the drain it measures; backlog() stops at the first ready job.
        if daemon.broker.backlog([queue], 1)[queue]:
            return False
        [stats] = daemon.broker.stats([queue])
        return stats.ready + stats.delayed + stats.in_flight == 0

    finished = wait_until(drained, timeout)
    elapsed = time.monotonic() - started
    [stats] = daemon.broker.stats([queue])
    left = stats.ready + stats.delayed + stats.in_flight
    return (jobs - left) / elapsed, finished


def rss(daemon: Daemon) -> tuple[float, float]:
    master = psutil.Process(daemon.pid).memory_info().rss / MIB
    consumers = [psutil.Process(pid).memory_info().rss / MIB for pid in daemon.consumer_pids()]
    return master, max(consumers)


def latencies(daemon: Daemon, samples: int) -> list[float]:
    for _ in range(samples):
        daemon.add("latency", [time.time()])
        time.sleep(LATENCY_GAP)
    wait_until(lambda: len(daemon.out_path.read_text().split()) >= samples, PHASE_TIMEOUT)
    return sorted(float(v) * MS for v in daemon.out_path.read_text().split())


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--phase-timeout", type=float, default=PHASE_TIMEOUT)
    parser.add_argument("--only", choices=tuple(KINDS), action="append",
                        help="run only these drains (repeatable); skips latency and RSS")
    args = parser.parse_args(argv)
    print(f"engine={args.engine} jobs={args.jobs} consumers={CONSUMERS} job_batch={BATCH} "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dq-bench-") as tmp:
        root = Path(tmp)
        redis: Optional[RedisServer] = None
        if args.engine == "redis":
            redis = RedisServer(root / "redis").start()
        try:
            run_all(root, args, redis)
        finally:
            if redis is not None:
                redis.stop()
    return 0


def broker_url(root: Path, name: str, redis: Optional[RedisServer]) -> str:
    if redis is None:
        return f"sqlite://{root}/{name}.db"
    import redis as redis_py  # noqa: PLC0415

    client = redis_py.Redis(host="127.0.0.1", port=redis.port)
    client.flushall()
    client.close()
    return redis.url


def run_all(root: Path, args: argparse.Namespace, redis: Optional[RedisServer]) -> None:
    kinds = {kind: worker for kind, worker in KINDS.items() if not args.only or kind in args.only}
    memories: dict[str, tuple[float, float]] = {}
    for kind, worker in kinds.items():
        if kind == "command":
            spawn_rate, spawn_cpu = raw_spawn_rate()
            print(f"{'raw posix_spawn/s':<22} {spawn_rate:>10.1f}   (2 processes, /bin/true; "
                  f"{spawn_cpu:.3f} CPU ms each)", flush=True)
        daemon = start_daemon(root / kind, broker_url(root, kind, redis), kind, worker)
        try:
            consumers = daemon.consumer_pids()
            cpu_before = cpu_seconds(consumers)
            jobs = args.jobs // MIXED_SHARE if kind == "mixed" else args.jobs
            rate, finished = drain_rate(daemon, kind, jobs, args.phase_timeout)
            job_cpu = (cpu_seconds(consumers) - cpu_before) / jobs * MS
            if kind in ("inline", "isolated"):
                memories[kind] = rss(daemon)
                anon = max(anon_mib(str(pid)) for pid in consumers)
        finally:
            daemon.stop()
        name = f"{kind} jobs/s" + ("" if finished else " (timed out)")
        if kind == "command":
            # Again right after the drain: the load of a shared machine moves
            # within a minute, so the target is the mean of both samples.
            after_rate, after_cpu = raw_spawn_rate()
            print(f"{'raw posix_spawn/s':<22} {after_rate:>10.1f}   (again, after the command drain; "
                  f"{after_cpu:.3f} CPU ms each)", flush=True)
            spawn_rate, spawn_cpu = (spawn_rate + after_rate) / 2, (spawn_cpu + after_cpu) / 2
            report(name, rate, spawn_rate * RAW_SPAWN_SHARE, True)
            print(f"{'command CPU ms/job':<22} {job_cpu:>10.3f}   raw spawn {spawn_cpu:.3f}  "
                  f"raw/command {spawn_cpu / job_cpu:5.2f}", flush=True)
        elif kind == "mixed":
            print(f"{name:<22} {rate:>10.1f}   ({jobs} /bin/sh jobs, 1 in {MIXED_EVERY} sleeping {MIXED_SLEEP:g} s; "
                  f"{job_cpu:.3f} CPU ms/job; no target)", flush=True)
        else:
            report(name, rate, *TARGETS[f"{kind} jobs/s"])
            if kind == "inline":  # the consumer's own cost per job (isolated: see below)
                print(f"{'inline CPU ms/job':<22} {job_cpu:>10.3f}", flush=True)
        if kind == "isolated":
            report_fork_limits(rate, job_cpu, anon)
    if args.only:
        return
    daemon = start_daemon(root / "latency", broker_url(root, "latency", redis), "latency",
                          {"type": "inline_python_worker", "name": "benchworkers:latency"})
    try:
        values = latencies(daemon, LATENCY_SAMPLES)
    finally:
        daemon.stop()
    report("latency p50 ms", percentile(values, 0.50), *TARGETS["latency p50 ms"])
    report("latency p99 ms", percentile(values, 0.99), *TARGETS["latency p99 ms"])
    print(f"{'latency mean ms':<22} {statistics.mean(values):>10.1f}", flush=True)
    report("master RSS MiB", memories["inline"][0], *TARGETS["master RSS MiB"])
    report("consumer RSS MiB", memories["inline"][1], *TARGETS["consumer RSS MiB"])


def report_fork_limits(isolated_rate: float, job_cpu: float, consumer_anon: float) -> None:
    """The isolated rate and CPU as shares of what fork itself allows on this machine now."""
    (bare, bare_cpu), (sized, sized_cpu) = raw_fork_rate(), raw_fork_rate(consumer_anon)
    print(f"{'raw fork/s (bare)':<22} {bare:>10.1f}   (2 processes; {bare_cpu:.3f} CPU ms each) "
          f"isolated/bare {isolated_rate / bare:5.2f}", flush=True)
    print(f"{'raw fork/s (consumer)':<22} {sized:>10.1f}   (2 processes of {consumer_anon:.1f} MiB anon; "
          f"{sized_cpu:.3f} CPU ms each) isolated/consumer {isolated_rate / sized:5.2f}", flush=True)
    print(f"{'isolated CPU ms/job':<22} {job_cpu:>10.3f}   raw fork (consumer) {sized_cpu:.3f}  "
          f"raw/isolated {sized_cpu / job_cpu:5.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
