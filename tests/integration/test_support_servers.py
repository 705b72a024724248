"""The servers the suite starts for itself. A port free_port() found free can
be taken by another test worker's server before ours binds it: that server's
PONG must not pass for ours, or two workers would share (and flush) one
redis-server, or join their Disque nodes into one cluster."""
from __future__ import annotations

import os

import pytest
import redis

from disqontrol_client.brokers.disque_client import node_connection
from tests.support.disque_cluster import DisqueCluster
from tests.support.procs import ServerExited
from tests.support.redis_server import RedisServer, probe_client


def test_a_redis_port_taken_before_the_server_binds_it_is_left_for_another(tmp_path, redis_server):
    # Given a server whose free port another worker's server took meanwhile
    server = RedisServer(tmp_path / "late")
    server.port = redis_server.port
    # When it starts
    server.start()
    try:
        # Then it runs on another port, and what answers there is itself
        assert server.port != redis_server.port
        with redis.Redis(host="127.0.0.1", port=server.port) as client:
            assert client.info("server")["process_id"] == server.proc.pid
    finally:
        server.stop()


def test_a_redis_server_that_cannot_have_its_port_fails_naming_it(tmp_path, redis_server):
    # Given a server told its port (as a restart keeps its own), which another holds
    server = RedisServer(tmp_path / "taken", port=redis_server.port)
    # When it starts, then it fails, naming the port, instead of passing the other's PONG for its own
    try:
        with pytest.raises(ServerExited, match=f"redis-server on port {redis_server.port} exited"):
            server.start()
    finally:
        server.stop()


def test_a_disque_node_port_taken_before_it_binds_it_is_left_for_another(tmp_path, disque_cluster):
    # Given a one-node cluster whose port another worker's node took meanwhile
    cluster = DisqueCluster(os.environ["DISQUE_SERVER"], tmp_path / "late", nodes=1)
    cluster.ports[0] = disque_cluster.ports[0]
    # When it starts
    cluster.start()
    try:
        # Then its node runs on another port, alone: not met with the other cluster's nodes
        assert cluster.ports[0] != disque_cluster.ports[0]
        connection = node_connection("127.0.0.1", cluster.ports[0], None)
        try:
            assert connection.execute_command("INFO", "server")["process_id"] == cluster.procs[0].pid
        finally:
            connection.close()
    finally:
        cluster.stop()


def test_a_refused_port_stays_refused_even_to_a_server_that_wants_it(tmp_path, refused_port, redis_server):
    # Given the port a test uses as "nothing listens there" (redis_server: skips without redis-server)
    # When another worker's server is started on it
    server = RedisServer(tmp_path / "intruder", port=refused_port)
    # Then it cannot bind it, and a connect there is still refused
    try:
        with pytest.raises(ServerExited, match=f"port {refused_port} exited"):
            server.start()
    finally:
        server.stop()
    with pytest.raises(redis.ConnectionError):
        probe_client(refused_port).ping()
