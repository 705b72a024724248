"""The Disque engine: pydisque over redis-py (RESP2), node failover, and
switching a consumer to the node that produces most of its jobs.

Disque speaks the broker interface natively (ADDJOB / GETJOB / ACKJOB / NACK /
WORKING), so most methods are one command. Disque counts in whole seconds:
DELAY, RETRY and TTL are rounded up. Queues are per node: ``length``,
``stats``, ``peek`` and ``queues`` describe the connected node (a consumer's
GETJOB on an empty queue imports jobs from the other nodes).
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import parse_qsl, unquote

import redis

from disqontrol_client.brokers.broker import (
    DEFAULT_RETRY,
    DEFAULT_TTL,
    MAX_TTL,
    Broker,
    Delivery,
    NewJob,
    QueueStats,
)
from disqontrol_client.brokers.disque_client import (
    NODE_ID_PREFIX_LEN,
    SOCKET_TIMEOUT,
    ClusterNode,
    FailoverClient,
)
from disqontrol_client.errors import BrokerError, ConfigError
from disqontrol_client.logfmt import log_event

logger = logging.getLogger(__name__)

SCHEME = "disque"
DEFAULT_PORT = 7711
DEFAULT_REPLICATE = 2  # copies per job: survives the loss of one node
ADDJOB_TIMEOUT_MS = 5000  # synchronous replication may take this long
MAX_GETJOB_TIMEOUT = SOCKET_TIMEOUT / 2  # s per blocking GETJOB, below the socket timeout
SWITCH_AFTER = 100  # jobs received between best-node decisions (disque-php: 1000)
SWITCH_MARGIN = 0.05  # a node must beat the current one by 5 % to be worth a move
FAILING_PRIORITY = 10  # HELLO priority from which Disque deems a node failing
SCAN_COUNT = 1000
JOB_ID_PREFIX = "D-"  # D-<8 chars of the producing node id>-...
JOB_ID_LEN = 40
STATE_ACTIVE = "active"
STATE_QUEUED = "queued"
URL_OPTIONS = ("replicate", "switch_after")


def parse_url(url: str) -> tuple[list[str], Optional[str], dict[str, int]]:
    """``disque://[:password@]h:p,h:p[?replicate=2&switch_after=100]`` ->
    (["h:p", ...], password, options)."""
    if not url.startswith(f"{SCHEME}://"):
        raise ConfigError(f"disqontrol.broker: {url!r} is not a disque:// URL")
    rest = url[len(SCHEME) + 3:]
    rest, _, query = rest.partition("?")
    rest = rest.rstrip("/")
    password = None
    if "@" in rest:
        credentials, _, rest = rest.rpartition("@")
        password = unquote(credentials.partition(":")[2]) or None
    nodes = []
    for part in filter(None, rest.split(",")):
        host, _, port = part.partition(":")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"disqontrol.broker: {part!r} in {url!r} is not host:port")
        nodes.append(f"{host}:{port or DEFAULT_PORT}")
    if not nodes:
        raise ConfigError(f"disqontrol.broker: {url!r} names no Disque node (disque://host:port,...)")
    options = {}
    for key, value in parse_qsl(query):
        if key not in URL_OPTIONS or not value.isdigit() or int(value) < 1:
            raise ConfigError(
                f"disqontrol.broker: option {key}={value!r} in {url!r}; allowed: "
                f"{', '.join(URL_OPTIONS)} as positive integers"
            )
        options[key] = int(value)
    return nodes, password, options


def seconds(value: float) -> int:
    """Disque's whole seconds, rounded up so a lease is never shorter."""
    return int(math.ceil(value))


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _pairs(reply: Optional[Sequence[Any]]) -> dict[str, Any]:
    if not reply:
        return {}
    return dict(zip(map(_text, reply[::2]), reply[1::2]))


def disque_ids(ids: Iterable[str]) -> list[str]:
    """The ids shaped like Disque's: any other id is unknown to every node,
    and ACKJOB would refuse the whole batch for it (BADID)."""
    return [i for i in ids if i.startswith(JOB_ID_PREFIX) and len(i) == JOB_ID_LEN]


