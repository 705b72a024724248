"""A real Disque cluster on 127.0.0.1 for the tests: N disque-server
processes on free ports, joined with CLUSTER MEET.

The binary is the user's (``$DISQUE_SERVER``); nothing of Disque lives in
this repository.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import redis

from disqontrol_client.brokers.disque_client import node_connection, parse_hello
from tests.support.procs import ServerExited, free_port, stop_process, wait_for

CLUSTER_BUS_OFFSET = 10000  # Disque's cluster bus listens on port + 10000
MAX_PORT = 65535
START_TIMEOUT = 30.0  # s for every node to answer and know every other node
ENV_BINARY = "DISQUE_SERVER"
PROBE_QUEUE = "disque-cluster-probe"
PROBE_TIMEOUT_MS = 1000
START_ATTEMPTS = 3  # ports tried for a node whose port was taken before it bound it


def disque_binary() -> str:
    """$DISQUE_SERVER, or skip the calling test with the reason."""
    import pytest  # noqa: PLC0415

    binary = os.environ.get(ENV_BINARY)
    if not binary:
        pytest.skip(f"{ENV_BINARY} is not set: set it to a disque-server binary to run the disque tests")
    return binary


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_pair() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET <= MAX_PORT and _bindable(port + CLUSTER_BUS_OFFSET):
            return port


class DisqueCluster:
    def __init__(self, binary: str, workdir: Path, nodes: int = 3, password: Optional[str] = None) -> None:
        self.binary = binary
        self.password = password
        self.workdir = Path(workdir)
        self.ports = [_port_pair() for _ in range(nodes)]
        self.procs: list[Optional[subprocess.Popen]] = [None] * nodes

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        return self._url(self.addresses)

    def _url(self, addresses: list[str]) -> str:
        credentials = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"disque://{credentials}" + ",".join(addresses)

    def node_url(self, index: int) -> str:
        """A URL naming only one node (first in line for a broker)."""
        others = [a for i, a in enumerate(self.addresses) if i != index]
        return self._url([self.addresses[index]] + others)

    def client(self, index: int) -> redis.Redis:
        """A raw RESP2 connection to one node (the caller closes it)."""
        return node_connection("127.0.0.1", self.ports[index], self.password)

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def start(self) -> "DisqueCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for index in range(len(self.ports)):
            self._start_node(index)
        for index in range(len(self.ports)):
            self._wait_answers(index)
        first = self.client(0)
        for port in self.ports[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        first.close()
        wait_for(self._joined, timeout=START_TIMEOUT, interval=0.1, message="every disque node knows every other")
        wait_for(self._replicates, timeout=START_TIMEOUT, interval=0.1, message="disque replicates to every node")
        return self

    def _start_node(self, index: int) -> None:
        port = self.ports[index]
        node_dir = self.workdir / f"node-{port}"
        node_dir.mkdir(exist_ok=True)
        args = [
            self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
            "--cluster-config-file", f"nodes-{port}.conf", "--appendonly", "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        with open(node_dir / "disque.log", "ab") as log:  # the child keeps its own copy
            self.procs[index] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _wait_answers(self, index: int) -> None:
        """Wait for a node started by ``_start_node``; one whose port was
        taken meanwhile (free_port() only found it free) is started again on
        another, before any CLUSTER MEET names the port."""
        for attempt in range(START_ATTEMPTS):
            try:
                wait_for(lambda: self._answers(index), timeout=START_TIMEOUT,
                         message=f"disque node on port {self.ports[index]}")
                return
            except ServerExited:
                if attempt == START_ATTEMPTS - 1:
                    raise
                self.ports[index] = _port_pair()
                self._start_node(index)

    def _answers(self, index: int) -> bool:
        """True once *our* node answers on its port: a PONG alone could come
        from another test worker's node, which a CLUSTER MEET would then join
        to this cluster."""
        proc = self.procs[index]
        assert proc is not None
        if proc.poll() is not None:
            port = self.ports[index]
            raise ServerExited("disque-server", port, proc.returncode, self.workdir / f"node-{port}" / "disque.log")
        connection = self.client(index)
        try:
            return connection.execute_command("INFO", "server")["process_id"] == proc.pid
        except redis.RedisError:
            return False
        finally:
            connection.close()

    def _joined(self) -> bool:
        for index in self.alive():
            connection = self.client(index)
            try:
                _, nodes = parse_hello(connection.execute_command("HELLO"))
            finally:
                connection.close()
            if len(nodes) < len(self.alive()):
                return False
        return True

    def _replicates(self) -> bool:
        """A job replicated to every node, from every node, is the proof
        that each one sees the others as reachable."""
        return all(self._replicates_from(index) for index in self.alive())

    def _replicates_from(self, index: int) -> bool:
        connection = self.client(index)
        try:
            job_id = connection.execute_command(
                "ADDJOB", PROBE_QUEUE, "probe", PROBE_TIMEOUT_MS, "REPLICATE", len(self.alive()), "RETRY", 1)
            connection.execute_command("FASTACK", job_id)
            return True
        except redis.ResponseError:
            return False
        finally:
            connection.close()

    def flush(self) -> None:
        """Empty every node (jobs and queues) between tests."""
        for index in self.alive():
            connection = self.client(index)
            try:
                connection.execute_command("DEBUG", "FLUSHALL")
            finally:
                connection.close()

    def kill(self, index: int) -> None:
        """SIGKILL one node, as a crash would (its sockets close at once)."""
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for index, proc in enumerate(self.procs):
            if proc is not None:
                stop_process(proc)
                self.procs[index] = None
