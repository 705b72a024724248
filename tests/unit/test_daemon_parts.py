"""Pure parts of the master: the scoreboard shared across fork, exit-status
words, URL redaction, restart backoff, the log line."""
from __future__ import annotations

import logging
import os
import signal

from disqontrol_client import logfmt
from disqontrol_client.config import Config, ConsumerConfig, QueueConfig, WorkerConfig
from disqontrold.children import describe_exit
from disqontrold.log import EventFormatter
from disqontrold.scoreboard import BUSY, Scoreboard
from disqontrold.slots import RESTART_BACKOFF_CAP, RESTART_BACKOFF_START, Slot


def test_scoreboard_written_by_a_child_is_read_by_the_parent():
    board = Scoreboard()
    pid = os.fork()
    if pid == 0:
        board.set_state(BUSY, "S-42")
        board.count(done=3, failed=1)
        os._exit(0)
    os.waitpid(pid, 0)
    snap = board.read()
    assert (snap.state, snap.job, snap.done, snap.failed) == ("busy", "S-42", 3, 1)
    board.close()


def test_describe_exit_names_codes_and_signals():
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == (None, signal.SIGKILL, "killed by SIGKILL")
    pid = os.fork()
    if pid == 0:
        os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == (4, None, "exit code 4")


def test_redact_url_hides_only_the_password():
    # The one redactor: the master's status and logs, ctl and the engines use it.
    redact_url = logfmt.redact_url
    assert redact_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("redis://bob:s3cret@h:1/0") == "redis://bob:***@h:1/0"
    assert redact_url("sqlite:///var/jobs.db") == "sqlite:///var/jobs.db"
    assert (redact_url("disque://:pw@10.0.0.1:7711,10.0.0.2:7711?replicate=2")
            == "disque://:***@10.0.0.1:7711,10.0.0.2:7711?replicate=2")


def test_crashes_back_off_exponentially_up_to_the_cap_and_recycling_does_not():
    queue = QueueConfig(name="q", worker=WorkerConfig(type="command", command="/bin/true"))
    config = Config(path=None, broker="sqlite:///x.db", log_dir=".", run_dir=".", queues={"q": queue},
                    consumers=(ConsumerConfig(queues=("q",)),))
    slot = Slot(config.consumers[0], config, generation=1)
    delays = []
    for _ in range(10):
        slot.started_at = 100.0
        slot.ended(100.0, crashed=True, how="exit code 70")
        delays.append(slot.next_start - 100.0)
    assert delays[:3] == [RESTART_BACKOFF_START, 2 * RESTART_BACKOFF_START, 4 * RESTART_BACKOFF_START]
    assert max(delays) == RESTART_BACKOFF_CAP
    slot.ended(200.0, crashed=False, how="exit code 0")
    assert slot.next_start == 200.0 and slot.crashes == 0


def _record(message: str, created: float) -> logging.LogRecord:
    record = logging.LogRecord("disqontrold.test", logging.WARNING, __file__, 1, message, (), None)
    record.created, record.msecs = created, (created % 1) * 1000
    return record


def test_log_line_is_utc_with_millis_level_pid_and_the_event():
    formatter = EventFormatter()
    line = formatter.format(_record("event=job_done job=D-1", 1795854714.25))
    assert line == f"2026-11-28T08:31:54.250Z level=warning pid={os.getpid()} event=job_done job=D-1"
    # The date part is cached per second: the next second must not reuse it.
    assert formatter.format(_record("event=x", 1795854715.5)).startswith("2026-11-28T08:31:55.500Z ")


def test_log_line_is_formatted_once_for_all_handlers():
    formatter = EventFormatter()
    record = _record("event=a", 1795854714.0)
    first = formatter.format(record)
    record.msg = "event=changed"  # a second format of the same record (the next handler) reuses the line
    assert formatter.format(record) is first