def node_weight(priority: int) -> float:
    """How much a node's job count is worth by its HELLO priority: 1 is
    healthy, 2..9 is discounted (1 / (1 + log10 p), as disque-php did), and
    10 or more means failing or failed: never worth a move."""
    if priority >= FAILING_PRIORITY:
        return 0.0
    return 1.0 / (1.0 + math.log10(max(1, priority)))


def choose_node(counts: Mapping[str, int], nodes: Sequence[ClusterNode], current: Optional[str]) -> Optional[str]:
    """The address of the node producing most of the received jobs, weighed
    by its health, if it beats the current node by SWITCH_MARGIN; else None.
    The margin keeps a consumer from flapping between two even nodes."""
    scores = {n.address: counts.get(n.id_prefix, 0) * node_weight(n.priority) for n in nodes}
    if not scores:
        return None
    best = max(scores, key=scores.__getitem__)
    if best == current or scores[best] <= 0:
        return None
    if scores[best] > scores.get(current or "", 0.0) * (1 + SWITCH_MARGIN):
        return best
    return None


def producer_prefix(job_id: str) -> Optional[str]:
    """The 8-char node id prefix Disque embeds in a job id, or None."""
    if job_id.startswith(JOB_ID_PREFIX) and len(job_id) > len(JOB_ID_PREFIX) + NODE_ID_PREFIX_LEN:
        return job_id[len(JOB_ID_PREFIX):len(JOB_ID_PREFIX) + NODE_ID_PREFIX_LEN]
    return None


