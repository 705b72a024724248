"""The Disque engine: pydisque over redis-py (RESP2), node failover, and
switching a consumer to the node that produces most of its jobs.

Disque speaks the broker interface natively (ADDJOB / GETJOB / ACKJOB / NACK /
WORKING), so most methods are one command. Disque counts in whole seconds:
DELAY, RETRY and TTL are rounded up. Queues are per node (a consumer's
GETJOB on an empty queue imports jobs from the other nodes), so ``length``,
``stats``, ``peek``, ``show`` and ``queues`` merge every node's copies
(disque_view); ``claim`` takes a majority of nodes (disque_claim).
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence
from urllib.parse import parse_qsl, unquote

import redis

from disqontrol_client.brokers.broker import (
    DEFAULT_RETRY,
    DEFAULT_TTL,
    MAX_TTL,
    SCAN_PAGE,
    Broker,
    Delivery,
    NewJob,
    QueueStats,
)
from disqontrol_client.brokers.disque_client import (
    NODE_ID_PREFIX_LEN,
    FAILING_PRIORITY,
    SOCKET_TIMEOUT,
    ClusterNode,
    FailoverClient,
)
from disqontrol_client.brokers import disque_claim
from disqontrol_client.brokers import disque_view as view
from disqontrol_client.brokers.disque_view import JobView
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
JOB_ID_PREFIX = "D-"  # D-<8 chars of the producing node id>-...
JOB_ID_LEN = 40
NOJOB = "NOJOB"  # Disque's error for a job this node does not hold
URL_OPTIONS = {  # name -> smallest allowed value
    "replicate": 1,
    "switch_after": 1,
    "async": 0,  # 1: ADDJOB ASYNC, replicate in the background
}


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
        if part.startswith("["):  # [IPv6]:port
            host, _, port = part[1:].partition("]")
            port = port[1:]
        else:
            host, _, port = part.partition(":")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"disqontrol.broker: {part!r} in {url!r} is not host:port")
        nodes.append(f"{host}:{port or DEFAULT_PORT}")
    if not nodes:
        raise ConfigError(f"disqontrol.broker: {url!r} names no Disque node (disque://host:port,...)")
    options = {}
    for key, value in parse_qsl(query):
        if key not in URL_OPTIONS or not value.isdigit() or int(value) < URL_OPTIONS[key]:
            raise ConfigError(
                f"disqontrol.broker: option {key}={value!r} in {url!r}; allowed: replicate and "
                f"switch_after as positive integers, async as 0 or 1"
            )
        options["asynchronous" if key == "async" else key] = int(value)
    return nodes, password, options


def seconds(value: float) -> int:
    """Disque's whole seconds, rounded up so a lease is never shorter."""
    return int(math.ceil(value))


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


def _working_on(connection: redis.Redis, job_id: str) -> bool:
    try:
        connection.execute_command("WORKING", job_id)
    except redis.ResponseError as exc:
        if NOJOB in str(exc):
            return False
        raise BrokerError(f"Disque refused WORKING {job_id!r}: {exc}") from exc
    return True


