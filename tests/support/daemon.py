"""A real ``disqontrold`` for integration tests: writes a config (and test
workers) into tmp_path, starts the daemon as a subprocess in its own session,
waits for readiness by polling its log, and stops it by PID."""
from __future__ import annotations

import dataclasses
import os

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Optional

import psutil
import yaml

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.brokers.broker import Broker
from disqontrol_client.config import Config, load_config
from disqontrol_client.job import Job, decode_payload
from disqontrol_client.submit import new_job_for
from tests.support.procs import stop_process, wait_for

DAEMON = [sys.executable, "-m", "disqontrold.cli"]
CONSUMER_TITLE = "disqontrold: consumer"
START_TIMEOUT = 60.0  # s: a loaded 2-core machine forks slowly
STOP_TIMEOUT = 60.0

# Test workers. A run appends "<n> <unix time>" to $DQ_OUT; a body may be an
# int n, or {"n": n, "sleep": s, "fail": true, "exit": true, "block": true} to
# be slow, fail, kill the consumer or hang it (inline).
WORKERS_MODULE = '''
import os, signal, time

def record(job):
    body = job.body
    n = body["n"] if isinstance(body, dict) else body
    if isinstance(body, dict):
        time.sleep(body.get("sleep", 0))
        if body.get("exit"):
            os._exit(1)  # takes the consumer down with it
        if body.get("block"):  # hangs where the inline timeout (SIGALRM) cannot reach
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(600)
    with open(os.environ["DQ_OUT"], "a") as out:
        out.write(f"{n} {time.time():.4f}\\n")
    if isinstance(body, dict) and body.get("fail"):
        raise RuntimeError(f"asked to fail {n}")
'''
# The command worker: argv is [sh, script, --queue=Q, --body=JSON, --metadata=JSON];
# a body with "sleep" hangs, one with "fail" records its run and exits 3.
RECORD_SH = '''
body="${2#--body=}"
case "$body" in
  *sleep*) sleep 30 ;;
esac
printf '%s %s\\n' "$body" "$(date +%s.%N)" >> "$DQ_OUT"
case "$body" in
  *fail*) echo "asked to fail" >&2; exit 3 ;;
esac
'''


def command_worker(tmp_path: Path) -> dict[str, str]:
    return {"type": "command", "command": f"/bin/sh {tmp_path / 'record.sh'}"}


def python_worker(kind: str = "inline_python_worker") -> dict[str, str]:
    return {"type": kind, "name": "dqworkers:record"}


