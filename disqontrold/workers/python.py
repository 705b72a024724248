"""Python workers: inline (in the consumer) and isolated (a fork per job).

Both call the same user code, ``worker(job)`` or ``obj.process(job)``, with
the same contract: returning normally is success (the value is the result in
synchronous mode); returning ``False`` or raising is failure.
"""
from __future__ import annotations

import _signal  # the C functions: signal.signal's enum conversions cost the child ~70 page faults
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrold.children import set_parent_death_signal
from disqontrold.workers.base import OnStart, Outcome, Worker
from disqontrold.workers.bootstrap import JobFunction
from disqontrold.workers.fastfork import fork
from disqontrold.workers.jobprocs import KILL_GRACE, Capture, Child, run_batch

logger = logging.getLogger("disqontrold.workers.python")

RETURNED_FALSE = "the worker returned False"
#: Exit codes of an isolated child (the result itself travels over the pipe).
CHILD_OK = 0
CHILD_FAILED = 1
CHILD_CRASHED = 70  # EX_SOFTWARE: the child failed outside the worker code
CHILD_ORPHANED = 71  # its consumer died before the child could tie itself to it: job not run
#: Signals the consumer may handle that a forked child must take by default.
CHILD_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD,
                         signal.SIGTTIN, signal.SIGTTOU, signal.SIGALRM)


#: Seconds: an outer alarm that came due during a job fires right after it.
MIN_ALARM = 0.001
#: What user code may raise that fails its job: SystemExit too (``sys.exit()``
#: in a worker, a click or argparse helper), which would otherwise take the
#: consumer down and leave the job leased. Not KeyboardInterrupt: in the
#: foreground (processjob) that is the user's Ctrl-C, which must stop us.
JOB_ERRORS = (Exception, SystemExit)


class JobTimeout(BaseException):
    """Raised inside an inline worker when its job runs past the timeout.

    A BaseException so that a worker's ``except Exception`` does not swallow it."""


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call_worker(func: JobFunction, job: Job) -> Outcome:
    """Run the user code once and turn its return or exception into an Outcome."""
    started = time.monotonic()
    outcome = _call(func, job)
    outcome.duration = time.monotonic() - started
    return outcome


def _call(func: JobFunction, job: Job) -> Outcome:
    try:
        value = func(job)
    except JOB_ERRORS as exc:  # any failure of the user's code fails the job
        return _raised(exc)
    return _returned(value)


def _raised(exc: BaseException) -> Outcome:
    """The outcome of user code that raised (call from the except block)."""
    return Outcome(False, error=_error_text(exc), details={"traceback": traceback.format_exc()})


def _returned(value: Any) -> Outcome:
    if value is False:
        return Outcome(False, error=RETURNED_FALSE)
    return Outcome(True, result=value)


@contextmanager
def alarm(timeout: float) -> Iterator[None]:
    """Raise JobTimeout in the main thread after ``timeout`` seconds.

    SIGALRM only interrupts the main thread, and only between bytecodes or
    when a blocking call returns EINTR: a long C call that ignores signals
    finishes before the timeout bites. Off the main thread there is no
    timeout at all (logged)."""
    if threading.current_thread() is not threading.main_thread() or timeout <= 0:
        if timeout > 0:
            log_event(logger, "inline_timeout_unavailable", logging.WARNING, reason="not in the main thread")
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise JobTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, timeout)
    armed = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay > 0:  # someone else's alarm (pytest-timeout uses one): give it back
            remaining = outer_delay - (time.monotonic() - armed)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, MIN_ALARM), outer_interval)


class InlinePythonWorker(Worker):
    """Runs the job inside the consumer: cheapest, but a crash or leak of the
    user's code is the consumer's."""

    def __init__(self, func: JobFunction, name: str) -> None:
        self.func = func
        self.name = name

    def run(self, job: Job, timeout: float) -> Outcome:
        started = time.monotonic()
        try:
            with alarm(timeout):
                outcome = call_worker(self.func, job)
        except JobTimeout:
            outcome = Outcome(False, error=f"killed after {timeout:g}s timeout",
                              details={"traceback": traceback.format_exc()},
                              duration=time.monotonic() - started)
        if not outcome.ok:
            log_event(logger, "python_job_failed", logging.WARNING, job=job.id, queue=job.queue,
                      worker=self.name, error=outcome.error)
        return outcome


#: The report of the commonest job, a success returning None, encoded once:
#: json.dumps in the child touches (copy-on-write faults) ~70 shared pages.
OK_NONE_REPORT = json.dumps({"ok": True, "error": None, "details": {}, "result": None}).encode()


def _child_report(func: JobFunction, job: Job) -> tuple[bytes, int]:
    """Run the job in the child: its report and exit code. No timing (the
    consumer times the child), and no Outcome for the commonest end, a
    success returning None: every object the child touches is a page fault."""
    try:
        value = func(job)
    except (*JOB_ERRORS, KeyboardInterrupt) as exc:  # SIGINT kills the child (SIG_DFL): this one is the code's
        outcome = _raised(exc)
    else:
        if value is None:
            return OK_NONE_REPORT, CHILD_OK
        outcome = _returned(value)
    return _encode_outcome(outcome), CHILD_OK if outcome.ok else CHILD_FAILED


