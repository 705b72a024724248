"""The command worker: runs a program per job, in any language.

The program is exec'd with an argv list, never through a shell:
``shlex.split(command) + ["--queue=Q", "--body=<json>", "--metadata=<json>"]``.
A body too large for one argument (Linux caps one argument at 128 KiB) is
sent as ``--body=-`` with the JSON on stdin, the Unix convention that
``disqontrol addjob QUEUE -`` also follows. Each job runs in its own session
and process group, so a timeout kills everything the job started.

We spawn with ``os.posix_spawn`` (vfork + exec in glibc) rather than
``subprocess.Popen``: it skips Popen's Python-side bookkeeping, measurably
faster per job (see docs/workers.md).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
from typing import Optional, Sequence

from disqontrol_client.errors import WorkerLoadError
from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrold.workers.base import OnStart, Outcome, Worker
from disqontrold.workers.jobprocs import KILL_GRACE, Capture, Child, run_batch

logger = logging.getLogger("disqontrold.workers.command")

#: Bytes of stdout / stderr kept per job (the tail): for the log and details.
OUTPUT_TAIL = 4096
#: A body whose ``--body=`` argument is longer than this goes on stdin.
#: Linux refuses any single argument of 128 KiB (MAX_ARG_STRLEN) or more, and
#: all arguments plus the environment share ARG_MAX (2 MiB by default), so we
#: stay well below the first limit and far below the second.
MAX_BODY_ARG = 64 * 1024
UTF8_MAX_BYTES = 4
#: The ``--body`` value that tells the worker to read the JSON body on stdin.
BODY_ON_STDIN = "-"
#: Signals Python ignores that an exec'd program must see at their default
#: (what ``subprocess``'s ``restore_signals`` does).
RESTORED_SIGNALS = tuple(
    sig for sig in (getattr(signal, "SIGPIPE", None), getattr(signal, "SIGXFSZ", None)) if sig is not None
)
#: The file action of a job without stdin data (one tuple for every spawn).
STDIN_DEVNULL = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)


def resolve_program(command: Optional[str], key: str) -> tuple[list[str], str]:
    """Split the command and find its binary: (argv prefix, path to exec).

    Raises WorkerLoadError naming ``key`` when the command is empty,
    unparsable, or its program is missing or not executable."""
    if not command or not command.strip():
        raise WorkerLoadError(f"{key}: the command is empty; give a program and its arguments, e.g. 'php console email:send'")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise WorkerLoadError(f"{key}: {command!r} cannot be split into arguments: {exc}") from None
    program = argv[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise WorkerLoadError(f"{key}: {program!r} (from {command!r}) is not an executable file")
        return argv, os.path.abspath(program)
    path = shutil.which(program)
    if path is None:
        raise WorkerLoadError(f"{key}: {program!r} (from {command!r}) is not found on PATH ({os.environ.get('PATH', '')})")
    return argv, path


#: Built once: json.dumps with non-default options builds an encoder per call.
_COMPACT_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":")).encode


def _json(value: object) -> str:
    """Compact JSON, readable UTF-8; \\u escapes only for what an argument
    cannot carry (a lone surrogate decoded from bad input)."""
    text = _COMPACT_UTF8(value)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _COMPACT_ASCII(value)
    return text


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


class CommandWorker(Worker):
    """Runs each job as a program: in the consumer's job window (``start`` /
    ``finish``), or a whole batch at once (``run_many``, synchronous mode)."""

    concurrent = True
    windowed = True

    def __init__(self, command: str, queue: str, key: str = "worker.command", kill_grace: float = KILL_GRACE) -> None:
        self.command = command
        self.kill_grace = kill_grace
        self.queue = queue
        self._argv, self._path = resolve_program(command, key)
        self.cannot_start = f"cannot start {self._path}"
        # The consumer's environment as bytes, taken once: converting
        # os.environ on every spawn cost more than the rest of our Python work.
        self._env = dict(os.environb)

    def argv(self, job: Job) -> tuple[list[str], Optional[bytes]]:
        """The job's argv and the stdin bytes to feed it (None: /dev/null)."""
        body = _json(job.body)
        stdin = None
        # UTF-8 takes at most 4 bytes a character: most bodies skip the encode.
        if len(body) * UTF8_MAX_BYTES > MAX_BODY_ARG and len(body.encode("utf-8")) > MAX_BODY_ARG:
            stdin, body = body.encode("utf-8"), BODY_ON_STDIN
        args = [f"--queue={job.queue or self.queue}", f"--body={body}", f"--metadata={_json(job.metadata)}"]
        return self._argv + args, stdin

    def _spawn(self, job: Job, timeout: float) -> Child:
        argv, stdin_data = self.argv(job)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r = in_w = None
        if stdin_data is None:
            stdin_action: tuple = STDIN_DEVNULL
        else:
            in_r, in_w = os.pipe()
            stdin_action = (os.POSIX_SPAWN_DUP2, in_r, 0)
        actions = [stdin_action, (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        try:
            # Our pipe ends are close-on-exec (PEP 446): the program only
            # inherits the three descriptors set up above.
            pid = os.posix_spawn(
                self._path, argv, self._env, file_actions=actions, setsid=True,
                setsigdef=RESTORED_SIGNALS, setsigmask=(),
            )
        except OSError:
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, in_r):
                if fd is not None:
                    os.close(fd)
        return Child(pid=pid, timeout=timeout, outputs={out_r: Capture(OUTPUT_TAIL), err_r: Capture(OUTPUT_TAIL)},
                     stdin=in_w, stdin_data=stdin_data or b"", grace=self.kill_grace)

    def start(self, job: Job, timeout: float) -> Child:
        return self._spawn(job, timeout)

    def finish(self, job: Job, child: Child) -> Outcome:
        return self._outcome(job, child)

    def run(self, job: Job, timeout: float) -> Outcome:
        return self.run_many([job], timeout)[0]

    def run_many(self, jobs: Sequence[Job], timeout: float, on_start: OnStart = None) -> list[Outcome]:
        """Start every job of the batch, then wait for all of them."""
        return run_batch(jobs, on_start, lambda job: self._spawn(job, timeout), self._outcome, self.kill_grace,
                         self.cannot_start)

    def _outcome(self, job: Job, child: Child) -> Outcome:
        stdout, stderr = (capture.tail() for capture in child.outputs.values())
        duration = child.ended - child.started
        if child.status == 0 and not child.timed_out and not stdout and not stderr:
            # The common case, first: nothing to decode, nothing to log.
            return Outcome(True, details={"exit_code": 0, "signal": None, "stdout_tail": "", "stderr_tail": ""},
                           duration=duration)
        details = {
            "exit_code": child.exit_code,
            "signal": signal.Signals(child.signal).name if child.signal else None,
            "stdout_tail": stdout.decode("utf-8", errors="replace"),
            "stderr_tail": stderr.decode("utf-8", errors="replace"),
        }
        ok = child.exit_code == 0 and not child.timed_out
        error = None
        if child.timed_out:
            error = f"killed after {child.timeout:g}s timeout"
        elif child.signal:
            error = f"killed by signal {details['signal']}"
        elif child.exit_code is None:
            error = "exit status lost (the process was reaped elsewhere)"
        elif child.exit_code != 0:
            error = f"exit code {child.exit_code}"
        if error and _last_line(stderr):
            error = f"{error}: {_last_line(stderr)}"
        level = logging.INFO if ok else logging.WARNING
        if not ok or stdout or stderr:
            log_event(logger, "command_finished" if ok else "command_failed", level, job=job.id, queue=job.queue,
                      pid=child.pid, exit_code=child.exit_code, signal=details["signal"], error=error,
                      duration=f"{duration:.3f}", stdout_tail=details["stdout_tail"] or None,
                      stderr_tail=details["stderr_tail"] or None)
        return Outcome(ok, error=error, details=details, duration=duration)