class DisqueBroker(Broker):
    """A connection to a Disque cluster through any node that answers."""

    schemes = (SCHEME,)

    def __init__(
        self, nodes: Sequence[str], password: Optional[str] = None, *,
        replicate: int = DEFAULT_REPLICATE, switch_after: int = SWITCH_AFTER,
    ) -> None:
        self.client = FailoverClient(nodes, password)
        self.replicate = replicate
        self.switch_after = switch_after
        self.produced_by: Counter[str] = Counter()  # node id prefix -> jobs received
        self.client.connect()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "DisqueBroker":
        nodes, password, url_options = parse_url(url)
        return cls(nodes, password, **{**url_options, **options})

    @property
    def node(self) -> Optional[str]:
        """The "host:port" of the connected node."""
        return self.client.address

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A pydisque method; Disque's refusals become BrokerError."""
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except redis.ResponseError as exc:
            raise BrokerError(f"Disque refused {method}{args[:1]!r}: {exc}") from exc

    # -- adding -------------------------------------------------------------

    def _addjob_args(self, queue: str, delay: float, retry: float, ttl: float) -> dict[str, Any]:
        ttl_s = min(seconds(ttl), MAX_TTL)
        delay_s = seconds(delay)
        if delay_s >= ttl_s:
            raise BrokerError(f"delay {delay}s must be shorter than the job's ttl {ttl}s (queue {queue!r})")
        return {"delay": delay_s or None, "retry": max(1, seconds(retry)), "ttl": ttl_s}

    def add(self, queue: str, payload: bytes, *, delay: float = 0,
            retry: float = DEFAULT_RETRY, ttl: float = DEFAULT_TTL) -> str:
        options = self._addjob_args(queue, delay, retry, ttl)
        replicate = self.replicate
        while True:
            try:
                job_id = self.client.add_job(queue, payload, timeout=ADDJOB_TIMEOUT_MS,
                                             replicate=replicate, **options)
                return _text(job_id)
            except redis.ResponseError as exc:
                if not str(exc).startswith("NOREPL") or replicate <= 1:
                    raise BrokerError(f"Disque refused ADDJOB to queue {queue!r}: {exc}") from exc
                replicate -= 1
                log_event(logger, "disque_replication_lowered", level=logging.WARNING,
                          queue=queue, replicate=replicate, node=self.node, error=exc)

    def add_many(self, items: Sequence[NewJob]) -> list[str]:
        """One round trip for the batch (a pipeline on the connected node);
        a job the pipeline could not replicate is added again on its own."""
        if not items:
            return []
        commands = []
        for item in items:
            o = self._addjob_args(item.queue, item.delay, item.retry, item.ttl)
            args = ["ADDJOB", item.queue, item.payload, ADDJOB_TIMEOUT_MS, "REPLICATE", self.replicate,
                    "RETRY", o["retry"], "TTL", o["ttl"]]
            commands.append(args + (["DELAY", o["delay"]] if o["delay"] else []))
        replies = self._pipeline(commands)
        return [
            _text(reply) if not isinstance(reply, Exception)
            else self.add(item.queue, item.payload, delay=item.delay, retry=item.retry, ttl=item.ttl)
            for item, reply in zip(items, replies)
        ]

    def _pipeline(self, commands: list[list[Any]]) -> list[Any]:
        """Send every command in one round trip; per-command errors come back
        as values. A lost node means the whole batch is sent again elsewhere."""
        def send(connection: redis.Redis) -> list[Any]:
            pipe = connection.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=False)

        return self.client.with_failover("ADDJOB", send)

    # -- consuming ----------------------------------------------------------

    def reserve(self, queues: Sequence[str], *, count: int = 1, timeout: float = 1.0) -> list[Delivery]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            jobs = self._getjob(list(queues), count, min(left, MAX_GETJOB_TIMEOUT))
            if jobs or left <= MAX_GETJOB_TIMEOUT:
                break
        # pydisque names the fields (id, queue) but Disque sends (queue, id).
        deliveries = [
            Delivery(id=_text(job_id), queue=_text(queue), payload=bytes(body),
                     nacks=int(nacks), additional_deliveries=int(extra))
            for queue, job_id, body, nacks, extra in jobs
        ]
        self._count_producers(deliveries)
        return deliveries

    def _getjob(self, queues: list[str], count: int, block: float) -> list[Any]:
        """GETJOB, keeping the contract's queue order: with COUNT, Disque
        takes one job per queue in turn, so several queues are drained one
        after the other (a NOHANG round trip each) before blocking on all."""
        if len(queues) > 1 and count > 1:
            taken: list[Any] = []
            for queue in queues:
                taken += self._getjob_once([queue], count - len(taken), 0)
                if len(taken) == count:
                    break
            if taken or block <= 0:
                return taken
        return self._getjob_once(queues, count, block)

    def _getjob_once(self, queues: list[str], count: int, block: float) -> list[Any]:
        return self._call(
            "get_job", queues, count=count, withcounters=True, nohang=block <= 0,
            timeout=max(1, math.ceil(block * 1000)) if block > 0 else None,
        )

    def ack(self, ids: Iterable[str]) -> None:
        ids = disque_ids(ids)
        if ids:
            self._call("ack_job", *ids)

    def nack(self, ids: Iterable[str]) -> None:
        ids = disque_ids(ids)
        if ids:
            self._call("nack_job", *ids)

    def working(self, id: str) -> None:
        self._call("working", id)

    def delete(self, ids: Iterable[str]) -> None:
        """FASTACK: a best-effort delete on every node holding a copy
        (DELJOB would remove only the connected node's copy)."""
        ids = disque_ids(ids)
        if ids:
            self._call("fast_ack", *ids)

    # -- inspecting ---------------------------------------------------------

    def _jobs_of(self, queue: str, states: Sequence[str]) -> list[dict[str, Any]]:
        """Every job of ``queue`` the connected node holds in ``states``."""
        cursor, jobs = 0, []
        while True:
            reply = self._call("jscan", cursor, count=SCAN_COUNT, queue=queue, state=list(states), reply="all")
            cursor = int(reply[0])
            jobs.extend(_pairs(item) for item in reply[1])
            if cursor == 0:
                return jobs

    @staticmethod
    def _is_delayed(job: dict[str, Any], now: float) -> bool:
        """An active job still inside its first DELAY has never been queued;
        any other active job is out with a consumer (leased)."""
        return int(job["delay"]) > 0 and int(job["ctime"]) / 1e9 + int(job["delay"]) > now

    def length(self, queue: str) -> int:
        stats = self.stats([queue])[0]
        return stats.ready + stats.delayed

    def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        now = time.time()
        result = []
        for queue in queues:
            ready = int(self._call("qlen", queue))
            active = self._jobs_of(queue, [STATE_ACTIVE])
            delayed = sum(1 for job in active if self._is_delayed(job, now))
            result.append(QueueStats(queue, ready, delayed, len(active) - delayed))
        return result

    def queues(self) -> list[str]:
        names: set[str] = set()
        cursor = 0
        while True:
            reply = self._call("jscan", cursor, count=SCAN_COUNT, state=[STATE_ACTIVE, STATE_QUEUED], reply="all")
            cursor = int(reply[0])
            names.update(_text(_pairs(item)["queue"]) for item in reply[1])
            if cursor == 0:
                return sorted(names)

    def peek(self, queue: str, count: int) -> list[Delivery]:
        """Queued jobs oldest first (QPEEK), then delayed ones by due time."""
        if count <= 0:
            return []
        jobs = [Delivery(id=_text(j[1]), queue=_text(j[0]), payload=bytes(j[2]))
                for j in self._call("qpeek", queue, count)]
        if len(jobs) < count:
            now = time.time()
            delayed = [j for j in self._jobs_of(queue, [STATE_ACTIVE]) if self._is_delayed(j, now)]
            delayed.sort(key=lambda j: int(j["ctime"]) / 1e9 + int(j["delay"]))
            jobs += [self._delivery(j) for j in delayed[:count - len(jobs)]]
        return jobs

    @staticmethod
    def _delivery(job: dict[str, Any]) -> Delivery:
        return Delivery(id=_text(job["id"]), queue=_text(job["queue"]), payload=bytes(job["body"]),
                        nacks=int(job["nacks"]), additional_deliveries=int(job["additional-deliveries"]))

    def show(self, id: str) -> Optional[dict[str, Any]]:
        if not disque_ids([id]):
            return None
        job = _pairs(self._call("show", id))
        if not job or job.get("body") is None:
            return None
        state = _text(job["state"])
        if state == STATE_QUEUED:
            state = "ready"
        elif state == STATE_ACTIVE:
            state = "delayed" if self._is_delayed(job, time.time()) else "leased"
        return {
            "id": _text(job["id"]), "queue": _text(job["queue"]), "payload": bytes(job["body"]),
            "state": state, "nacks": int(job["nacks"]),
            "additional_deliveries": int(job["additional-deliveries"]),
            "ctime": int(job["ctime"]) / 1e9, "ttl": int(job["ttl"]), "retry": int(job["retry"]),
            "delay": int(job["delay"]), "disque_state": _text(job["state"]),
        }

    def claim(self, key: str, ttl: float) -> bool:
        """Disque has no key-value store and job ids are random, so there is
        no atomic "first caller wins" across nodes: refuse clearly."""
        raise NotImplementedError(
            "the disque broker has no claim(): Disque has no atomic key-value store and job ids "
            "are random, so a cron minute cannot be fired once across schedulers; run one "
            "scheduler, or give the scheduler a redis:// or sqlite:// claim store"
        )

    # -- best node ----------------------------------------------------------

    def _count_producers(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            prefix = producer_prefix(delivery.id)
            if prefix:
                self.produced_by[prefix] += 1
        if sum(self.produced_by.values()) >= self.switch_after:
            self._switch_to_best_node()

    def best_node(self) -> Optional[str]:
        """The address to move to, or None to stay (see ``choose_node``)."""
        return choose_node(self.produced_by, self.client.cluster, self.node)

    def _switch_to_best_node(self) -> None:
        best = self.best_node()
        counts = dict(self.produced_by)
        self.produced_by.clear()
        if best is None:
            return
        old = self.node
        self.client.connect(prefer=best)
        log_event(logger, "disque_switched_node", old=old, new=self.node, counts=counts)

    def close(self) -> None:
        self.client.close_connection()
