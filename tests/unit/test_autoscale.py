"""The autoscaling decision (pure): backlog / busy / duration samples at
chosen times -> the target process count. The clock is the test's own."""
from __future__ import annotations

import pytest

from disqontrold.autoscale import (
    DOWN, DRAIN_SECONDS, MANUAL, UP, UP_COOLDOWN, Autoscaler, DurationEstimate, Sample,
)

IDLE = 10.0  # s: idle_seconds of the deciders below


def decider(low: int = 1, high: int = 8) -> Autoscaler:
    return Autoscaler(low, high, idle_seconds=IDLE)


def test_a_backlog_with_every_process_busy_adds_several_processes_at_once():
    scaler = decider()
    # 40 ready jobs of 1 s behind one busy process: 40 process-seconds, drained in DRAIN_SECONDS by 8
    target = scaler.decide(Sample(backlog=40, processes=1, busy=1, job_seconds=1.0), now=5.0)
    assert target == 8
    assert scaler.last is not None and (scaler.last.direction, scaler.last.old, scaler.last.new) == (UP, 1, 8)
    assert scaler.last.reason == "backlog=40 busy=1/1 job_s=1"


def test_the_step_up_is_bounded_by_max_and_is_at_least_one():
    scaler = decider(high=3)
    assert scaler.decide(Sample(backlog=1000, processes=1, busy=1), now=5.0) == 3
    small = decider()
    # 3 ready jobs of 2 s for one process: 6 s of work > DRAIN_SECONDS, needs ceil(6/5) = 2
    assert small.decide(Sample(backlog=3, processes=1, busy=1, job_seconds=2.0), now=5.0) == 2


@pytest.mark.parametrize("sample", [
    Sample(backlog=50, processes=2, busy=1, job_seconds=1.0),  # a process is free: it will take them
    Sample(backlog=4, processes=2, busy=2, job_seconds=1.0),  # 2 per process: not above the threshold
    Sample(backlog=500, processes=2, busy=2, job_seconds=0.001),  # drains in well under DRAIN_SECONDS
    Sample(backlog=0, processes=2, busy=2, job_seconds=30.0),  # busy but nothing waits
])
def test_no_step_up_without_a_backlog_the_running_processes_cannot_handle(sample):
    scaler = Autoscaler(2, 8, idle_seconds=IDLE)
    assert scaler.decide(sample, now=5.0) == 2
    assert scaler.last is None


def test_the_drain_time_uses_the_job_duration():
    # The same backlog calls for more processes the longer its jobs run
    slow, fast = decider(), decider()
    work = DRAIN_SECONDS * 4
    assert slow.decide(Sample(backlog=20, processes=1, busy=1, job_seconds=work / 20), now=5.0) == 4
    assert fast.decide(Sample(backlog=20, processes=1, busy=1, job_seconds=DRAIN_SECONDS / 40), now=5.0) == 1


def test_steps_up_are_spaced_by_the_cooldown():
    scaler = decider()
    busy = Sample(backlog=12, processes=1, busy=1, job_seconds=1.0)  # needs ceil(12/5) = 3
    assert scaler.decide(busy, now=5.0) == 3
    more = Sample(backlog=40, processes=3, busy=3, job_seconds=1.0)
    assert scaler.decide(more, now=5.0 + UP_COOLDOWN / 2) == 3  # too soon
    assert scaler.decide(more, now=5.0 + UP_COOLDOWN) == 8


def test_idle_processes_are_removed_one_at_a_time_after_idle_seconds():
    scaler = decider()
    assert scaler.decide(Sample(backlog=100, processes=1, busy=1), now=0.0) == 8
    calm = Sample(backlog=0, processes=8, busy=0)
    # Spare capacity from t=1: nothing happens before it lasted IDLE seconds
    assert scaler.decide(calm, now=1.0) == 8
    assert scaler.decide(calm, now=1.0 + IDLE - 0.1) == 8
    assert scaler.decide(calm, now=1.0 + IDLE) == 7
    assert scaler.last is not None and (scaler.last.direction, scaler.last.old, scaler.last.new) == (DOWN, 8, 7)
    # The next removal needs a whole new idle stretch
    calm = Sample(backlog=0, processes=7, busy=0)
    assert scaler.decide(calm, now=1.0 + IDLE + 1) == 7
    assert scaler.decide(calm, now=1.0 + 2 * IDLE) == 6


def test_a_busy_moment_restarts_the_idle_clock_and_min_is_the_floor():
    scaler = Autoscaler(2, 4, idle_seconds=IDLE)
    assert scaler.decide(Sample(backlog=100, processes=2, busy=2), now=0.0) == 4
    assert scaler.decide(Sample(backlog=0, processes=4, busy=1), now=1.0) == 4
    assert scaler.decide(Sample(backlog=0, processes=4, busy=4), now=1.0 + IDLE - 1) == 4  # all busy: not spare
    assert scaler.decide(Sample(backlog=0, processes=4, busy=0), now=1.0 + IDLE) == 4
    assert scaler.decide(Sample(backlog=0, processes=4, busy=0), now=2 * IDLE) == 4
    t = 2 * IDLE + 1
    for expected in (3, 2, 2, 2):
        processes = scaler.target
        assert scaler.decide(Sample(backlog=0, processes=processes, busy=0), now=t) == expected
        t += IDLE
    assert scaler.target == 2


def test_no_flapping_under_an_alternating_load():
    # Bursts every 3 s on a group that idles in between: it stays up
    scaler = decider()
    changes = []
    for second in range(60):
        burst = second % 3 == 0
        sample = Sample(backlog=30 if burst else 0, processes=scaler.target,
                        busy=scaler.target if burst else 0, job_seconds=1.0)
        before = scaler.target
        scaler.decide(sample, now=float(second))
        if scaler.target != before:
            changes.append((second, before, scaler.target))
    assert changes == [(0, 1, 6)]


def test_an_outside_change_becomes_the_target_and_holds_for_idle_seconds():
    scaler = decider()
    # SIGTTIN took the group from 1 to 3 while it was idle
    assert scaler.decide(Sample(backlog=0, processes=3, busy=0), now=2.0) == 3
    assert scaler.last is not None and (scaler.last.direction, scaler.last.old, scaler.last.new) == (MANUAL, 1, 3)
    assert scaler.decide(Sample(backlog=0, processes=3, busy=0), now=2.0 + IDLE - 1) == 3
    # a backlog inside the hold does not override it either
    assert scaler.decide(Sample(backlog=100, processes=3, busy=3), now=2.0 + IDLE - 0.5) == 3
    # after the hold, the autoscaler decides again
    assert scaler.decide(Sample(backlog=100, processes=3, busy=3), now=2.0 + IDLE) == 8


def test_duration_estimate_averages_finished_jobs_and_sees_long_running_ones():
    estimate = DurationEstimate()
    assert estimate.update(busy_seconds=0.0, finished=0) is None
    assert estimate.update(busy_seconds=2.0, finished=4) == pytest.approx(0.5)
    smoothed = estimate.update(busy_seconds=2.0, finished=1)  # one 2 s job among 0.5 s ones
    assert 0.5 < smoothed < 2.0
    # a job running for 30 s is evidence enough that jobs are long
    assert estimate.update(busy_seconds=1.0, finished=0, longest_running=30.0) == 30.0
    assert estimate.update(busy_seconds=1.0, finished=0) == pytest.approx(smoothed)
