"""Building a queue's worker, and checking every configured worker can be.

``check_workers`` is what ``disqontrold --check``, the start and a reload run:
a missing command binary or an unloadable Python worker refuses the config
with a message naming the key path. Python workers are checked in a forked
child so that the master never imports the user's code (a consumer forked
after a reload must not inherit modules imported before it).
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Callable, ContextManager, Optional, Union

from disqontrol_client.config import Config, QueueConfig
from disqontrol_client.errors import WorkerLoadError
from disqontrold.forkcall import NoAnswer, call_in_child
from disqontrol_client.job import Job
from disqontrold.workers.base import Outcome, Worker
from disqontrold.workers.bootstrap import Bootstrap, load_bootstrap, loaded_bootstrap, read_bootstrap
from disqontrold.workers.setup_probe import ProbeResult, SetupProbe

__all__ = ["Outcome", "UnbuiltWorker", "Worker", "build_worker", "check_workers", "worker_key"]

PYTHON_TYPES = ("inline_python_worker", "isolated_python_worker")
#: The worker types whose jobs run in the consumer's job window (``Worker.windowed``).
WINDOWED_TYPES = ("command", "isolated_python_worker")
#: Seconds the forked checker may spend importing the user's modules.
CHECK_TIMEOUT = 60.0
#: What the checker child does, as its failure message says.
CHECKING = "checking the Python workers (importing the bootstrap and their modules)"
#: Seconds before the second try to build a worker whose setup raised; the
#: interval doubles up to REBUILD_MAX_INTERVAL (one log line per try).
REBUILD_INTERVAL = 5.0
REBUILD_MAX_INTERVAL = 60.0
#: Seconds between two looks at a try running in its child (it is not waited for).
PROBE_POLL_INTERVAL = 0.5

BootstrapArg = Union[Bootstrap, str, "os.PathLike[str]", None]


def worker_key(queue: str) -> str:
    """The config key path of a queue's worker, as error messages name it."""
    return f"disqontrol.queues.{queue}.worker"


def build_worker(queue_config: QueueConfig, bootstrap: BootstrapArg = None) -> Worker:
    """The worker of one queue, in the process that will run it (after the
    fork). ``bootstrap`` is a loaded Bootstrap or the --bootstrap path (None:
    the default file); it is only loaded for Python workers."""
    spec = queue_config.worker
    key = worker_key(queue_config.name)
    if spec.type == "command":
        # Imported per type (http too): every module a consumer maps adds to
        # what each fork of an isolated worker copies (docs/workers.md, Speed).
        from disqontrold.workers.command import CommandWorker  # noqa: PLC0415

        return CommandWorker(spec.command or "", queue_config.name, key=f"{key}.command")
    if spec.type == "http":
        from disqontrold.workers.http import HttpWorker  # noqa: PLC0415 - only consumers of http queues need it

        return HttpWorker(spec.address, spec.method, spec.headers, spec.body_format, key=key)
    if spec.type in PYTHON_TYPES:
        from disqontrold.workers.python import InlinePythonWorker, IsolatedPythonWorker  # noqa: PLC0415

        loaded = bootstrap if isinstance(bootstrap, Bootstrap) else load_bootstrap(bootstrap)
        func = loaded.resolve(spec.name, key=f"{key}.name")
        cls = InlinePythonWorker if spec.type == "inline_python_worker" else IsolatedPythonWorker
        return cls(func, spec.name or "")
    raise WorkerLoadError(f"{key}.type: {spec.type!r} is not one of command, inline_python_worker, "
                          f"isolated_python_worker, http")


