"""The broker interface: Disque's semantics, implemented by every engine.

A job is added to a queue, optionally delayed. ``reserve`` leases it to one
consumer for the job's ``retry`` seconds; if it is not acked by then it is
delivered again with ``additional_deliveries`` + 1. ``nack`` puts it back at
once with ``nacks`` + 1. A job older than its ``ttl`` is dropped, acked or not.
Delivery is at least once.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, TypeVar

from disqontrol_client.errors import BrokerError, BrokerUnavailable, ClaimedNotAdded

DEFAULT_RETRY = 600  # s: lease of a reserved job (Disque RETRY)
DEFAULT_TTL = 2592000  # s: 30 days (Disque TTL)
MAX_TTL = 3932100  # s: about 45 days, Disque's maximum
SCAN_PAGE = 20  # jobs per call of ``scan``: 20 jobs of 100 KiB are 2 MiB

T = TypeVar("T")


@dataclass(frozen=True)
class NewJob:
    """One job to add: the arguments of ``Broker.add`` as a value."""

    queue: str
    payload: bytes
    delay: float = 0
    retry: float = DEFAULT_RETRY
    ttl: float = DEFAULT_TTL


class Delivery(NamedTuple):
    """A job as handed out by the broker. A named tuple rather than a frozen
    dataclass: consumers build one per job, and a tuple costs half as much
    (0.4 vs 0.9 us; a batch of 10 sqlite leases is ~100 us in all)."""

    id: str
    queue: str
    payload: bytes
    nacks: int = 0
    additional_deliveries: int = 0
    #: s this delivery is leased for (the job's ``retry``, as its producer
    #: set it; inf: never redelivered); 0: the engine does not say (Disque).
    #: A consumer extends a lease shorter than its queue's run (``extend``).
    lease: float = 0.0


@dataclass(frozen=True)
class QueueStats:
    """What ``disqontrolctl status`` shows of one queue."""

    queue: str
    ready: int
    delayed: int
    in_flight: int


class Broker(abc.ABC):
    """One connection to a job store. Not shared across processes: open a new
    one after fork. Methods raise ``BrokerUnavailable`` when the store cannot
    be reached and ``BrokerError`` when it refuses an operation."""

    #: URL scheme(s) this engine serves, e.g. ("sqlite",)
    schemes: tuple[str, ...] = ()
    #: True when ``add_claimed`` takes each claim and adds its job in one
    #: transaction (a crash leaves both or neither); False: claim, then add.
    atomic_claims: bool = False
    #: True when the store's data carries a layout version that a release
    #: checks (at open or first call, then once a second; Disque's jobs are
    #: the server's own: nothing to version)
    versioned_data: bool = False

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, **options: Any) -> "Broker":
        """Connect to the store named by ``url`` (options: engine specific)."""

    @abc.abstractmethod
    def add(
        self,
        queue: str,
        payload: bytes,
        *,
        delay: float = 0,
        retry: float = DEFAULT_RETRY,
        ttl: float = DEFAULT_TTL,
    ) -> str:
        """Store a job; it becomes ready after ``delay`` seconds. Returns its id."""

    def add_many(self, items: Sequence[NewJob]) -> list[str]:
        """Store several jobs in one round trip where the engine allows it.
        Returns their ids in the same order."""
        return [
            self.add(i.queue, i.payload, delay=i.delay, retry=i.retry, ttl=i.ttl)
            for i in items
        ]

    @abc.abstractmethod
    def reserve(
        self, queues: Sequence[str], *, count: int = 1, timeout: float = 1.0, ack: Sequence[str] = ()
    ) -> list[Delivery]:
        """Lease up to ``count`` ready jobs, taking from the queues in the order
        given (all of the first queue's ready jobs before the second's).

        Blocks for at most ``timeout`` seconds when none is ready and returns
        ``[]`` then; ``timeout=0`` does not block. Must wake within milliseconds
        of an add from any process, without busy-polling.

        ``ack``: ids of finished jobs to ack first, as ``ack(ack)`` would: a
        consumer folds the ack of its last batch into the next reserve, one
        transaction / round trip per batch instead of two where the engine can
        (an engine that cannot calls ``self.ack(ack)`` first). The acks are committed
        before the call leases or blocks, so they hold even when it returns
        ``[]`` or raises while waiting."""

    @abc.abstractmethod
    def ack(self, ids: Iterable[str]) -> None:
        """The jobs are done: remove them. Idempotent; unknown ids are ignored."""

    @abc.abstractmethod
    def nack(self, ids: Iterable[str]) -> None:
        """Put leased jobs back to ready now, ``nacks`` + 1 each."""

    @abc.abstractmethod
    def working(self, id: str) -> None:
        """Extend a leased job's lease by its ``retry`` seconds from now."""

    def extend(self, ids: Sequence[str], seconds: float) -> None:
        """Lease the leased jobs among ``ids`` until ``seconds`` from now at
        least (a lease already longer is kept), in one call where the engine
        can: a consumer's lease must cover the run its queue allows, whatever
        ``retry`` the producer chose. Ids not leased (acked, lapsed) are
        ignored. This default (Disque) can only postpone each job by its own
        ``retry`` (``working``), once."""
        for job_id in ids:
            try:
                self.working(job_id)
            except BrokerUnavailable:
                raise
            except BrokerError:
                continue  # not leased (acked, lapsed): ignored, as documented

    def replace(self, old_id: str, new: NewJob) -> str:
        """Add ``new`` then ack ``old_id`` (a retry or a move to the failure
        queue). Add first, ack second: a crash in between duplicates a job,
        never loses it. Engines that can do both atomically should."""
        new_id = self.add(new.queue, new.payload, delay=new.delay, retry=new.retry, ttl=new.ttl)
        self.ack([old_id])
        return new_id

    @abc.abstractmethod
    def length(self, queue: str) -> int:
        """Jobs of the queue that are ready or delayed (not leased)."""

    @abc.abstractmethod
    def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        """Ready / delayed / in-flight counts per queue."""

    @abc.abstractmethod
    def latency(self, queues: Sequence[str]) -> dict[str, float]:
        """Per queue, the seconds its oldest ready job (the one at its head,
        which ``reserve`` hands out next) has waited since it became ready:
        its add, the end of its delay (a retry's backoff), its lapsed lease
        or its ``nack``; 0.0 when none is ready. Sidekiq's queue latency:
        the number that says the consumers do not keep up. Cheap (an index
        look-up or a few commands per queue, never a walk of the queue):
        ``disqontrolctl metrics`` asks it for every queue."""

    def backlog(self, queues: Sequence[str], cap: int) -> dict[str, int]:
        """Ready jobs per queue, each counted up to ``cap`` (``cap`` means "at
        least cap"): what a once-a-second loop (the autoscaler, in the master)
        may ask without its cost growing with the queue. Engines whose
        ``stats`` costs O(jobs) override this."""
        return {s.queue: min(s.ready, cap) for s in self.stats(queues)}

    @abc.abstractmethod
    def queues(self) -> list[str]:
        """Names of the queues that hold at least one job, sorted."""

    @abc.abstractmethod
    def peek(self, queue: str, count: int, *, skip: int = 0) -> list[Delivery]:
        """Up to ``count`` ready-or-delayed jobs of the queue, oldest first,
        without leasing them, after the first ``skip`` of that order: a page,
        so that a caller walking a long queue (``disqontrolctl failed``)
        holds one page of payloads at a time, not the whole queue."""

    def scan(self, queue: str, page: int = SCAN_PAGE) -> Iterator[Delivery]:
        """Every job ``peek`` would give, in its order, read ``page`` jobs per
        call: walking a failure queue of 20,000 large jobs holds a page of
        them. A job added or removed meanwhile may be missed or seen twice,
        so a caller that removes jobs lists their ids first."""
        return paged(lambda skip: self.peek(queue, page, skip=skip), page)

    @abc.abstractmethod
    def show(self, id: str) -> Optional[dict[str, Any]]:
        """Everything the broker knows of one job (``id``, ``queue``,
        ``payload``, ``state`` in ready|delayed|leased, ``nacks``,
        ``additional_deliveries``, ``ctime``, ...), or None if unknown."""

    @abc.abstractmethod
    def delete(self, ids: Iterable[str]) -> None:
        """Remove jobs whatever their state. Idempotent."""

    def claim(self, key: str, ttl: float) -> bool:
        """Take a named one-time claim for ``ttl`` seconds: True for the first
        caller, False for every later one until it expires. The scheduler
        uses it so that a cron minute fires once across schedulers."""
        raise NotImplementedError(f"{type(self).__name__} has no claim()")

    def add_claimed(self, pairs: Sequence[tuple[str, NewJob]], claim_ttl: float) -> list[Optional[str]]:
        """For each ``(claim key, job)``: take the claim for ``claim_ttl``
        seconds and add the job, in one round trip for all pairs where the
        engine allows it. Returns the new job id where this caller won the
        claim, None where it was already taken (nothing added then).

        The scheduler's exactly once per cron minute rests on this. An engine
        with ``atomic_claims`` commits each claim with its job, so a crash
        leaves both or neither. This default claims, then adds (see
        ``claim_then_add``): a crash in between loses those jobs."""
        return claim_then_add(self, self, pairs, claim_ttl)

    #: s between two looks at ``moved()`` by a long-lived user (a consumer, a producer).
    MOVED_CHECK_INTERVAL = 1.0

    def check_data(self) -> None:
        """Raise ``BrokerDataError`` when the store holds data this release
        cannot read (written by a newer disqontrol), upgrading older data on
        the way; ``BrokerUnavailable`` when it cannot be reached. Engines that
        check when they open (sqlite) have nothing left to do here."""

    def moved(self) -> Optional[str]:
        """Why the store this connection works on is no longer the one its URL
        names (a sqlite file deleted or replaced under it), else None. A
        consumer asks when idle and leaves (recycled): its successor opens
        what the URL names now, while the jobs in hand were acked on the
        store they came from; a Producer that opened its broker reopens it.
        Engines reached over the network never move."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection. Idempotent."""

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def claim_then_add(
    claims: Any, jobs: Any, pairs: Sequence[tuple[str, NewJob]], claim_ttl: float
) -> list[Optional[str]]:
    """``add_claimed`` over two calls, possibly two stores (the scheduler's
    ``claim_store``): claims first, then one ``add_many`` of the won jobs.
    At most once: if the add fails the claimed jobs are lost, and
    ``ClaimedNotAdded`` names their claims. (``claims`` and ``jobs`` are
    Brokers, or anything with their ``claim`` / ``add_many``.)"""
    won: list[bool] = []
    try:
        for key, _ in pairs:
            won.append(claims.claim(key, claim_ttl))
        jobs_won = [job for (_, job), taken in zip(pairs, won) if taken]
        ids = iter(jobs.add_many(jobs_won) if jobs_won else [])
    except (BrokerUnavailable, BrokerError) as error:
        keys = [key for (key, _), taken in zip(pairs, won) if taken]
        if not keys:
            raise
        raise ClaimedNotAdded(
            f"{len(keys)} claim(s) taken but their jobs not added, so lost: {error}", keys
        ) from error
    return [next(ids) if taken else None for taken in won]


def paged(fetch: Callable[[int], Sequence[T]], page: int) -> Iterator[T]:
    """The items of ``fetch(skip)`` pages (``page`` items each, fewer at
    the end), one after the other."""
    skip = 0
    while True:
        batch = fetch(skip)
        yield from batch
        if len(batch) < page:
            return
        skip += len(batch)