class DisqueBroker(Broker):
    """A connection to a Disque cluster through any node that answers."""

    schemes = (SCHEME,)

    def __init__(
        self, nodes: Sequence[str], password: Optional[str] = None, *,
        replicate: int = DEFAULT_REPLICATE, switch_after: int = SWITCH_AFTER, asynchronous: bool = False,
    ) -> None:
        self.client = FailoverClient(nodes, password)
        self.replicate = replicate
        self.asynchronous = bool(asynchronous)
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
                                             replicate=replicate, asynchronous=self.asynchronous,
                                             **options)
                return view.text(job_id)
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
            args += ["DELAY", o["delay"]] if o["delay"] else []
            commands.append(args + (["ASYNC"] if self.asynchronous else []))
        replies = self._pipeline(commands)
        return [
            view.text(reply) if not isinstance(reply, Exception)
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

    def reserve(
        self, queues: Sequence[str], *, count: int = 1, timeout: float = 1.0, ack: Sequence[str] = ()
    ) -> list[Delivery]:
        """GETJOB; ``ack`` is an ACKJOB sent first (its own round trip)."""
        if ack:
            self.ack(ack)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            jobs = self._getjob(list(queues), count, min(left, MAX_GETJOB_TIMEOUT))
            if jobs or left <= MAX_GETJOB_TIMEOUT:
                break
        # pydisque names the fields (id, queue) but Disque sends (queue, id).
        deliveries = [
            Delivery(id=view.text(job_id), queue=view.text(queue), payload=bytes(body),
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
        """WORKING on the connected node, or on the nodes holding a copy
        when this one has none (after a failover or a best-node switch)."""
        try:
            self._call("working", id)
            return
        except BrokerError as exc:
            if NOJOB not in str(exc):
                raise
        if not any(self.client.each_node("WORKING", lambda c: _working_on(c, id))):
            raise BrokerError(f"WORKING {id!r}: no Disque node holds that job (acked, expired or unknown)")

    def delete(self, ids: Iterable[str]) -> None:
        """FASTACK: a best-effort delete on every node holding a copy
        (DELJOB would remove only the connected node's copy)."""
        ids = disque_ids(ids)
        if ids:
            self._call("fast_ack", *ids)

    # -- inspecting: merged over every node (see disque_view) ------------

    def _jobs(self, queue: Optional[str] = None) -> dict[str, JobView]:
        copies = self.client.each_node("JSCAN", lambda c: view.scan(c, queue))
        return view.merge((job for node in copies for job in node), time.time())

    def length(self, queue: str) -> int:
        stats = self.stats([queue])[0]
        return stats.ready + stats.delayed

    def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        """Counts over the whole cluster: one JSCAN of the queue per node,
        so it costs O(jobs); meant for status, not for a hot loop."""
        result = []
        for queue in queues:
            states = Counter(job.state for job in self._jobs(queue).values())
            result.append(QueueStats(queue, states[view.READY], states[view.DELAYED], states[view.LEASED]))
        return result

    def backlog(self, queues: Sequence[str], cap: int) -> dict[str, int]:
        """QLEN summed over the healthy nodes: O(1) per queue and node, where
        ``stats`` scans every job. A job is queued on one node at a time, so
        the sum counts each ready job once."""
        per_node = self.client.each_node(
            "QLEN", lambda c: [int(c.execute_command("QLEN", queue)) for queue in queues])
        return {queue: min(sum(lengths[i] for lengths in per_node), cap) for i, queue in enumerate(queues)}

    def queues(self) -> list[str]:
        """Job queues only: the scheduler's claims live in queues too."""
        names = {job.queue for job in self._jobs().values()}
        return sorted(n for n in names if not n.startswith(disque_claim.CLAIM_QUEUE_PREFIX))

    def peek(self, queue: str, count: int, *, skip: int = 0) -> list[Delivery]:
        """Ready jobs oldest first, then delayed ones by due time. Disque has
        no order to page by, so each call still reads the whole queue's ids
        and places (not its bodies: see ``_places``)."""
        return list(self._deliveries(self._places(queue)[max(0, skip):max(0, skip) + max(0, count)]))

    def scan(self, queue: str, page: int = SCAN_PAGE) -> Iterator[Delivery]:
        """One read of the queue's ids and places, then its bodies ``page``
        jobs at a time: a walk of 20,000 jobs of 1 MiB holds a page of
        bodies, not the queue. Paging by ``peek(skip=)`` would read the
        places once per page."""
        places = self._places(queue)
        for start in range(0, len(places), max(1, page)):
            yield from self._deliveries(places[start:start + max(1, page)])

    def _places(self, queue: str) -> list[JobView]:
        """The queue's waiting jobs in peek's order, without their bodies:
        every node's copies (JSCAN), each body dropped as it is read."""
        copies = self.client.each_node("JSCAN", lambda c: view.scan(c, queue, bodies=False))
        jobs = view.merge((job for node in copies for job in node), time.time())
        places = [j for j in jobs.values() if j.state in (view.READY, view.DELAYED)]
        places.sort(key=lambda j: (j.state != view.READY, j.due if j.state == view.DELAYED else 0, j.order))
        return places

    def _deliveries(self, places: Sequence[JobView]) -> Iterator[Delivery]:
        """Those jobs with their bodies, read again a few at a time from the
        connected node (which holds a copy of most: Disque replicates each
        job), then from every node for the others; a job acked or moved
        since its place was read is left out. The counters are the places'."""
        for start in range(0, len(places), view.SHOW_CHUNK):
            chunk = places[start:start + view.SHOW_CHUNK]
            bodies = self._bodies([j.id for j in chunk])
            for j in chunk:
                if j.id in bodies:
                    yield Delivery(id=j.id, queue=j.queue, payload=bodies[j.id], nacks=j.nacks,
                                   additional_deliveries=j.additional_deliveries)

    def _bodies(self, ids: Sequence[str]) -> dict[str, bytes]:
        def live(copies: Iterable[dict[str, Any]]) -> dict[str, bytes]:
            return {j.id: j.body for j in view.merge(copies, time.time()).values()}

        bodies = live(self.client.with_failover("SHOW", lambda c: view.show_many(c, ids)))
        elsewhere = [job_id for job_id in ids if job_id not in bodies]
        if elsewhere:
            copies = self.client.each_node("SHOW", lambda c: view.show_many(c, elsewhere))
            bodies.update(live(job for node in copies for job in node))
        return bodies

    def show(self, id: str) -> Optional[dict[str, Any]]:
        if not disque_ids([id]):
            return None
        copies = self.client.each_node("SHOW", lambda c: view.pairs(c.execute_command("SHOW", id)))
        job = view.merge(copies, time.time()).get(id)
        return job.as_dict() if job else None

    def claim(self, key: str, ttl: float) -> bool:
        """A majority of nodes, each atomic on its own (see disque_claim)."""
        return disque_claim.claim(self.client, key, ttl)

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
