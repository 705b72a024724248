"""Pure logic of the workers: output tails, argv building, HTTP request
shapes, the inline timeout alarm."""
from __future__ import annotations

import json
import signal
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from disqontrol_client.job import Job
from disqontrold.workers.jobprocs import Capture
from disqontrold.workers.command import BODY_ON_STDIN, MAX_BODY_ARG, CommandWorker
from disqontrold.workers.http import HttpWorker
from disqontrold.workers.python import JobTimeout, alarm


def test_capture_keeps_the_last_bytes_only():
    capture = Capture(limit=10)
    for i in range(100):
        capture.add(f"{i:03d}".encode())
    assert capture.tail() == "".join(f"{i:03d}" for i in range(100)).encode()[-10:]
    assert len(capture.data) <= 20 and capture.truncated


def test_capture_without_limit_keeps_everything():
    capture = Capture()
    capture.add(b"a" * 100_000)
    assert len(capture.tail()) == 100_000 and not capture.truncated


def test_argv_moves_a_multibyte_body_to_stdin_by_its_byte_length():
    worker = CommandWorker("true", "q")
    # MAX_BODY_ARG / 2 characters of two bytes each: over the limit in bytes
    body = "é" * (MAX_BODY_ARG // 2 + 1)
    argv, stdin = worker.argv(Job(body, "q", {"retries": 0}))
    assert argv[2] == f"--body={BODY_ON_STDIN}"
    assert json.loads(stdin) == body


def test_argv_keeps_the_command_words():
    worker = CommandWorker("true 'two words' --flag", "q")
    argv, stdin = worker.argv(Job([1], "other", {}))
    assert argv[1:] == ["two words", "--flag", "--queue=other", "--body=[1]", "--metadata={}"]
    assert stdin is None


def test_http_json_and_form_bodies():
    job = Job({"a": "b c"}, "q", {"retries": 2})
    path, data, headers = HttpWorker("http://h/x?k=v").request_parts(job)
    assert path == "/x?k=v" and headers["Content-Type"] == "application/json"
    assert json.loads(data) == {"queue": "q", "body": {"a": "b c"}, "metadata": {"retries": 2}}
    path, data, headers = HttpWorker("http://h", body_format="form").request_parts(job)
    assert path == "/" and parse_qs(data.decode()) == {"body": ['{"a":"b c"}'], "metadata": ['{"retries":2}']}


def test_http_get_puts_everything_in_the_query():
    path, data, _ = HttpWorker("http://h/x", method="GET").request_parts(Job([1], "q", {}))
    assert data is None
    assert parse_qs(urlsplit(path).query) == {"queue": ["q"], "body": ["[1]"], "metadata": ["{}"]}


def test_alarm_interrupts_and_gives_back_an_outer_alarm():
    # Given an alarm someone else set (pytest-timeout's, here)
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_delay = signal.getitimer(signal.ITIMER_REAL)[0]
    # When a job's alarm fires, and another job ends in time
    with pytest.raises(JobTimeout):
        with alarm(0.05):
            time.sleep(5)
    with alarm(30):
        pass
    # Then the outer handler and (about) its remaining time are back
    assert signal.getsignal(signal.SIGALRM) is outer_handler
    if outer_delay:
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= outer_delay


@pytest.mark.parametrize("value", [
    None, True, 0, -3, 2**70, 1.5, 1e300, float("nan"), "", "é\U0001f600", 'q"\\', [], {},
    {"b": [1, {"c": None}], "a": "x"}, [[], [{}]],
])
def test_argv_json_is_what_json_dumps_writes(value):
    worker = CommandWorker("true", "q")
    argv, _ = worker.argv(Job(value, "q", {"k": value}))
    assert argv[2] == "--body=" + json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert argv[3] == "--metadata=" + json.dumps({"k": value}, ensure_ascii=False, separators=(",", ":"))


def test_argv_escapes_what_an_argument_cannot_carry():
    worker = CommandWorker("true", "q")
    argv, _ = worker.argv(Job("a\x00b\ud800é", "q", {}))
    assert argv[2] == '--body="a\\u0000b\\ud800\\u00e9"'
    assert json.loads(argv[2].removeprefix("--body=")) == "a\x00b\ud800é"