class UnbuiltWorker(Worker):
    """Stands in a consumer for a worker whose building raised at run time
    (``setup_environment()`` or a factory: a database down, a bug), which
    the checks cannot see since they never call them. The consumer does not
    reserve that queue's jobs meanwhile: they wait in the broker, their
    retries untouched (an environment that is down is not the jobs' fault),
    while the group's other queues run on (the consumer used to crash at
    start, again and again, and run nothing). ``ready()`` builds it again,
    at growing intervals; once it works the consumer swaps the worker in."""

    def __init__(self, queue_config: QueueConfig, bootstrap: BootstrapArg, error: str, details: str) -> None:
        self.queue_config = queue_config
        self.bootstrap = bootstrap
        self.error = error
        self.traceback = details
        self.tries = 1
        self._interval = REBUILD_INTERVAL
        self.next_try = time.monotonic() + self._interval
        self.probe: Optional[SetupProbe] = None  # the try running now, in a child

    @classmethod
    def build(cls, queue_config: QueueConfig, bootstrap: BootstrapArg = None) -> Worker:
        """``build_worker``, or a stand-in when user code raised while building.
        A WorkerLoadError (the config names what cannot be loaded) still raises."""
        try:
            return build_worker(queue_config, bootstrap)
        except WorkerLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 -- the user's setup code: its error holds the queue
            return cls(queue_config, bootstrap, f"{type(exc).__name__}: {exc}", traceback.format_exc())

    def ready(self, try_timeout: float, in_process: Callable[[], ContextManager[object]]) -> Optional[Worker]:
        """The worker once a try works; None meanwhile. Never blocks on a
        try: each runs in a forked child (SetupProbe, killed past
        ``try_timeout``); only after one worked is the worker built here,
        inside ``in_process()`` (the consumer says it is setting up). Once
        this process has its environment (another queue's worker got it),
        only the factory is left: it runs here, never in a child, which
        would share the environment's connections with this process."""
        now = time.monotonic()
        if self.probe is None:
            if now < self.next_try:
                return None
            if not self._has_environment():
                try:
                    self.probe = SetupProbe(lambda: build_worker(self.queue_config, self.bootstrap), try_timeout)
                except OSError as exc:  # EAGAIN, ENOMEM: a failed try, tried again later
                    return self._failed(ProbeResult(False, f"could not fork a setup try: {exc}"))
                return None
            result = ProbeResult(True)
        else:
            result = self.probe.poll(now)
            if result is None:
                return None
            self.probe = None
        if result.ok:
            with in_process():
                rebuilt = self.build(self.queue_config, self.bootstrap)
            if not isinstance(rebuilt, UnbuiltWorker):
                return rebuilt
            result = ProbeResult(False, rebuilt.error, rebuilt.traceback)
        return self._failed(result)

    def _failed(self, result: ProbeResult) -> None:
        """Book a failed try; the next one comes after a longer interval."""
        self.error, self.traceback = result.error, result.traceback
        self.tries += 1
        self._interval = min(self._interval * 2, REBUILD_MAX_INTERVAL)
        self.next_try = time.monotonic() + self._interval

    def _has_environment(self) -> bool:
        loaded = self.bootstrap if isinstance(self.bootstrap, Bootstrap) else loaded_bootstrap(self.bootstrap)
        return loaded is not None and loaded.has_environment

    def next_check(self) -> float:
        """When ``ready`` has something to do: the next try, or a look at the running one."""
        if self.probe is None:
            return self.next_try
        return min(self.probe.deadline, time.monotonic() + PROBE_POLL_INTERVAL)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.kill()
            self.probe = None

    def run(self, job: Job, timeout: float) -> Outcome:
        """Not called by the consumer (it holds the queue); a caller that does
        gets the setup's error as the job's failure."""
        return Outcome(False, error=f"the worker could not be set up: {self.error}",
                       details={"traceback": self.traceback})


def _python_errors(config: Config, bootstrap_path: Optional[str | os.PathLike[str]]) -> list[str]:
    """In the checker child: import the bootstrap and every named module."""
    errors = []
    try:
        bootstrap = read_bootstrap(bootstrap_path)
    except WorkerLoadError as exc:
        return [str(exc)]
    for name, queue in sorted(config.queues.items()):
        if queue.worker.type in PYTHON_TYPES:
            try:
                bootstrap.find(queue.worker.name, f"{worker_key(name)}.name")
            except WorkerLoadError as exc:
                errors.append(str(exc))
    return errors


def _check_python_in_child(config: Config, bootstrap_path: Optional[str | os.PathLike[str]]) -> list[str]:
    try:
        return call_in_child(lambda: _python_errors(config, bootstrap_path), CHECK_TIMEOUT, CHECKING)
    except NoAnswer as exc:
        return [str(exc)]


def check_workers(config: Config, bootstrap_path: Optional[str | os.PathLike[str]] = None) -> None:
    """Raise WorkerLoadError listing every worker that cannot be built."""
    from disqontrold.workers.command import resolve_program  # noqa: PLC0415 - see build_worker

    errors = []
    for name, queue in sorted(config.queues.items()):
        if queue.worker.type == "command":
            try:
                resolve_program(queue.worker.command, f"{worker_key(name)}.command")
            except WorkerLoadError as exc:
                errors.append(str(exc))
    needs_python = any(q.worker.type in PYTHON_TYPES for q in config.queues.values())
    if bootstrap_path is not None and not Path(bootstrap_path).is_file():
        errors.append(f"--bootstrap: {str(bootstrap_path)!r} does not exist or is not a file")
    elif needs_python:
        errors.extend(_check_python_in_child(config, bootstrap_path))
    if errors:
        raise WorkerLoadError("\n".join(errors))
