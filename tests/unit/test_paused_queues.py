"""PausedQueues' grace for a missing program (pure logic: a fake clock)."""
from __future__ import annotations

import pytest

from disqontrold import paused_queues
from disqontrold.paused_queues import MISSING_GAP, MISSING_GRACE, PausedQueues


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(paused_queues.time, "monotonic", fake)
    return fake


def missing_at(paused: PausedQueues, clock: Clock, *times: float) -> list[bool]:
    """missing_too_long for a job of 'q' found missing at each of ``times`` (s from now)."""
    start = clock.now
    out = []
    for at in times:
        clock.now = start + at
        out.append(paused.missing_too_long("q", True))
    return out


def test_a_program_missing_through_its_grace_fails_its_jobs_then(clock):
    # Given a queue whose program stays missing, found so at each pause's end
    paused = PausedQueues("g", {"q": MISSING_GRACE})

    # Then its jobs go back until the grace has passed, and fail after it
    assert missing_at(paused, clock, 0, 0.5, 1.5, 31.5, MISSING_GRACE + 1) == [False, False, False, False, True]


def test_a_job_of_the_queue_started_here_starts_a_new_grace(clock):
    paused = PausedQueues("g", {"q": MISSING_GRACE})
    missing_at(paused, clock, 0, 30)
    paused.started("q")
    assert missing_at(paused, clock, MISSING_GRACE) == [False]


def test_a_program_missing_again_long_after_starts_a_new_grace(clock):
    # Given a queue whose program was missing for a moment once (a deploy),
    # its jobs then run by another consumer (none started here)
    paused = PausedQueues("g", {"q": MISSING_GRACE})
    missing_at(paused, clock, 0)

    # When the program is missing again an hour later (the next deploy)
    # Then its job goes back: a new grace, not the failure of an old one
    assert missing_at(paused, clock, 3600) == [False]
    assert missing_at(paused, clock, MISSING_GAP + 1) == [False]


def test_a_start_refused_for_want_of_processes_never_fails_its_job(clock):
    paused = PausedQueues("g", {"q": MISSING_GRACE})
    assert missing_at(paused, clock, 0) == [False]
    clock.now += 10 * MISSING_GRACE
    assert not paused.missing_too_long("q", False)


def pauses_at(paused: PausedQueues, clock: Clock, *times: float) -> list[float]:
    """The pause 'q' gets when a job of it cannot start at each of ``times`` (s from now)."""
    start = clock.now
    out = []
    for at in times:
        clock.now = start + at
        paused.pause("q", ["job-1"], "cannot start /bin/x: [Errno 11] Resource temporarily unavailable")
        out.append(paused.until_next())
    return out


def test_pauses_double_while_an_incident_lasts(clock):
    paused = PausedQueues("g", {"q": MISSING_GRACE})
    assert pauses_at(paused, clock, 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 61.5) == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_an_incident_long_after_the_last_pause_starts_at_the_first_pause_again(clock):
    # Given a queue paused up to the 30 s step (TasksMax reached once), no job
    # of it started here since (another consumer ran them)
    paused = PausedQueues("g", {"q": MISSING_GRACE})
    pauses_at(paused, clock, 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5)

    # When its jobs cannot start again an hour later (another deploy)
    # Then the pause is the first one, not 30 s
    assert pauses_at(paused, clock, 3600) == [0.5]


def test_a_pause_is_published_with_its_incident_start_and_cleared_at_its_end(clock):
    published: list[list[dict]] = []
    paused = PausedQueues("g", {"q": MISSING_GRACE}, published.append)
    start = clock.now
    paused.pause("q", ["job-1"], "cannot start /bin/x: [Errno 2] No such file", "ENOENT")
    clock.now += 0.5
    assert paused.open(["q"]) == ["q"] and published[-1] == []
    paused.pause("q", ["job-2"], "cannot start /bin/x: [Errno 2] No such file", "ENOENT")
    assert published[-1] == [{"queue": "q", "errno": "ENOENT", "error": "cannot start /bin/x: [Errno 2] No such file",
                              "since": start, "pause": 1.0, "until": clock.now + 1.0}]
