"""Inline and isolated Python workers with a real bootstrap file: the same
contract for both (return = success, False or raise = failure, timeout),
plus what isolation adds (a fork per job, a signal-killed child)."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

from disqontrol_client.errors import WorkerLoadError
from disqontrol_client.job import Job, fresh_metadata
from disqontrold.workers.bootstrap import read_bootstrap
from disqontrold.workers.python import RETURNED_FALSE, InlinePythonWorker, IsolatedPythonWorker
from tests.support.daemon import running
from tests.support.procs import wait_for

BOOTSTRAP = '''
import os, signal, time

SETUP_LOG = {setup_log!r}
STATE = {{"touched": False}}

def setup_environment():
    with open(SETUP_LOG, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    return {{"greeting": "hello"}}

def echo(environment, name):
    def work(job):
        return {{"greeting": environment["greeting"], "name": name, "body": job.body,
                 "queue": job.queue, "id": job.id, "retries": job.metadata["retries"]}}
    return work

class Resizer:
    def __init__(self, environment):
        self.environment = environment
    def process(self, job):
        return job.body * 2

def returns(value):
    return lambda environment, name: (lambda job: value)

def fails(environment, name):
    def work(job):
        raise ValueError(f"bad size {{job.body}}")
    return work

def sleeps(environment, name):
    return lambda job: time.sleep(job.body)

def suicide(environment, name):
    return lambda job: os.kill(os.getpid(), signal.SIGKILL)

def pid(environment, name):
    return lambda job: os.getpid()

def touch_state(environment, name):
    def work(job):
        STATE["touched"] = True
        return STATE["touched"]
    return work

def unserializable(environment, name):
    return lambda job: {{1, 2}}

def spawns_and_hangs(environment, name):
    def work(job):
        import subprocess
        child = subprocess.Popen(["sleep", "60"])
        with open(job.body, "w") as out:
            out.write(str(child.pid))
        time.sleep(60)
    return work

def segfaults(environment, name):
    def work(job):
        import ctypes
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return work

def exits(environment, name):
    def work(job):
        import sys
        sys.exit(job.body)
    return work

def interrupts(environment, name):
    def work(job):
        raise KeyboardInterrupt("from the worker")
    return work

LEAKED = []

def leaks(environment, name):
    def work(job):
        LEAKED.append(bytearray(job.body))
        return len(LEAKED)
    return work

WORKERS = {{
    "echo": echo, "resizer": lambda env, name: Resizer(env), "false": returns(False),
    "none": returns(None), "fails": fails, "sleeps": sleeps, "suicide": suicide,
    "pid": pid, "touch_state": touch_state, "unserializable": unserializable,
    "spawns_and_hangs": spawns_and_hangs, "segfaults": segfaults, "leaks": leaks,
    "exits": exits, "interrupts": interrupts,
}}
'''

KINDS = {"inline": InlinePythonWorker, "isolated": IsolatedPythonWorker}


@pytest.fixture
def bootstrap(tmp_path: Path):
    path = tmp_path / "disqontrol_bootstrap.py"
    path.write_text(BOOTSTRAP.format(setup_log=str(tmp_path / "setup.log")))
    loaded = read_bootstrap(path)
    yield loaded
    sys.modules.pop("disqontrol_bootstrap", None)


def job(body, job_id="j1") -> Job:
    return Job(body, "pics", fresh_metadata(), id=job_id)


def make(kind: str, bootstrap, name: str):
    return KINDS[kind](bootstrap.resolve(name), name)


@pytest.fixture(params=sorted(KINDS))
def kind(request) -> str:
    return request.param


def test_return_value_is_the_result(kind, bootstrap):
    outcome = make(kind, bootstrap, "echo").run(job({"w": 3}), 30)
    assert outcome.ok, outcome
    assert outcome.result == {"greeting": "hello", "name": "echo", "body": {"w": 3},
                              "queue": "pics", "id": "j1", "retries": 0}


def test_object_with_process_method(kind, bootstrap):
    outcome = make(kind, bootstrap, "resizer").run(job(21), 30)
    assert outcome.ok and outcome.result == 42


def test_returning_none_is_success(kind, bootstrap):
    outcome = make(kind, bootstrap, "none").run(job(1), 30)
    assert outcome.ok and outcome.result is None


def test_returning_false_is_failure(kind, bootstrap):
    outcome = make(kind, bootstrap, "false").run(job(1), 30)
    assert not outcome.ok and outcome.error == RETURNED_FALSE


def test_raising_is_failure_with_type_message_and_traceback(kind, bootstrap):
    outcome = make(kind, bootstrap, "fails").run(job(7), 30)
    assert not outcome.ok
    assert outcome.error == "ValueError: bad size 7"
    assert "Traceback" in outcome.details["traceback"] and "bad size 7" in outcome.details["traceback"]


def test_sys_exit_in_the_worker_is_a_failure_with_its_code(kind, bootstrap):
    # SystemExit is no Exception: it used to crash an inline worker's consumer
    # and end an isolated child without a result.
    outcome = make(kind, bootstrap, "exits").run(job(3), 30)
    assert not outcome.ok
    assert outcome.error == "SystemExit: 3"
    assert "sys.exit(job.body)" in outcome.details["traceback"]


def test_keyboard_interrupt_raised_by_an_isolated_job_is_its_failure(bootstrap):
    outcome = make("isolated", bootstrap, "interrupts").run(job(1), 30)
    assert not outcome.ok
    assert outcome.error == "KeyboardInterrupt: from the worker"


def test_timeout_stops_the_job(kind, bootstrap):
    started = time.monotonic()
    outcome = make(kind, bootstrap, "sleeps").run(job(60), 0.5)
    assert not outcome.ok
    assert outcome.error == "killed after 0.5s timeout"
    assert time.monotonic() - started < 10


def test_setup_environment_runs_once_per_process(kind, bootstrap, tmp_path):
    # Given one worker built in this process, When it runs three jobs
    worker = make(kind, bootstrap, "echo")
    for i in range(3):
        assert worker.run(job(i), 30).ok
    # Then setup_environment ran once, here (isolated children inherit it)
    assert (tmp_path / "setup.log").read_text().split() == [str(os.getpid())]
    make(kind, bootstrap, "resizer")
    assert (tmp_path / "setup.log").read_text().split() == [str(os.getpid())]


def test_inline_runs_in_this_process_isolated_in_a_fresh_child(bootstrap):
    inline = make("inline", bootstrap, "pid").run(job(1), 30)
    isolated = IsolatedPythonWorker(bootstrap.resolve("pid"), "pid").run_many([job(1), job(2)], 30)
    assert inline.result == os.getpid()
    child_pids = [o.result for o in isolated]
    assert os.getpid() not in child_pids and len(set(child_pids)) == 2


def test_isolated_job_cannot_change_the_consumer(bootstrap):
    outcome = make("isolated", bootstrap, "touch_state").run(job(1), 30)
    assert outcome.ok and outcome.result is True
    assert sys.modules["disqontrol_bootstrap"].STATE["touched"] is False


def test_isolated_child_killed_by_a_signal_is_a_failure(bootstrap):
    outcome = make("isolated", bootstrap, "suicide").run(job(1), 30)
    assert not outcome.ok
    assert outcome.error == "killed by signal SIGKILL"
    assert outcome.details["signal"] == "SIGKILL"


def test_isolated_result_that_json_cannot_carry_comes_back_as_repr(bootstrap):
    outcome = make("isolated", bootstrap, "unserializable").run(job(1), 30)
    assert outcome.ok and outcome.result == "{1, 2}" and outcome.details["result_repr"] is True


def test_isolated_batch_runs_in_parallel(bootstrap):
    worker = make("isolated", bootstrap, "sleeps")
    started = time.monotonic()
    outcomes = worker.run_many([job(1, str(i)) for i in range(5)], 30)
    assert all(o.ok for o in outcomes)
    assert time.monotonic() - started < 4


def test_module_callable_path(kind, bootstrap, tmp_path, monkeypatch):
    # Given a module next to the bootstrap file
    (tmp_path / "myapp_workers_mod.py").write_text("def rss_update(job):\n    return ['rss', job.body]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    outcome = make(kind, bootstrap, "myapp_workers_mod:rss_update").run(job(5), 30)
    assert outcome.ok and outcome.result == ["rss", 5]
    sys.modules.pop("myapp_workers_mod", None)


def test_unknown_names_are_refused_with_the_key(bootstrap, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "myapp_workers_mod2.py").write_text("x = 1\n")
    with pytest.raises(WorkerLoadError, match=r"^k: 'nope' cannot be loaded: it is not in WORKERS of .* \(known: echo,"):
        bootstrap.resolve("nope", key="k")
    with pytest.raises(WorkerLoadError,
                       match=r"^k: 'myapp_workers_mod2:nope' cannot be loaded: module 'myapp_workers_mod2' has no attribute 'nope'"):
        bootstrap.resolve("myapp_workers_mod2:nope", key="k")
    with pytest.raises(WorkerLoadError, match=r"^k: 'no_such_mod_xyz:f' cannot be loaded: ModuleNotFoundError"):
        bootstrap.resolve("no_such_mod_xyz:f", key="k")
    sys.modules.pop("myapp_workers_mod2", None)


def test_isolated_timeout_kills_the_jobs_whole_process_group(bootstrap, tmp_path):
    # Given an isolated job that starts a grandchild and hangs
    pid_file = tmp_path / "grandchild.pid"
    worker = IsolatedPythonWorker(bootstrap.resolve("spawns_and_hangs"), "spawns_and_hangs", kill_grace=0.5)
    # When it runs past its timeout
    outcome = worker.run(job(str(pid_file)), 1.0)
    # Then the job fails as timed out, and the grandchild died with it
    assert not outcome.ok and outcome.error == "killed after 1s timeout"
    grandchild = int(pid_file.read_text())
    wait_for(lambda: not running(grandchild), timeout=10, message=f"grandchild {grandchild} to be killed")


def test_a_segfaulting_isolated_job_fails_alone_and_the_next_one_runs(bootstrap):
    # Given a batch where one job crashes its process with SIGSEGV
    crash = make("isolated", bootstrap, "segfaults")
    outcome = crash.run(job(1), 30)
    # Then that job fails with the signal, and the next job runs normally
    assert not outcome.ok and outcome.details["signal"] == "SIGSEGV"
    assert make("isolated", bootstrap, "echo").run(job(2), 30).ok


def test_memory_an_isolated_job_takes_dies_with_it(bootstrap):
    # Given a job that keeps 20 MiB in a module-level list
    worker = make("isolated", bootstrap, "leaks")
    # When it runs three times, Then each run starts from the consumer's state
    results = [worker.run(job(20 * 1024 * 1024, f"j{i}"), 30).result for i in range(3)]
    assert results == [1, 1, 1]
    assert sys.modules["disqontrol_bootstrap"].LEAKED == []


FLAKY_SETUP = '''
import os

def setup_environment():
    if not os.path.exists({flag!r}):
        open({flag!r}, "w").close()
        raise RuntimeError("database is down")
    return {{"db": "up"}}

WORKERS = {{"db": lambda environment, name: (lambda job: environment["db"])}}
'''
TRY_TIMEOUT = 30.0  # s a setup try may run in its child


def try_now(worker):
    """Make a held worker's next try due and wait for its answer: ``ready``
    starts it in a child, and tells once it ended (the worker, or None)."""
    worker.next_try = time.monotonic()
    answers = [worker.ready(TRY_TIMEOUT, contextlib.nullcontext)]

    def answered() -> bool:
        if worker.probe is not None:
            answers.append(worker.ready(TRY_TIMEOUT, contextlib.nullcontext))
        return worker.probe is None
    wait_for(answered, timeout=TRY_TIMEOUT, interval=0.01, message="the setup try's answer")
    return answers[-1]


def test_a_worker_whose_setup_raised_is_built_again_at_growing_intervals_until_it_works(tmp_path):
    from disqontrol_client.config import QueueConfig, WorkerConfig
    from disqontrold import workers

    # Given a bootstrap file whose setup_environment() raises the first time only
    path = tmp_path / "disqontrol_bootstrap.py"
    path.write_text(FLAKY_SETUP.format(flag=str(tmp_path / "tried")))
    queue = QueueConfig(name="pics", worker=WorkerConfig(type="inline_python_worker", name="db"))
    try:
        # When its worker is built: a stand-in carrying the setup's error, not due again at once
        worker = workers.UnbuiltWorker.build(queue, read_bootstrap(path))
        assert isinstance(worker, workers.UnbuiltWorker)
        assert worker.error == "RuntimeError: database is down"
        assert "setup_environment" in worker.traceback
        assert worker.next_try - time.monotonic() > workers.REBUILD_INTERVAL / 2
        assert worker.ready(TRY_TIMEOUT, contextlib.nullcontext) is None and worker.tries == 1
        assert worker.probe is None  # not due: no try started
        # (run, which the consumer never calls for it, fails with that error)
        assert worker.run(job(1), 30).error == "the worker could not be set up: RuntimeError: database is down"

        # Then, once due, setup runs again (in a child, then here), works, and gives the real worker
        built = try_now(worker)
        assert isinstance(built, InlinePythonWorker)
        assert built.run(job(2), 30).result == "up"
    finally:
        sys.modules.pop("disqontrol_bootstrap", None)


def test_a_setup_that_keeps_raising_is_tried_at_doubling_intervals(tmp_path):
    from disqontrol_client.config import QueueConfig, WorkerConfig
    from disqontrold import workers

    path = tmp_path / "disqontrol_bootstrap.py"
    path.write_text("def setup_environment():\n    raise RuntimeError('down')\n"
                    "WORKERS = {'db': lambda environment, name: (lambda job: None)}\n")
    queue = QueueConfig(name="pics", worker=WorkerConfig(type="inline_python_worker", name="db"))
    try:
        worker = workers.UnbuiltWorker.build(queue, read_bootstrap(path))
        intervals = []
        for _ in range(6):
            assert try_now(worker) is None
            intervals.append(round(worker.next_try - time.monotonic()))
        assert intervals == [10, 20, 40, 60, 60, 60] and worker.tries == 7
    finally:
        sys.modules.pop("disqontrol_bootstrap", None)
