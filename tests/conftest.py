"""Shared fixtures: the broker engines every contract and integration test
runs on. sqlite always runs, on one file and sharded (``?shards=2``: every
contract test applies, each adds its jobs from one process, whose order the
sharded engine keeps); redis when redis-server is installed (make test
installs it); disque when $DISQUE_SERVER names a disque-server binary."""
from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.redis_server import RedisServer, server_binary

ENGINES = ("sqlite", "sqlite-sharded", "redis", "disque")
_redis_db = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not server_binary():
        pytest.skip("redis-server is not installed (make test installs Debian's redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where every connect is refused while the test
    runs: bound, never listening. A port free_port() found free could be
    taken meanwhile by a server of another test worker, which would answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.fixture(scope="session")
def disque_cluster(tmp_path_factory):
    binary = os.environ.get("DISQUE_SERVER")
    if not binary:
        pytest.skip("DISQUE_SERVER is not set: set it to a disque-server binary to run the disque tests")
    from tests.support.disque_cluster import DisqueCluster  # noqa: PLC0415

    cluster = DisqueCluster(binary, tmp_path_factory.mktemp("disque")).start()
    yield cluster
    cluster.stop()


def _flushed_redis_url(server: RedisServer) -> str:
    import redis  # noqa: PLC0415

    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.flushall()
    client.close()
    return server.url


@pytest.fixture(params=ENGINES)
def broker_url(request, tmp_path: Path) -> str:
    """A URL of an empty store of each engine in turn."""
    engine = request.param
    if engine == "sqlite":
        return f"sqlite://{tmp_path}/jobs.db"
    if engine == "sqlite-sharded":
        return f"sqlite://{tmp_path}/jobs.db?shards=2"
    if engine == "redis":
        return _flushed_redis_url(request.getfixturevalue("redis_server"))
    cluster = request.getfixturevalue("disque_cluster")
    cluster.flush()
    return cluster.url
