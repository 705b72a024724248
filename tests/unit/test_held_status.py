"""What status, metrics and the autoscaler make of the held queues in the
consumers' scoreboards (pure logic; the real daemon: test_held_queues.py)."""
from __future__ import annotations

from disqontrold.held_status import consumer_held, held_queues, one_line


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