def _encode_outcome(outcome: Outcome) -> bytes:
    """The child's report; a result JSON cannot carry is sent as its repr."""
    report = {"ok": outcome.ok, "error": outcome.error, "details": outcome.details}
    try:
        return json.dumps({**report, "result": outcome.result}).encode()
    except (TypeError, ValueError):
        return json.dumps({**report, "result": repr(outcome.result), "result_repr": True}).encode()


def _child_main(func: JobFunction, job: Job, write_fd: int, consumer_pid: int) -> None:
    """In the forked child: run the job, report, and leave without running
    the consumer's cleanup (its broker connection belongs to the parent).

    It dies with its consumer (SIGKILL on the parent's death): a consumer
    killed mid-job loses the pipe the result would go to, and the job comes
    back by lease expiry; an orphan left running would do it twice at once."""
    code = CHILD_CRASHED
    try:
        gc.disable()  # a collection would touch (and copy) every shared page
        os.setsid()  # its own process group: a timeout kills what it started
        set_parent_death_signal()
        if os.getppid() != consumer_pid:  # the consumer died before the line above
            code = CHILD_ORPHANED
            return
        _signal.set_wakeup_fd(-1)
        for sig in CHILD_DEFAULT_SIGNALS:
            _signal.signal(sig, _signal.SIG_DFL)
        data, exit_code = _child_report(func, job)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
        code = exit_code
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class IsolatedPythonWorker(Worker):
    """Runs each job in a child forked from the consumer: the user code is
    already imported, so a job costs one fork, and whatever the job does to
    its memory dies with it."""

    concurrent = True
    windowed = True  # the consumer's job window: a long job holds back no other
    cannot_start = "cannot fork"

    def __init__(self, func: JobFunction, name: str, kill_grace: float = KILL_GRACE) -> None:
        self.func = func
        self.name = name
        self.kill_grace = kill_grace

    def _fork(self, job: Job) -> tuple[int, int]:
        """Fork the job's child: (pid, our read end of its report pipe).
        Kept to ints: see jobprocs.run_batch."""
        read_fd, write_fd = os.pipe()
        consumer_pid = os.getpid()
        try:
            pid = fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            os.close(read_fd)
            _child_main(self.func, job, write_fd, consumer_pid)
        os.close(write_fd)
        return pid, read_fd

    def start(self, job: Job, timeout: float) -> Child:
        """Fork the job's child in the consumer's job window."""
        sys.stdout.flush()  # anything buffered now would be written twice if the child flushed it
        sys.stderr.flush()
        pid, read_fd = self._fork(job)
        return Child(pid=pid, timeout=timeout, outputs={read_fd: Capture()}, grace=self.kill_grace)

    def finish(self, job: Job, child: Child) -> Outcome:
        outcome = self._outcome(job, child)
        self._log_failure(job, outcome)
        return outcome

    def run(self, job: Job, timeout: float) -> Outcome:
        return self.run_many([job], timeout)[0]

    def run_many(self, jobs: Sequence[Job], timeout: float, on_start: OnStart = None) -> list[Outcome]:
        """Fork the whole batch, then wait for every child (synchronous mode)."""
        # Anything buffered now would be written twice if a child flushed it.
        sys.stdout.flush()
        sys.stderr.flush()
        outcomes = run_batch(jobs, on_start, self._fork, self._outcome, self.kill_grace, self.cannot_start,
                             adopt=lambda forked: Child(pid=forked[0], timeout=timeout,
                                                        outputs={forked[1]: Capture()}, grace=self.kill_grace))
        for job, outcome in zip(jobs, outcomes):
            self._log_failure(job, outcome)
        return outcomes

    def _log_failure(self, job: Job, outcome: Outcome) -> None:
        if not outcome.ok:
            log_event(logger, "python_job_failed", logging.WARNING, job=job.id, queue=job.queue,
                      worker=self.name, error=outcome.error, exit_code=outcome.details.get("exit_code"),
                      signal=outcome.details.get("signal"))

    def _outcome(self, job: Job, child: Child) -> Outcome:
        duration = child.ended - child.started
        details: dict[str, Any] = {"exit_code": child.exit_code,
                                   "signal": signal.Signals(child.signal).name if child.signal else None}
        if child.timed_out:
            return Outcome(False, error=f"killed after {child.timeout:g}s timeout", details=details, duration=duration)
        raw = bytes(next(iter(child.outputs.values())).data)
        if child.signal:
            return Outcome(False, error=f"killed by signal {details['signal']}", details=details, duration=duration)
        try:
            report = json.loads(raw)
        except ValueError:
            return Outcome(False, error=f"the job process ended without a result (exit code {child.exit_code})",
                           details=details, duration=duration)
        details.update(report.get("details") or {})
        if report.get("result_repr"):
            details["result_repr"] = True
        return Outcome(bool(report["ok"]) and child.exit_code == CHILD_OK, result=report.get("result"),
                       error=report.get("error"), details=details, duration=duration)
