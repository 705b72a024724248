"""What status, metrics and the autoscaler make of the held queues in the
consumers' scoreboards (pure logic; the real daemon: test_held_queues.py)."""
from __future__ import annotations

from disqontrold.held_status import consumer_held, held_by_group, held_queues, one_line
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
