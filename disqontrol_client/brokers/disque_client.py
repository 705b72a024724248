"""A pydisque client that speaks RESP2 and fails over between Disque nodes.

pydisque builds plain ``redis.Redis`` connections, and redis-py 8 opens each
one with ``HELLO 3`` and ``CLIENT SETINFO``, which Disque refuses. pydisque's
own reconnect also keeps the *last* node that answers and logs at CRITICAL on
every retry. This subclass keeps pydisque's command methods and replaces only
how a node connection is made and what happens when it drops.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from pydisque.client import Client as PydisqueClient
from pydisque.client import Node

from disqontrol_client.errors import BrokerUnavailable
from disqontrol_client.logfmt import log_event

logger = logging.getLogger(__name__)

RESP2 = 2
CONNECT_TIMEOUT = 5.0  # s to open a TCP connection to one node
SOCKET_TIMEOUT = 30.0  # s a reply may take; blocking GETJOBs stay below it
NODE_ID_PREFIX_LEN = 8  # Disque job ids embed this much of the producer's node id
FAILING_PRIORITY = 10  # HELLO priority from which Disque deems a node failing
T = TypeVar("T")


def _handshake_options() -> dict[str, Any]:
    """Options that stop redis-py from sending CLIENT SETINFO, in the
    spelling of the installed redis-py (``driver_info`` since 7.x/8)."""
    params = inspect.signature(redis.Redis.__init__).parameters
    if "driver_info" in params:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


def node_connection(
    host: str, port: int, password: Optional[str] = None, socket_timeout: float = SOCKET_TIMEOUT
) -> redis.Redis:
    """A redis-py connection a Disque node accepts: RESP2, no SETINFO."""
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        protocol=RESP2,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=socket_timeout,
        # redis-py 6+ retries a failed command 3 times with backoff (seconds);
        # failing over to the next node at once is the better retry here.
        retry=Retry(NoBackoff(), 0),
        **_handshake_options(),
    )


@dataclass(frozen=True)
class ClusterNode:
    """One node as HELLO describes it."""

    id: str
    host: str
    port: int
    priority: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def id_prefix(self) -> str:
        return self.id[:NODE_ID_PREFIX_LEN]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_hello(reply: Sequence[Any]) -> tuple[str, list[ClusterNode]]:
    """HELLO -> (this node's id, every node of the cluster)."""
    my_id = _text(reply[1])
    nodes = [
        ClusterNode(_text(n[0]), _text(n[1]), int(n[2]), int(n[3])) for n in reply[2:]
    ]
    return my_id, nodes


class FailoverClient(PydisqueClient):
    """pydisque's Client with RESP2 connections and node failover.

    ``nodes`` are "host:port" strings, tried in order. Nodes learned from
    HELLO are tried after the configured ones, so a consumer survives even
    when every configured node is gone but the cluster is not.
    """

    def __init__(
        self, nodes: Sequence[str], password: Optional[str] = None,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        super().__init__(list(nodes))
        self.configured = list(nodes)
        self.password = password
        self.socket_timeout = socket_timeout
        self.cluster: list[ClusterNode] = []
        self.node_id: Optional[str] = None

    @property
    def address(self) -> Optional[str]:
        node = self.connected_node
        return f"{node.host}:{node.port}" if node else None

    def candidates(self, avoid: Optional[str] = None) -> list[str]:
        """Addresses to try: configured first, then learned, ``avoid`` last."""
        seen: list[str] = []
        for address in self.configured + [n.address for n in self.cluster]:
            if address not in seen:
                seen.append(address)
        if avoid in seen:
            seen.remove(avoid)
            seen.append(avoid)
        return seen

    def connect(self, prefer: Optional[str] = None, avoid: Optional[str] = None) -> None:
        """Connect to ``prefer`` if it answers, else to the first node that does."""
        order = self.candidates(avoid)
        if prefer:
            order = [prefer] + [a for a in order if a != prefer]
        errors = []
        for address in order:
            host, _, port = address.rpartition(":")
            connection = node_connection(host, int(port), self.password, self.socket_timeout)
            try:
                reply = connection.execute_command("HELLO")
            except redis.RedisError as exc:  # down, or refusing us (AUTH): try the next
                connection.close()
                errors.append(f"{address}: {exc}")
                continue
            self.close_connection()
            self.node_id, self.cluster = parse_hello(reply)
            self.connected_node = Node(self.node_id, host, int(port), connection)
            self.nodes[address] = self.connected_node
            log_event(logger, "disque_connected", node=address, node_id=self.node_id[:NODE_ID_PREFIX_LEN])
            return
        self.connected_node = None
        raise BrokerUnavailable(
            f"no Disque node answers; tried {', '.join(order)}: {'; '.join(errors)}"
        )

    def close_connection(self) -> None:
        if self.connected_node is not None:
            self.connected_node.connection.close()
            self.connected_node = None

    def with_failover(self, what: str, action: Callable[[redis.Redis], T]) -> T:
        """Run ``action`` on the connected node; when the node is gone, move
        to another and run it again there. At least once: an action whose
        reply was lost may have run on the dead node too."""
        if self.connected_node is None:
            self.connect()
        for attempt in range(len(self.candidates()) + 1):
            node = self.connected_node
            assert node is not None
            try:
                return action(node.connection)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                dead = f"{node.host}:{node.port}"
                log_event(logger, "disque_node_lost", level=logging.WARNING, node=dead,
                          command=what, error=exc, attempt=attempt + 1)
                self.close_connection()
                self.connect(avoid=dead)
        raise BrokerUnavailable(f"Disque command {what} failed on every node")

    def each_node(self, what: str, action: Callable[[redis.Redis], T]) -> list[T]:
        """Run ``action`` on every node the cluster deems healthy (a fresh
        HELLO says which), for views that need all of them. A node that
        cannot be reached is skipped and logged: its copies have twins."""
        self.node_id, self.cluster = parse_hello(self.execute_command("HELLO"))
        results = []
        for node in self.cluster:
            if node.priority >= FAILING_PRIORITY and node.id != self.node_id:
                continue
            try:
                results.append(self.on_node(node, action))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log_event(logger, "disque_node_skipped", level=logging.WARNING, node=node.address,
                          command=what, error=exc)
        return results

    def on_node(self, node: ClusterNode, action: Callable[[redis.Redis], T]) -> T:
        """Run ``action`` on that node and no other (no failover: a view or a
        claim must not count a node twice), through the open connection if it
        is the connected node. Raises redis.ConnectionError / TimeoutError
        when the node is gone."""
        if node.id == self.node_id and self.connected_node is not None:
            return action(self.connected_node.connection)
        connection = node_connection(node.host, node.port, self.password, self.socket_timeout)
        try:
            return action(connection)
        finally:
            connection.close()

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Every pydisque method ends here: one command, with failover."""
        return self.with_failover(_text(args[0]), lambda c: c.execute_command(*args, **kwargs))