class Daemon:
    def __init__(self, tmp_path: Path, broker_url: str, queues: dict[str, dict[str, Any]],
                 consumers: Optional[list[dict[str, Any]]] = None,
                 queue_defaults: Optional[dict[str, Any]] = None,
                 consumer_defaults: Optional[dict[str, Any]] = None) -> None:
        self.dir = tmp_path
        self.broker_url = broker_url
        self.config_path = tmp_path / "disqontrol.yml"
        self.log_path = tmp_path / "log" / "disqontrol.log"
        self.out_path = tmp_path / "out.txt"
        self.stderr_path = tmp_path / "stderr.txt"
        self.proc: Optional[subprocess.Popen] = None
        (tmp_path / "dqworkers.py").write_text(textwrap.dedent(WORKERS_MODULE))
        (tmp_path / "record.sh").write_text(RECORD_SH)
        self.out_path.touch()
        self.write_config(queues, consumers, queue_defaults, consumer_defaults)
        self._broker: Optional[Broker] = None
        self._config: Optional[Config] = None  # as first written: a later broken one must not matter

    def write_config(self, queues: dict[str, dict[str, Any]], consumers: Optional[list[dict[str, Any]]] = None,
                     queue_defaults: Optional[dict[str, Any]] = None,
                     consumer_defaults: Optional[dict[str, Any]] = None) -> None:
        section: dict[str, Any] = {
            "broker": self.broker_url, "log_dir": "log", "run_dir": "run", "queues": queues,
            "queue_defaults": {"job_process_timeout": 20, **(queue_defaults or {})},
            # autoscale off unless a test asks: counts of consumers stay what the test set
            "consumer_defaults": {"min_processes": 1, "max_processes": 3, "autoscale": False,
                                  **(consumer_defaults or {})},
        }
        if consumers is not None:
            section["consumers"] = consumers
        self.config_path.write_text(yaml.safe_dump({"disqontrol": section}))

    # -- process --------------------------------------------------------
    def start(self, consumers: int = 1, args: Iterable[str] = (), cwd: Optional[Path] = None) -> "Daemon":
        """Start the master; return once ``consumers`` consumers are ready (0: at once).
        ``args``: more disqontrold arguments (``--bootstrap P``); ``cwd``: where
        to start it, as a shell would (its $PWD), else the test's directory."""
        self._config = load_config(self.config_path)
        env = dict(os.environ, DQ_OUT=str(self.out_path),
                   PYTHONPATH=os.pathsep.join([str(self.dir), os.getcwd()]), PWD=str(cwd or self.dir))
        self.proc = subprocess.Popen(
            DAEMON + ["--config", str(self.config_path), "--no-stderr-log", *args],
            cwd=cwd or self.dir, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "ab"),
        )
        if consumers:  # 0: a test that watches the start itself
            try:
                self.wait_event("consumer_ready", consumers, timeout=START_TIMEOUT)
            except BaseException:  # the test's try/finally is not entered yet: do not leave a master behind
                self.stop()
                raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def consumer_pids(self) -> list[int]:
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if " ".join(child.cmdline()).startswith(CONSUMER_TITLE):
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return pids

    def title(self, pid: int) -> str:
        try:
            return " ".join(psutil.Process(pid).cmdline())
        except psutil.NoSuchProcess:
            return ""

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop_broker(self) -> None:
        """Close the test's producer connection (the next ``add`` opens a new one)."""
        if self._broker is not None:
            self._broker.close()
            self._broker = None

    def stop(self) -> None:
        self.stop_broker()
        if self.proc is not None:
            stop_process(self.proc, timeout=STOP_TIMEOUT)

    # -- log ------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def events(self, event: str) -> list[str]:
        return [line for line in self.log().splitlines() if f" event={event} " in line + " "]

    def wait_event(self, event: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        def enough() -> list[str]:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"disqontrold exited {self.proc.returncode}: "
                                     f"{self.stderr_path.read_text()[-2000:]}")
            found = self.events(event)
            return found if len(found) >= count else []
        return wait_for(enough, timeout=timeout, interval=0.05, message=f"{count} x event={event}")

    # -- jobs -----------------------------------------------------------
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = open_broker(self.broker_url)
        return self._broker

    def add(self, queue: str, bodies: Iterable[Any], lease: Optional[float] = None,
            delay: float = 0) -> list[str]:
        """Add jobs as a producer would; ``lease`` shortens the broker lease
        (normally job_process_timeout + a minute) so a redelivery test is quick;
        ``delay`` (s) delays them all."""
        assert self._config is not None, "start() the daemon first"
        queue_config = self._config.queue(queue)
        items: list[NewJob] = [new_job_for(Job(body, queue), queue_config) for body in bodies]
        if lease is not None:
            items = [dataclasses.replace(item, retry=lease) for item in items]
        if delay > 0:
            items = [dataclasses.replace(item, delay=delay) for item in items]
        return self.broker.add_many(items)

    def runs(self) -> list[tuple[str, float]]:
        """(body, time) of every completed run, in file order."""
        rows = []
        for line in self.out_path.read_text().splitlines():
            body, _, stamp = line.rpartition(" ")
            rows.append((body, float(stamp)))
        return rows

    def wait_runs(self, count: int, timeout: float = 60.0) -> list[tuple[str, float]]:
        return wait_for(lambda: len(self.runs()) >= count and self.runs(), timeout=timeout,
                        interval=0.05, message=f"{count} completed runs")

    def failed_jobs(self, queue: str = "failed-jobs") -> list[tuple[Any, dict[str, Any]]]:
        return [decode_payload(d.payload) for d in self.broker.peek(queue, 1000)]


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
