"""The scoreboard's seqlock: the master never sees a half-written state (a
torn "busy since 0.0" would make it kill a healthy consumer as hung)."""
from __future__ import annotations

import os
import signal
import time

from disqontrold.queue_tally import BUCKETS, CELL_BYTES, CELL_WORDS, DONE, PARKED, RETRIED
from disqontrold.scoreboard import BUSY, HELD_BYTES, IDLE, MAX_JOB_PIDS, Scoreboard

WRITES = 200_000
READ_LIMIT_S = 30.0


def test_a_reader_never_sees_a_torn_write():
    # Given a consumer process flipping its scoreboard between busy and idle
    board = Scoreboard()
    pid = os.fork()
    if pid == 0:  # the writer: exit without running pytest's cleanup
        try:
            for n in range(WRITES):
                board.set_state(BUSY, f"S-{n}") if n % 2 else board.set_state(IDLE)
        finally:
            os._exit(0)
    # When the master reads it while it writes
    seen = set()
    deadline = time.monotonic() + READ_LIMIT_S
    try:
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            snap = board.read()
            seen.add(snap.state)
            # Then every snapshot is one whole write: set_state stamps since
            # and heartbeat with the same time, and only busy carries a job
            assert snap.since > 0 and snap.since == snap.heartbeat, snap
            assert (snap.state == "busy") == snap.job.startswith("S-"), snap
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # it already ended (and was reaped by the loop above)
    assert {"busy", "idle"} <= seen


def test_the_sequence_wraps_instead_of_overflowing():
    # Given a scoreboard that has been written about 2**32 times
    board = Scoreboard()
    board._seq = 2**32 - 2  # the last even value its 4-byte cell holds
    # When the consumer writes again, and again
    board.set_state(BUSY, "S-1")
    board.heartbeat()
    # Then it still writes, and the master still reads whole snapshots
    snap = board.read()
    assert (snap.state, snap.job) == ("busy", "S-1") and snap.heartbeat >= snap.since > 0
    board.close()


def test_job_pids_are_noted_until_they_end_and_their_cells_reused():
    board = Scoreboard()
    try:
        for pid in range(1000, 1000 + MAX_JOB_PIDS + 1):  # one more than a window can hold
            board.job_started(pid)
        assert len(board.job_pids()) == MAX_JOB_PIDS
        board.job_ended(1000)
        board.job_ended(4242)  # never noted: nothing happens
        board.job_started(7)
        assert 1000 not in board.job_pids() and 7 in board.job_pids()
        assert len(board.job_pids()) == MAX_JOB_PIDS
    finally:
        board.close()


def test_job_pids_written_by_a_child_are_read_by_the_parent_after_it_died():
    board = Scoreboard()
    try:
        pid = os.fork()
        if pid == 0:
            board.job_started(4321)
            board.job_started(4322)
            board.job_ended(4321)
            os._exit(0)
        os.waitpid(pid, 0)
        assert board.job_pids() == [4322]
    finally:
        board.close()


def test_held_queues_written_by_a_child_are_read_by_the_parent():
    # Given a consumer (a forked child) publishing its held queues
    board = Scoreboard()
    pid = os.fork()
    if pid == 0:
        try:
            board.set_held([{"queue": "py", "tries": 2, "error": "RuntimeError: down", "next_try": 5.0}])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # Then the master reads them whole; an empty list clears them
    assert board.held() == [{"queue": "py", "tries": 2, "error": "RuntimeError: down", "next_try": 5.0}]
    board.set_held([])
    assert board.held() == []
    board.close()


def test_held_queues_too_long_for_the_board_lose_their_errors_first():
    board = Scoreboard()
    entries = [{"queue": f"q{n}", "error": "x" * 1000} for n in range(HELD_BYTES // 100)]
    board.set_held(entries)
    shown = board.held()
    # Then every queue is still named, without the errors that did not fit
    assert [e["queue"] for e in shown] == [e["queue"] for e in entries]
    assert all(e["error"] is None for e in shown)
    board.close()


def test_paused_and_held_queues_share_the_region_without_overwriting_each_other():
    # Given a consumer that holds one queue and pauses another, in either order
    board = Scoreboard()
    board.set_held([{"queue": "py", "error": "RuntimeError: down"}])
    board.set_paused([{"queue": "cmd", "errno": "EAGAIN", "error": "cannot start /bin/x", "until": 5.0}])
    # Then the master reads both; clearing one leaves the other
    assert [e["queue"] for e in board.held()] == ["py"]
    assert [(e["queue"], e["errno"]) for e in board.paused()] == [("cmd", "EAGAIN")]
    board.set_held([])
    assert board.held() == [] and [e["queue"] for e in board.paused()] == ["cmd"]
    board.close()


def test_paused_queues_too_many_for_the_board_are_cut_before_the_held_ones():
    board = Scoreboard()
    board.set_held([{"queue": "py", "error": "RuntimeError: down"}])
    board.set_paused([{"queue": f"q{n}" * 20, "error": None} for n in range(HELD_BYTES // 50)])
    # Then the held queue is still named, and as many paused ones as fit
    assert [e["queue"] for e in board.held()] == ["py"]
    assert 0 < len(board.paused()) < HELD_BYTES // 50
    board.close()


def test_setting_up_restores_the_state_and_its_start_time():
    # Given a busy consumer that builds a held queue's worker meanwhile
    board = Scoreboard()
    board.set_state(BUSY, "S-1")
    before = board.read()
    with board.setting_up("py"):
        during = board.read()
    after = board.read()
    # Then the master sees it setting up that queue, then busy with the same job since the same time
    assert (during.state, during.job) == ("setting_up", "py")
    assert (after.state, after.job, after.since) == ("busy", "S-1", before.since)
    assert after.heartbeat >= during.heartbeat
    board.close()


def test_queue_outcomes_written_by_a_child_are_read_by_the_parent_after_it_died():
    # Given a consumer of three queues that ran jobs of two, then died
    board = Scoreboard(["a", "b", "c"])
    pid = os.fork()
    if pid == 0:
        try:
            board.queue_cells.record("b", DONE, 0.0004)
            board.queue_cells.record("b", PARKED, 700.0)  # past the last bucket
            board.queue_cells.record("a", RETRIED, 0.3)
            board.queue_cells.record("a", PARKED, None)  # a redelivery parked unrun: no duration
            board.queue_cells.record("not-mine", DONE, 1.0)  # ignored
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # When the master reads its cells
    counts = board.queue_cells.read()
    # Then each queue it ran has its counters, bucket counts and sum; the other none
    assert sorted(counts) == ["a", "b"]
    buckets_b = counts["b"][3:-1]
    assert counts["b"][:3] == [1, 0, 1] and buckets_b[0] == 1 and buckets_b[-1] == 1 and sum(buckets_b) == 2
    assert counts["b"][-1] == 700.0004
    assert counts["a"][:3] == [0, 1, 1] and sum(counts["a"][3:-1]) == 1 and counts["a"][3 + BUCKETS.index(0.5)] == 1
    board.close()


def test_queue_cells_take_room_for_the_groups_queues_only():
    # The bound the docs give: a cell per queue of the group, whatever the config's size
    board = Scoreboard([f"q{i}" for i in range(1000)])
    assert len(board.queue_cells._map) == (1 + 1000 * CELL_WORDS) * 8 == 8 + 1000 * CELL_BYTES
    board.close()
