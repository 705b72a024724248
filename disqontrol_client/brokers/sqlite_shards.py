"""The sqlite broker over several files: ``sqlite:///path/jobs.db?shards=N``.

Why: one sqlite file takes one writer at a time, so two consumers on one
file get about one core's rate. Spread over N files (shards), consumers on
different shards run in parallel. The price is the order of a queue: a job
waits behind its own shard's jobs only, so a queue is first in, first out
per producer (each process adds to one home shard), not across producers.

Files: shard 0 is ``jobs.db`` itself (a database that gains the option keeps
its jobs), shard k is ``jobs.db.shard<k>`` with ids ``S<k>-<rowid>`` (shard
0 keeps ``S-<rowid>``). Every shard shares shard 0's wake directory, so one
blocked reserve hears an add to any of them. Shard files that exist beyond N
(the option was lowered or removed) are still reserved from, looked at and
acked: only adds stop going to them. Files another process creates later
are found by a rescan at most ``RESCAN_INTERVAL`` later. Every sqlite URL
opens through this class: with one file and no shard file beside it, the
hot calls are that file's own ``SqliteBroker`` methods (the one-file speed)
and its ttl sweep looks for shard files.

Reserve leases from the process's home shard first (see ``sqlite_homes``),
with that shard's acks in the same transaction; when it gives nothing, from
the other shards in turn (work stealing). Shards no live consumer calls home
(a dead consumer's, or beyond N) are started from in turn with the home
shard, so their jobs do not wait for it to run dry. A queue order over
several queues holds per shard. Claims (the scheduler's) live in shard 0
only: one place decides a cron run.
"""
from __future__ import annotations

import heapq
import itertools
import os
import re
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from disqontrol_client.brokers.broker import (
    DEFAULT_RETRY, DEFAULT_TTL, SCAN_PAGE, Broker, Delivery, NewJob, QueueStats,
)
from disqontrol_client.brokers.sqlite import ID_PREFIX, MAX_SHARDS, SqliteBroker, parse_url
from disqontrol_client.brokers.sqlite_homes import CONSUMER, PRODUCER, Homes
from disqontrol_client.brokers.sqlite_store import BUSY_TIMEOUT
from disqontrol_client.brokers.sqlite_wake import Waiter, WakeDir, lease_or_wait
from disqontrol_client.errors import BrokerError, BrokerUnavailable

SHARD_SUFFIX = ".shard"  # jobs.db.shard1, jobs.db.shard2, ...
# Called straight on shard 0 while it is the only file: the one-file speed.
ONE_FILE_CALLS = ("add", "add_many", "replace", "reserve", "ack", "nack", "working", "delete")
RESCAN_INTERVAL = 1.0  # s: how soon a shard file created by another process is served
_SHARD_ID = re.compile(r"S([1-9][0-9]?)-[0-9]+\Z")


def shard_path(path: str, shard: int) -> str:
    return path if shard == 0 else f"{path}{SHARD_SUFFIX}{shard}"


def shard_prefix(shard: int) -> str:
    return ID_PREFIX if shard == 0 else f"S{shard}-"


def shard_of(job_id: str) -> Optional[int]:
    """The shard encoded in a job id, or None for an id that is not ours."""
    if job_id.startswith(ID_PREFIX):
        return 0
    match = _SHARD_ID.match(job_id)
    if match is None or int(match.group(1)) >= MAX_SHARDS:
        return None
    return int(match.group(1))


def existing_shards(path: str) -> set[int]:
    """Shards k >= 1 whose file exists beside ``path``."""
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(name + SHARD_SUFFIX) + r"([1-9][0-9]?)\Z")
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return set()  # no database yet: opening it says why, if it cannot be made
    except OSError as exc:
        raise BrokerUnavailable(f"sqlite broker: cannot list {directory!r} for shard files of {path!r}: "
                                f"{exc.strerror}; the directory must be readable by this user") from exc
    found = (pattern.match(n) for n in names)
    return {int(m.group(1)) for m in found if m is not None and int(m.group(1)) < MAX_SHARDS}


