"""What an idle consumer of many sqlite queues costs, counted in statements
(a trace callback on its connection), not timed: it must not grow with the
number of queues. Before sqlite_due.py, each idle second ran four statements
per queue: 40,000 a second for 10,000 queues, a third of a core."""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from disqontrol_client.brokers.broker import NewJob
from disqontrol_client.brokers.sqlite import SqliteBroker
from disqontrol_client.brokers.sqlite_due import PROBE

FEW, MANY = 10, 10_000
IDLE_RESERVES = 3
RESERVE_TIMEOUT = 0.3  # s: each reserve blocks, as an idle consumer's does
IDLE_STATEMENTS = 12  # per blocking reserve, whatever the queue count (a ttl sweep step included)
TAKE_STATEMENTS = 8  # per reserve that takes a job, whatever the queue count
LEASE = 1.0  # s
SHORT_BLOCK = 0.1  # s: a reserve that blocks, and so looks when the next job is due


def queues(count: int) -> list[str]:
    return [f"tenant-{n:05d}" for n in range(count)]


def counted(broker: SqliteBroker) -> list[str]:
    """The statements the broker's connection runs from now on."""
    seen: list[str] = []
    broker._conn().set_trace_callback(seen.append)
    return seen


def idle_statements(path: Path, count: int) -> list[int]:
    """Statements of each of IDLE_RESERVES blocking reserves over ``count``
    empty queues, after a first one (which looks, once)."""
    broker = SqliteBroker(str(path))
    try:
        names = queues(count)
        broker.add("elsewhere", b"another group's job")  # a database with jobs, none of these queues'
        assert broker.reserve(names, count=10, timeout=0) == []
        seen = counted(broker)
        per_reserve = []
        for _ in range(IDLE_RESERVES):
            before = len(seen)
            assert broker.reserve(names, count=10, timeout=RESERVE_TIMEOUT) == []
            per_reserve.append(len(seen) - before)
        return per_reserve
    finally:
        broker.close()


def test_an_idle_reserve_costs_the_same_few_statements_for_ten_or_ten_thousand_queues(tmp_path: Path) -> None:
    # Given consumers of 10 and of 10,000 empty queues
    few = idle_statements(tmp_path / "few.db", FEW)
    many = idle_statements(tmp_path / "many.db", MANY)

    # Then each blocking reserve that finds nothing runs a few statements, not some per queue
    assert max(few) <= IDLE_STATEMENTS, few
    assert max(many) <= IDLE_STATEMENTS, f"{many} statements per idle reserve of {MANY} queues"


def test_taking_a_job_of_the_last_of_ten_thousand_queues_costs_a_few_statements(tmp_path: Path) -> None:
    # Given a consumer of 10,000 queues that found nothing, then a job in the last queue
    broker = SqliteBroker(str(tmp_path / "jobs.db"))
    try:
        names = queues(MANY)
        assert broker.reserve(names, timeout=0) == []
        job_id = broker.add(names[-1], b"x")
        seen = counted(broker)

        # When it reserves
        got = broker.reserve(names, count=10, timeout=0)

        # Then it got the job with a few statements, not one per queue before it
        assert [d.id for d in got] == [job_id]
        assert len(seen) <= TAKE_STATEMENTS, seen
    finally:
        broker.close()


def test_the_backlog_of_ten_thousand_queues_is_one_statement(tmp_path: Path) -> None:
    # Given ready jobs in two of 10,000 queues (the autoscaler asks for them all each second)
    broker = SqliteBroker(str(tmp_path / "jobs.db"))
    try:
        names = queues(MANY)
        broker.add_many([NewJob(names[5], b"x") for _ in range(3)] + [NewJob(names[-1], b"y")])
        seen = counted(broker)

        # When the backlog is asked, capped at 2
        backlog = broker.backlog(names, cap=2)

        # Then every queue has its capped count, from one statement
        assert len(backlog) == MANY and sum(backlog.values()) == 3
        assert (backlog[names[5]], backlog[names[-1]], backlog[names[0]]) == (2, 1, 0)
        assert len(seen) == 1, f"{len(seen)} statements"
    finally:
        broker.close()


def test_a_forked_child_does_not_take_its_parents_nothing_due_for_its_own(tmp_path: Path) -> None:
    # Given a consumer of many queues that found nothing due, then an add by another connection
    path = str(tmp_path / "jobs.db")
    broker = SqliteBroker(path)
    names = queues(FEW)
    assert broker.reserve(names, timeout=0) == []
    other = SqliteBroker(path)
    job_id = other.add(names[3], b"x")
    other.close()

    # When a forked child reserves through the same broker (its own new connection,
    # whose data version starts where the parent's stood)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it got the job
        got = broker.reserve(names, timeout=0)
        os._exit(0 if [d.id for d in got] == [job_id] else 1)
    _, status = os.waitpid(pid, 0)

    # Then the child got the job
    assert os.waitstatus_to_exitcode(status) == 0
    broker.close()


@pytest.mark.parametrize("count", [2, FEW])  # a lease trying each queue, and one probing first
def test_after_another_connections_lease_a_blocked_reserve_waits_for_that_lease_not_longer(
    tmp_path: Path, count: int
) -> None:
    # Given a consumer that found nothing due in any of its queues (nothing at all: no end to wait for)
    path = str(tmp_path / "jobs.db")
    broker = SqliteBroker(path)
    names = queues(count)
    assert broker.reserve(names, timeout=SHORT_BLOCK) == []

    # When another consumer leases a new job of theirs for 1 s, and ours looks again
    other = SqliteBroker(path)
    other.add(names[-1], b"x", retry=LEASE)
    assert len(other.reserve(names, timeout=0)) == 1
    assert broker._lease(names, 1) == []

    # Then its wait is cut to that lease's end, not to the 2 s safety net
    assert broker._until_next_due(names, armed=True) <= LEASE
    other.close()
    broker.close()


class AddDuringProbe:
    """The broker's real connection, where another thread's add runs (and
    ends) right after the probe's statement, before the probe answers: the
    interleaving of a consumer thread and a producer thread sharing the
    broker, pinned."""

    def __init__(self, db: sqlite3.Connection, add: Callable[[], None]) -> None:
        self._db = db
        self._add: Optional[Callable[[], None]] = add

    def execute(self, sql: str, *params: Any) -> Any:
        cursor = self._db.execute(sql, *params)
        if sql != PROBE or self._add is None:
            return cursor
        rows = cursor.fetchall()
        thread = threading.Thread(target=self._add)
        thread.start()
        thread.join()
        self._add = None
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_an_add_by_another_thread_during_a_probe_is_not_missed(tmp_path: Path) -> None:
    # Given a consumer thread and a producer thread sharing one broker (one
    # connection), the producer's add committing while the consumer's probe
    # is between its statement and its answer
    broker = SqliteBroker(str(tmp_path / "jobs.db"))
    names = queues(FEW)
    added: list[str] = []
    probing = AddDuringProbe(broker._store.conn(), lambda: added.append(broker.add(names[3], b"x")))
    broker._conn = lambda: probing  # type: ignore[method-assign,assignment,return-value]
    assert broker.reserve(names, timeout=0) == []  # its statement ran before the add
    assert len(added) == 1

    # When the consumer reserves again
    got = broker.reserve(names, timeout=0)

    # Then it takes the job, not its own connection's unchanged data version for "nothing due"
    assert [d.id for d in got] == added
    broker.close()
