"""What status, metrics and the autoscaler make of the held and paused
queues in the consumers' scoreboards (pure logic; the real daemon:
test_held_queues.py, test_paused_status.py)."""
from __future__ import annotations

from disqontrold.held_status import (consumer_held, consumer_paused, held_by_group, held_queues, one_line,
                                     paused_queues)
from disqontrold.scoreboard import IDLE, STARTING, Scoreboard


def test_an_error_is_shown_on_one_line_and_cut():
    assert one_line("OperationalError: could not connect\n\tIs the server running?") == (
        "OperationalError: could not connect Is the server running?")
    assert one_line("x" * 500, limit=20) == "x" * 17 + "..."


def test_times_are_made_relative_and_consumers_merged_per_queue():
    now = 100.0
    first = consumer_held([{"queue": "py", "tries": 3, "error": "E", "next_try": 130.0, "trying_since": None}], now)
    second = consumer_held([{"queue": "py", "tries": 1, "error": "E", "next_try": None, "trying_since": 96.0}], now)
    assert first == [{"queue": "py", "tries": 3, "error": "E", "next_try_in": 30.0, "trying_for": None}]
    rows = held_queues([{"pid": 1, "group": "g", "state": "idle", "held": first},
                        {"pid": 2, "group": "g", "state": "busy", "held": second},
                        {"pid": 3, "group": "g", "state": "retiring", "held": first}])
    assert rows == [{"queue": "py", "group": "g", "consumers": [1, 2], "tries": 3, "error": "E",
                     "next_try_in": 30.0, "trying_for": 4.0}]


def test_a_group_holds_a_queue_only_when_every_built_consumer_does():
    boards = [Scoreboard() for _ in range(3)]
    try:
        boards[0].set_state(IDLE)
        boards[0].set_held([{"queue": "py"}, {"queue": "other"}])
        boards[1].set_state(IDLE)
        boards[1].set_held([{"queue": "py"}])
        assert boards[2].read().state == "starting"  # says nothing yet
        assert held_by_group(boards) == {"py"}
        boards[2].set_state(IDLE)  # built, and runs py
        assert held_by_group(boards) == set()
        boards[2].set_state(STARTING)
        assert held_by_group(boards[2:]) == set()
    finally:
        for board in boards:
            board.close()


def test_paused_times_are_made_relative_and_consumers_merged_per_queue():
    now = 100.0
    entry = {"queue": "cmd", "errno": "EAGAIN", "error": "cannot start /bin/x", "since": 40.0, "pause": 16.0}
    first = consumer_paused([{**entry, "until": 110.0}], now)
    second = consumer_paused([{**entry, "since": 90.0, "pause": 2.0, "until": 101.0}], now)
    assert first == [{"queue": "cmd", "errno": "EAGAIN", "error": "cannot start /bin/x", "paused_for": 60.0,
                      "pause": 16.0, "resumes_in": 10.0}]
    rows = paused_queues([{"pid": 1, "group": "g", "state": "busy", "paused": first},
                          {"pid": 2, "group": "g", "state": "idle", "paused": second},
                          {"pid": 3, "group": "g", "state": "retiring", "paused": first}])
    assert rows == [{"queue": "cmd", "group": "g", "consumers": [1, 2], "errno": "EAGAIN",
                     "error": "cannot start /bin/x", "paused_for": 60.0, "pause": 16.0, "resumes_in": 1.0}]


def test_a_queue_held_by_one_consumer_and_paused_by_the_other_is_out_of_the_group():
    boards = [Scoreboard() for _ in range(2)]
    try:
        for board in boards:
            board.set_state(IDLE)
        boards[0].set_held([{"queue": "py"}])
        boards[1].set_paused([{"queue": "py"}, {"queue": "cmd"}])
        assert held_by_group(boards) == {"py"}
        boards[0].set_paused([{"queue": "cmd"}])
        assert held_by_group(boards) == {"py", "cmd"}
    finally:
        for board in boards:
            board.close()
