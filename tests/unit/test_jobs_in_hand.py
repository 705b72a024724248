"""The consumer's bookkeeping of what it owes the broker (pure logic: the
broker here only refuses; the daemon tests use real ones)."""
from __future__ import annotations

import time

from disqontrol_client.errors import BrokerUnavailable
from disqontrol_client.job import Job
from disqontrol_client.submit import LEASE_GRACE
from disqontrold.jobs_in_hand import JobsInHand

EXIT_CODE = 3


class UnreachableBroker:
    def ack(self, ids: list[str]) -> None:
        raise BrokerUnavailable("cannot reach the broker")


def test_acks_that_could_not_be_sent_are_kept_for_the_next_reserve():
    jobs = JobsInHand(EXIT_CODE, {})
    jobs.broker = UnreachableBroker()  # type: ignore[assignment]
    jobs.succeeded("S-1")
    jobs.succeeded("S-2")

    jobs.flush_acks()

    assert jobs.unacked == ["S-1", "S-2"]  # not dropped: they would run again after their lease


def test_a_run_outlasts_the_waiting_jobs_whose_lease_is_shorter_than_it():
    jobs = JobsInHand(EXIT_CODE, {})
    jobs.leased_at = time.monotonic()
    timeouts = {"quick": 2.0, "slow": 200.0}
    waiting = [Job("a", "quick", id="S-1"), Job("b", "slow", id="S-2")]

    # A run of up to 200 s outlasts a quick job's lease (2 s + the grace), not a slow one's
    assert jobs.outlasted_by(waiting, 200.0, timeouts) == ["S-1"]
    # and a run no longer than the grace outlasts none
    assert jobs.outlasted_by(waiting, LEASE_GRACE / 2, timeouts) == []


def test_a_run_is_checked_against_the_waiting_jobs_only_if_it_could_outlast_the_shortest_lease():
    jobs = JobsInHand(EXIT_CODE, {})
    jobs.leased_at = time.monotonic()

    # Timeouts within the grace of each other: no run outlasts a fresh lease,
    # so the consumer does not walk the batch's waiting jobs before each run
    assert not jobs.may_outlast(30.0, 10.0)
    assert not jobs.may_outlast(600.0, 600.0)
    # a run longer than the shortest timeout + the grace could
    assert jobs.may_outlast(200.0, 2.0)
    # and so could a same-length run once the lease has aged past the grace
    jobs.leased_at -= LEASE_GRACE + 1
    assert jobs.may_outlast(600.0, 600.0)
