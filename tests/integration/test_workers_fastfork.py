"""The isolated worker's fork without Python's at-fork hooks
(disqontrold.workers.fastfork): what the skipped hooks did must still hold
in real forked job processes."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

from disqontrol_client.job import Job, fresh_metadata
from disqontrold.workers import fastfork
from disqontrold.workers.python import IsolatedPythonWorker

JOBS = 8
TIMEOUT = 30.0


def draw(job: Job) -> dict[str, object]:
    return {"pid": os.getpid(), "number": random.random(), "threads": threading.active_count()}


def run_batch() -> list[dict[str, object]]:
    jobs = [Job(body=n, queue="q", metadata=fresh_metadata(), id=f"j{n}") for n in range(JOBS)]
    outcomes = IsolatedPythonWorker(draw, "draw").run_many(jobs, TIMEOUT)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    return [o.result for o in outcomes]


def test_each_job_process_draws_its_own_random_numbers() -> None:
    random.seed(1234)  # the parent's state every child starts from
    results = run_batch()
    assert len({r["pid"] for r in results}) == JOBS
    assert len({r["number"] for r in results}) == JOBS  # reseeded in each child
    assert os.getpid() not in {r["pid"] for r in results}


def test_a_threaded_consumer_falls_back_to_os_fork(monkeypatch) -> None:
    """With another thread alive, the full os.fork (and its hooks) is used."""
    calls = []
    real_fork = os.fork
    monkeypatch.setattr(fastfork.os, "fork", lambda: calls.append(1) or real_fork())
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        results = run_batch()
    finally:
        stop.set()
        helper.join(TIMEOUT)
    assert len(calls) == JOBS
    assert {r["threads"] for r in results} == {1}  # the hooks marked the helper thread gone


def test_single_threaded_fork_skips_os_fork(monkeypatch) -> None:
    def refused() -> int:
        raise AssertionError("os.fork used by a single-threaded consumer")

    monkeypatch.setattr(fastfork.os, "fork", refused)
    assert threading.active_count() == 1
    results = run_batch()
    assert len({r["pid"] for r in results}) == JOBS


SETTLE_CHILD = """
import gc, weakref
from disqontrold.workers import fastfork
class Node:
    pass
gc.disable()  # no automatic collection may free the garbage before settle does
node = Node()
node.self = node  # a cycle: garbage only the collector frees
garbage = weakref.ref(node)
del node
fastfork.settle()
print(gc.get_freeze_count(), int(garbage() is None))
"""


def test_settle_collects_then_freezes_what_is_left() -> None:
    # Given a fresh interpreter holding collectable garbage (gc is process-wide:
    # not frozen here, in the test process)
    done = subprocess.run([sys.executable, "-c", SETTLE_CHILD], capture_output=True, text=True,
                          timeout=TIMEOUT, check=True)
    frozen, collected = (int(v) for v in done.stdout.split())
    # Then the garbage was collected (not frozen with the rest), the survivors frozen
    assert collected == 1
    assert frozen > 0
