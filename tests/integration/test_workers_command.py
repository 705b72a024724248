"""The command worker against real processes: argv, exit codes, signals,
timeouts that kill the whole process group, large bodies, shell injection."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from disqontrol_client.errors import WorkerLoadError
from disqontrol_client.job import Job, fresh_metadata
from disqontrold.workers.command import BODY_ON_STDIN, MAX_BODY_ARG, CommandWorker
from tests.support.daemon import running
from tests.support.procs import wait_for

#: A worker that records its argv (and stdin when --body=-) as JSON.
RECORDER = """
import json, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "--body=-" in args else None
with open(sys.argv[1], "w") as f:
    json.dump({"args": args[1:], "stdin": stdin}, f)
"""


def job(body, queue="q", job_id="job-1") -> Job:
    return Job(body, queue, fresh_metadata(now=1000), id=job_id)


@pytest.fixture
def recorder(tmp_path: Path):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    out = tmp_path / "argv.json"
    worker = CommandWorker(f"{sys.executable} {script} {out}", "q")

    def run(body):
        outcome = worker.run(job(body), 30)
        assert outcome.ok, outcome
        return json.loads(out.read_text())

    return run


def test_argv_carries_queue_body_and_metadata(recorder):
    # Given a recorder worker, When it runs a job
    seen = recorder({"id": 5, "name": "é"})
    # Then it gets exactly the three documented arguments
    assert seen["args"] == [
        "--queue=q",
        '--body={"id":5,"name":"é"}',
        "--metadata=" + json.dumps(fresh_metadata(now=1000), separators=(",", ":")),
    ]
    assert seen["stdin"] is None


def test_body_too_large_for_one_argument_arrives_on_stdin(recorder):
    # Given a body of 300 KiB, past Linux's 128 KiB limit of one argument
    body = {"blob": "x" * (300 * 1024)}
    seen = recorder(body)
    # Then the worker is told --body=- and reads the body intact on stdin
    assert f"--body={BODY_ON_STDIN}" in seen["args"]
    assert json.loads(seen["stdin"]) == body


def test_body_just_under_the_argument_limit_stays_an_argument(recorder):
    body = "y" * (MAX_BODY_ARG - 2)  # its JSON adds two quotes
    seen = recorder(body)
    assert seen["args"][1] == f'--body="{body}"'


@pytest.mark.parametrize("body", ['"; touch PWNED #', "$(touch PWNED)", "`touch PWNED`"])
def test_shell_metacharacters_in_the_body_are_passed_literally(recorder, tmp_path, body, monkeypatch):
    # Given a body that would run `touch PWNED` if it ever reached a shell
    monkeypatch.chdir(tmp_path)
    seen = recorder(body.replace("PWNED", str(tmp_path / "PWNED")))
    # Then the worker receives it byte for byte and no file appears
    assert seen["args"][1] == "--body=" + json.dumps(body.replace("PWNED", str(tmp_path / "PWNED")))
    assert not (tmp_path / "PWNED").exists()


def test_exit_code_and_stderr_tail_make_the_error():
    worker = CommandWorker("sh -c 'echo progress; echo \"disk full\" >&2; exit 3' sh", "q")
    outcome = worker.run(job(1), 30)
    assert not outcome.ok
    assert outcome.error == "exit code 3: disk full"
    assert outcome.details["exit_code"] == 3
    assert outcome.details["stdout_tail"] == "progress\n"
    assert outcome.details["stderr_tail"] == "disk full\n"


def test_output_tails_are_logged_with_the_job_id(caplog):
    caplog.set_level(logging.INFO, logger="disqontrold.workers.command")
    CommandWorker("sh -c 'echo resized; echo \"no space\" >&2; exit 2' sh", "q").run(job(1, job_id="J-77"), 30)
    [line] = [r.getMessage() for r in caplog.records if "J-77" in r.getMessage()]
    assert line.startswith("event=command_failed job=J-77 queue=q ")
    assert 'stdout_tail="resized\\n"' in line and 'stderr_tail="no space\\n"' in line
    assert 'error="exit code 2: no space"' in line


def test_exit_zero_is_success():
    outcome = CommandWorker("true", "q").run(job(1), 30)
    assert outcome.ok and outcome.error is None and outcome.details["exit_code"] == 0


def test_output_tail_is_bounded():
    # Given a worker printing 1 MiB
    worker = CommandWorker("sh -c 'head -c 1048576 /dev/zero | tr \"\\\\0\" a; echo END' sh", "q")
    outcome = worker.run(job(1), 60)
    # Then only the last 4 KiB are kept, ending with the last line
    assert outcome.ok
    assert len(outcome.details["stdout_tail"]) == 4096
    assert outcome.details["stdout_tail"].endswith("aEND\n")


def test_a_signal_is_a_failure():
    outcome = CommandWorker("sh -c 'kill -SEGV $$' sh", "q").run(job(1), 30)
    assert not outcome.ok
    assert outcome.details["signal"] == "SIGSEGV"
    assert outcome.error == "killed by signal SIGSEGV"


def test_timeout_kills_the_whole_process_group(tmp_path):
    # Given a worker that starts a grandchild sleeping, then sleeps itself
    pids = tmp_path / "pids"
    worker = CommandWorker(f"sh -c 'sleep 60 & echo $! > {pids}; sleep 60' sh", "q")
    started = time.monotonic()
    # When it runs past a 1 s timeout
    outcome = worker.run(job(1), 1)
    # Then it fails as a timeout, promptly, and the grandchild is gone too
    assert not outcome.ok
    assert outcome.error == "killed after 1s timeout"
    assert time.monotonic() - started < 10
    grandchild = int(pids.read_text())
    wait_for(lambda: not running(grandchild), timeout=10, message="the grandchild to die")


def test_timeout_escalates_to_sigkill_after_the_grace():
    # Given a worker that ignores SIGTERM, and a short grace
    worker = CommandWorker("sh -c 'trap \"\" TERM; sleep 60' sh", "q", kill_grace=0.5)
    outcome = worker.run(job(1), 0.5)
    # Then it is killed with SIGKILL
    assert not outcome.ok and outcome.details["signal"] == "SIGKILL"
    assert outcome.error == "killed after 0.5s timeout"


def test_batch_runs_concurrently_each_with_its_own_outcome():
    # Given five jobs of 1 s each and one that fails
    worker = CommandWorker("sh -c 'sleep 1; test \"$2\" != \"--body=3\"' sh", "q")
    jobs = [job(i, job_id=str(i)) for i in range(6)]
    started_ids = []
    t0 = time.monotonic()
    outcomes = worker.run_many(jobs, 30, on_start=lambda j: started_ids.append(j.id))
    elapsed = time.monotonic() - t0
    # Then they overlapped (far less than 6 s) and outcomes keep the order
    assert elapsed < 4.5
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]
    assert started_ids == [str(i) for i in range(6)]


def test_worker_sees_default_sigpipe():
    # Python ignores SIGPIPE; an exec'd program must get it back at default
    ignored = int(open("/proc/self/status").read().split("SigIgn:")[1].split()[0], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1)), "this test assumes Python ignores SIGPIPE"
    mask = CommandWorker("sh -c 'grep SigIgn /proc/self/status >&2; exit 1' sh", "q").run(job(1), 30)
    child_ignored = int(mask.details["stderr_tail"].split()[1], 16)
    assert not child_ignored & (1 << (signal.SIGPIPE - 1))


def test_missing_binary_is_refused_naming_the_key():
    with pytest.raises(WorkerLoadError, match=r"^disqontrol.queues.q.worker.command: 'no-such-prog-xyz' .* not found on PATH"):
        CommandWorker("no-such-prog-xyz --flag", "q", key="disqontrol.queues.q.worker.command")


def test_an_interrupted_batch_leaves_no_process_behind(tmp_path):
    # Given a batch of long jobs, When the consumer is interrupted mid-batch
    pids = tmp_path / "pids"
    worker = CommandWorker(f"sh -c 'echo $$ >> {pids}; sleep 60' sh", "q")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        helper = os.posix_spawn("/bin/sh", ["sh", "-c", f"while [ $(wc -l < {pids} 2>/dev/null || echo 0) -lt 3 ]; "
                                   f"do sleep 0.05; done; kill -USR1 {os.getpid()}"], os.environ)
        with pytest.raises(KeyboardInterrupt):
            worker.run_many([job(i, str(i)) for i in range(3)], 60)
        os.waitpid(helper, 0)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # Then every job process was killed and reaped
    for pid in map(int, pids.read_text().split()):
        assert not running(pid)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