class ShardedSqliteBroker(Broker):
    """Jobs spread over ``shards`` sqlite files, plus any older shard files
    still holding jobs."""

    schemes = ("sqlite",)
    atomic_claims = True
    versioned_data = True

    def __init__(self, path: str, shards: int, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise BrokerError(f"sqlite broker: shards {shards!r} must be from 1 to {MAX_SHARDS}")
        self.path = path
        self.shards = shards  # adds go to shards 0 .. shards-1 only
        self._busy_timeout = busy_timeout
        self._wake = WakeDir(path)
        self._waiter = Waiter(self._wake)
        self._homes = Homes(path, shards)
        self._open: dict[int, SqliteBroker] = {}
        self._by_prefix: dict[str, SqliteBroker] = {}  # id prefix -> its open shard
        self._order: list[int] = []  # every shard served, ascending
        self._rescan_at = 0.0
        self._turns: list[int] = []  # shards a reserve starts from, in turn: home, then unowned ones
        self._turn = 0
        self._turns_at = 0.0
        self._turns_pid = 0
        self._free_before: set[int] = set()  # shards whose consumer lock was free at the last look
        for shard in range(shards):
            self._add_shard(shard)
        self._rescan()
        if len(self._open) == 1:
            self._bind_one_file()

    @classmethod
    def open(cls, path: str, shards: int, **options: Any) -> "ShardedSqliteBroker":
        """Open every shard now: a file that cannot be used fails here, with
        its name, and every shard that adds may go to exists for the other
        processes to find."""
        broker = cls(path, shards, **options)
        for shard in broker._open.values():
            shard._conn()
        return broker

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "ShardedSqliteBroker":
        return cls.open(*parse_url(url), **options)

    # -- the shards ------------------------------------------------------------

    def _add_shard(self, shard: int) -> SqliteBroker:
        broker = SqliteBroker(shard_path(self.path, shard), busy_timeout=self._busy_timeout,
                              id_prefix=shard_prefix(shard), wake=self._wake)
        self._open[shard] = broker
        self._by_prefix[broker.id_prefix] = broker
        self._order = sorted(self._open)
        if len(self._open) > 1:
            self._route()
        return broker

    def _bind_one_file(self) -> None:
        """One file (no option, no shard file): the hot calls are shard 0's
        own methods, so the one-file engine costs what it always did; its
        ttl sweep (each second, while reserving) looks for shard files."""
        only = self._open[0]
        for name in ONE_FILE_CALLS:
            setattr(self, name, getattr(only, name))
        only.on_sweep = self._maybe_rescan

    def _route(self) -> None:
        """Several files: every call through this class's routing."""
        for name in ONE_FILE_CALLS:
            self.__dict__.pop(name, None)
        self._open[0].on_sweep = None

    def _rescan(self) -> None:
        """Serve the shard files that appeared since the last look."""
        for shard in existing_shards(self.path) - set(self._open):
            self._add_shard(shard)
        self._rescan_at = time.monotonic() + RESCAN_INTERVAL

    def _maybe_rescan(self) -> None:
        if time.monotonic() >= self._rescan_at:
            self._rescan()

    def _shard_of(self, job_id: str) -> Optional[SqliteBroker]:
        """The open shard of ``job_id``; a shard file this process has not
        seen yet is opened if it exists; None if the id cannot be ours."""
        shard = shard_of(job_id)
        if shard is None:
            return None
        broker = self._open.get(shard)
        if broker is None and os.path.exists(shard_path(self.path, shard)):
            broker = self._add_shard(shard)
        return broker

    def _by_shard(self, ids: Iterable[str]) -> dict[SqliteBroker, list[str]]:
        """Ids by open shard, looked up by their prefix ("S-", "S1-"): each
        batch's acks pass here, so no pattern is matched per id (0.2 us an
        id instead of 0.9 for shard 1's)."""
        out: dict[SqliteBroker, list[str]] = {}
        by_prefix = self._by_prefix
        for job_id in ids:
            broker = by_prefix.get(job_id[:job_id.find("-") + 1])
            if broker is None:
                broker = self._shard_of(job_id)  # a shard file not opened yet, or not our id
                if broker is None:
                    continue
            out.setdefault(broker, []).append(job_id)
        return out

    def home(self, role: str = CONSUMER) -> int:
        """This process's home shard for reserving (CONSUMER) or adding (PRODUCER)."""
        return self._homes.home(role)

    def _producer(self) -> SqliteBroker:
        return self._open[self._homes.home(PRODUCER)]

    def _consumer_order(self) -> list[SqliteBroker]:
        """A shard of this consumer's, then every other one in turn after it.
        Its shards are its home and those no live consumer calls home (a dead
        consumer's, or beyond N), taken in turn: their jobs do not wait for
        the home shard to run dry. A shard counts as unowned once its lock
        was free at two looks in a row: a consumer starting beside this one
        has taken its home by the second."""
        now = time.monotonic()
        if now >= self._turns_at or self._turns_pid != os.getpid():
            if self._turns_pid != os.getpid():
                self._free_before = set()
            self._rescan()
            home = self._homes.settle(CONSUMER)
            free = self._homes.unowned(CONSUMER)
            unowned = (free & self._free_before) | {k for k in self._order if k >= self.shards}
            self._free_before = free
            self._turns = [home, *sorted(unowned - {home})]
            self._turns_at = now + RESCAN_INTERVAL
            self._turns_pid = os.getpid()
        self._turn = (self._turn + 1) % len(self._turns)
        start = self._order.index(self._turns[self._turn])
        return [self._open[shard] for shard in self._order[start:] + self._order[:start]]

    # -- producing ---------------------------------------------------------------

    def add(self, queue: str, payload: bytes, *, delay: float = 0, retry: float = DEFAULT_RETRY,
            ttl: float = DEFAULT_TTL) -> str:
        return self._producer().add(queue, payload, delay=delay, retry=retry, ttl=ttl)

    def add_many(self, items: Sequence[NewJob]) -> list[str]:
        return self._producer().add_many(items)

    def replace(self, old_id: str, new: NewJob) -> str:
        """In the old job's shard, atomically; an id not of ours adds at home."""
        return (self._shard_of(old_id) or self._producer()).replace(old_id, new)

    # -- consuming ---------------------------------------------------------------

    def reserve(self, queues: Sequence[str], *, count: int = 1, timeout: float = 1.0,
                ack: Sequence[str] = ()) -> list[Delivery]:
        if count < 1:
            raise BrokerError(f"sqlite broker: reserve count {count!r} must be >= 1")
        deadline = time.monotonic() + timeout
        got = self._lease(queues, count, self._by_shard(ack))
        if got or timeout <= 0:
            return got
        return lease_or_wait(self._waiter, lambda: self._lease(queues, count), self._until_next_due(queues),
                             deadline)

    def _lease(self, queues: Sequence[str], count: int,
               acks: Optional[dict[SqliteBroker, list[str]]] = None) -> list[Delivery]:
        """From the first shard in consumer order that has a job; each
        shard's acks go with its lease, or alone when it is not asked."""
        got: list[Delivery] = []
        acks = acks or {}
        for broker in self._consumer_order():
            mine = acks.get(broker, ())
            if not got:
                got = broker.reserve(queues, count=count, timeout=0, ack=mine)
            elif mine:
                broker.ack(mine)
        return got

    def _until_next_due(self, queues: Sequence[str]) -> Callable[[bool], float]:
        """The wait until the soonest due job over every shard (see ``SqliteBroker``)."""
        def soonest(armed: bool) -> float:
            return min(broker._until_next_due(queues, armed) for broker in self._open.values())
        return soonest

    def ack(self, ids: Iterable[str]) -> None:
        for broker, mine in self._by_shard(ids).items():
            broker.ack(mine)

    def delete(self, ids: Iterable[str]) -> None:
        for broker, mine in self._by_shard(ids).items():
            broker.delete(mine)

    def nack(self, ids: Iterable[str]) -> None:
        for broker, mine in self._by_shard(ids).items():
            broker.nack(mine)

    def extend(self, ids: Sequence[str], seconds: float) -> None:
        for broker, mine in self._by_shard(ids).items():
            broker.extend(mine, seconds)

    def working(self, id: str) -> None:
        broker = self._shard_of(id)
        if broker is not None:
            broker.working(id)

    # -- looking (every shard) -------------------------------------------------------

    def _every(self) -> list[SqliteBroker]:
        self._maybe_rescan()
        return [self._open[shard] for shard in self._order]

    def length(self, queue: str) -> int:
        return sum(broker.length(queue) for broker in self._every())

    def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        per_shard = [broker.stats(queues) for broker in self._every()]
        return [QueueStats(queue=queue, ready=sum(s[i].ready for s in per_shard),
                           delayed=sum(s[i].delayed for s in per_shard),
                           in_flight=sum(s[i].in_flight for s in per_shard))
                for i, queue in enumerate(queues)]

    def backlog(self, queues: Sequence[str], cap: int) -> dict[str, int]:
        total = dict.fromkeys(queues, 0)
        for broker in self._every():
            for queue, ready in broker.backlog(queues, cap).items():
                total[queue] = min(total[queue] + ready, cap)
        return total

    def latency(self, queues: Sequence[str]) -> dict[str, float]:
        """The oldest over the shards: each shard's head waits on its own."""
        oldest = dict.fromkeys(queues, 0.0)
        for broker in self._every():
            for queue, age in broker.latency(queues).items():
                oldest[queue] = max(oldest[queue], age)
        return oldest

    def queues(self) -> list[str]:
        return sorted({queue for broker in self._every() for queue in broker.queues()})

    def peek(self, queue: str, count: int, *, skip: int = 0) -> list[Delivery]:
        """Oldest first across shards (by creation time)."""
        first = max(skip, 0)
        return list(itertools.islice(self.scan(queue, page=max(count, 1)), first, first + max(count, 0)))

    def scan(self, queue: str, page: int = SCAN_PAGE) -> Iterator[Delivery]:
        """Each shard read a page at a time and the pages merged by age: a
        page per shard in memory, and each shard read once."""
        shards = [broker.scan_aged(queue, page) for broker in self._every()]
        return (delivery for _, delivery in heapq.merge(*shards, key=lambda pair: pair[0]))

    def show(self, id: str) -> Optional[dict[str, Any]]:
        broker = self._shard_of(id)
        return None if broker is None else broker.show(id)

    # -- claims and lifecycle -----------------------------------------------------

    def claim(self, key: str, ttl: float) -> bool:
        return self._open[0].claim(key, ttl)

    def add_claimed(self, pairs: Sequence[tuple[str, NewJob]], claim_ttl: float) -> list[Optional[str]]:
        """Claims and their jobs in shard 0, one transaction as on one file."""
        return self._open[0].add_claimed(pairs, claim_ttl)

    def moved(self) -> Optional[str]:
        """Any of the files deleted or replaced under us (Broker.moved): a
        consumer recycles, a producer reopens, and every shard is opened
        afresh. Only the files open here, without the rescan: moved() never
        raises, and a listing fails where a stat does not (EMFILE, the very
        state in which a consumer gives its jobs back: it crashed instead)."""
        for broker in [self._open[shard] for shard in self._order]:
            how = broker.moved()
            if how:
                return how if broker is self._open[0] else f"{broker.path}: {how}"
        return None

    def close(self) -> None:
        self._waiter.disarm()
        for broker in self._open.values():
            broker.close()
        self._wake.close()
        self._homes.close()

