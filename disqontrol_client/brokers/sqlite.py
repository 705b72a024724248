"""The embedded broker: one SQLite file, no server to run.

One ``jobs`` row per job. ``leased`` and ``due`` make its state: a waiting
row (leased=0) is delayed until ``due`` then ready; a leased row (leased=1)
belongs to a consumer until ``due``, its lease expiry, after which it is ready
again and its next delivery counts as an additional one. A delay and a lease
never share a row state (kombu #337). Leasing is ``UPDATE ... RETURNING``
over the (queue, due) index, one write statement (or one ``BEGIN IMMEDIATE``
transaction when several queues are read), so two consumers never get the
same job.
WAL + ``synchronous=NORMAL``: a commit does not fsync; a power cut may lose
the last commits, a crash of any process loses nothing.

Blocking ``reserve`` sleeps on a unix datagram socket that producers poke
after each commit (see ``sqlite_wake``), or until the earliest delayed job or
lease expiry of its queues is due: it never polls the disk.

Every process opens its own connection, lazily and again after a fork; a
busy database is waited for and retried (see ``sqlite_store``).
"""
from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from disqontrol_client.brokers.broker import (
    DEFAULT_RETRY,
    DEFAULT_TTL,
    MAX_TTL,
    Broker,
    Delivery,
    NewJob,
)
from disqontrol_client.brokers.sqlite_due import DIRECT_QUEUES, DueQueues
from disqontrol_client.brokers.sqlite_looking import SqliteLooking, guarded
from disqontrol_client.brokers.sqlite_store import (  # the SQL lives beside the schema
    BUSY_TIMEOUT, CHUNK, DELETE_IDS, DROP_EXPIRED_CLAIMS, EXTEND_IDS, INSERT, LEASE_MANY, LEASE_ONE, TAKE_CLAIM, Store,
    by_ids, delete_then_lease, with_ids,
)
from disqontrol_client.brokers.sqlite_wake import Waiter, WakeDir, lease_or_wait
from disqontrol_client.errors import BrokerError, ConfigError

SCHEME = "sqlite"
URL_PREFIX = "sqlite://"
SWEEP_INTERVAL = 1.0  # s between two steps of the ttl sweep
SWEEP_ROWS = 10000  # rowids looked at per step: bounds the time the write lock is held
MAX_SLEEP = 2.0  # s: a waiter re-checks at least this often (lost-wakeup safety net)
POLL_INTERVAL = 0.05  # s: only when the wake directory is unusable
ID_PREFIX = "S-"  # shard 0's (and the one-file engine's); shard k's is S<k>- (sqlite_shards)
SHARDS_OPTION = "shards"
MAX_SHARDS = 16


def parse_url(url: str) -> tuple[str, int]:
    """The file and the shard count of ``sqlite:///path[?shards=N]`` (1
    without the option). Any other option is refused, not taken into the
    file name (``jobs.db?x=1`` would be a new, empty database)."""
    if not url.startswith(URL_PREFIX) or len(url) == len(URL_PREFIX):
        raise ConfigError(f"disqontrol.broker: {url!r} is not sqlite:///path/to/file.db")
    path, _, query = url[len(URL_PREFIX):].partition("?")
    shards = 1
    seen: set[str] = set()
    for option in query.split("&") if query else ():
        name, _, value = option.partition("=")
        if name != SHARDS_OPTION:
            raise ConfigError(f"disqontrol.broker: {url!r} has an unknown option {name!r}; a sqlite URL takes "
                              f"only {SHARDS_OPTION}=N (N from 1 to {MAX_SHARDS})")
        if name in seen:
            raise ConfigError(f"disqontrol.broker: {url!r} gives {SHARDS_OPTION} twice; give it once")
        seen.add(name)
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_SHARDS):
            raise ConfigError(f"disqontrol.broker: {url!r} has {SHARDS_OPTION}={value!r}; allowed: a whole "
                              f"number from 1 to {MAX_SHARDS}")
        shards = int(value)
    return path, shards


def path_from_url(url: str) -> str:
    """The file of a sqlite URL (shard 0's), its options checked."""
    return parse_url(url)[0]


def _rowids(ids: Iterable[str], prefix: str = ID_PREFIX) -> list[int]:
    """Row ids of our job ids; ids that are not ours cannot exist here."""
    n = len(prefix)
    return [int(i[n:]) for i in ids if i[:n] == prefix and i[n:].isdigit()]


def _check_job(queue: str, delay: float, retry: float, ttl: float) -> None:
    if not queue or not isinstance(queue, str):
        raise BrokerError(f"sqlite broker: queue name {queue!r} must be a non-empty string")
    if delay < 0:
        raise BrokerError(f"sqlite broker: delay {delay!r} must be >= 0 seconds")
    if retry < 0:
        raise BrokerError(f"sqlite broker: retry {retry!r} must be >= 0 seconds")
    if not 0 < ttl <= MAX_TTL:
        raise BrokerError(f"sqlite broker: ttl {ttl!r} must be in (0, {MAX_TTL}] seconds")


def _row(job: NewJob, now: float) -> tuple:
    """The INSERT parameters of a checked job added at ``now``."""
    _check_job(job.queue, job.delay, job.retry, job.ttl)
    return (job.queue, job.payload, now + job.delay, job.retry, now + job.ttl, now)


class SqliteBroker(SqliteLooking, Broker):
    """Jobs in one SQLite file shared by every process of the machine."""

    schemes = (SCHEME,)
    atomic_claims = True

    def __init__(self, path: str, *, busy_timeout: float = BUSY_TIMEOUT, id_prefix: str = ID_PREFIX,
                 wake: Optional[WakeDir] = None) -> None:
        """``id_prefix`` and ``wake``: a shard of a sharded database (see
        ``sqlite_shards``) has ids of its own and shares shard 0's wake
        directory, so one waiter hears an add to any shard."""
        self.path = path
        self.id_prefix = id_prefix
        self._store = Store(path, busy_timeout)
        self._conn = self._store.conn
        self._exclusive = self._store.exclusive
        self._write = self._store.write
        self._wake = wake if wake is not None else WakeDir(path)
        self._waiter = Waiter(self._wake)
        self._due = DueQueues()  # what the last look found due, while nothing changed
        self._last_sweep = 0.0
        self._sweep_from = 0  # rowid where the next ttl sweep step starts
        #: called after each ttl sweep step (each second while reserving):
        #: the sharded engine looks for new shard files there
        self.on_sweep: Optional[Callable[[], None]] = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "SqliteBroker":
        """The file of the URL alone (shard 0 of a sharded database).
        ``open_broker`` opens sqlite URLs through ``sqlite_shards``, which
        also serves shard files."""
        broker = cls(path_from_url(url), **options)
        broker._conn()  # fail now, with a clear message, if the file is unusable
        return broker

    def _made_due(self) -> None:
        """After a commit that may have made a job due sooner (an add, a
        nack): our own commits leave ``PRAGMA data_version`` as it was, so
        ``DueQueues`` is told here; other processes are woken."""
        self._due.forget()
        self._wake.notify()

    def _id(self, rowid: int) -> str:
        return f"{self.id_prefix}{rowid}"

    def own_rowids(self, ids: Iterable[str]) -> list[int]:
        """Row ids of the ``ids`` of this file; other ids cannot exist here."""
        return _rowids(ids, self.id_prefix)

    # -- producing -----------------------------------------------------------

    @guarded
    def add(
        self,
        queue: str,
        payload: bytes,
        *,
        delay: float = 0,
        retry: float = DEFAULT_RETRY,
        ttl: float = DEFAULT_TTL,
    ) -> str:
        _check_job(queue, delay, retry, ttl)
        now = time.time()
        db = self._conn()
        row = (queue, payload, now + delay, retry, now + ttl, now)
        rowid = self._exclusive(lambda: db.execute(INSERT, row).lastrowid)
        self._made_due()
        return self._id(rowid)  # type: ignore[arg-type]

    @guarded
    def add_many(self, items: Sequence[NewJob]) -> list[str]:
        if not items:
            return []
        now = time.time()
        rows = [_row(i, now) for i in items]

        def insert(db: sqlite3.Connection) -> int:
            db.executemany(INSERT, rows)
            return db.execute("SELECT last_insert_rowid()").fetchone()[0]

        # AUTOINCREMENT under the write lock: the batch got consecutive ids.
        last = self._write(insert)
        self._made_due()
        return [self._id(r) for r in range(last - len(rows) + 1, last + 1)]

    @guarded
    def replace(self, old_id: str, new: NewJob) -> str:
        row = _row(new, time.time())
        old = self.own_rowids([old_id])

        def swap(db: sqlite3.Connection) -> int:
            rowid = db.execute(INSERT, row).lastrowid
            if old:
                db.execute("DELETE FROM jobs WHERE id = ?", old)
            return rowid  # type: ignore[return-value]

        new_id = self._id(self._write(swap))
        self._made_due()
        return new_id

    # -- consuming -----------------------------------------------------------

    @guarded
    def reserve(
        self, queues: Sequence[str], *, count: int = 1, timeout: float = 1.0, ack: Sequence[str] = ()
    ) -> list[Delivery]:
        """The acks and the first lease attempt are one transaction: the acks
        are committed before any wait."""
        if count < 1:
            raise BrokerError(f"sqlite broker: reserve count {count!r} must be >= 1")
        deadline = time.monotonic() + timeout
        got = self._lease(queues, count, self.own_rowids(ack))
        if got or timeout <= 0:
            return got
        return lease_or_wait(self._waiter, lambda: self._lease(queues, count),
                             lambda armed: self._until_next_due(queues, armed), deadline)

    def _lease(self, queues: Sequence[str], count: int, acked: Sequence[int] = ()) -> list[Delivery]:
        """Delete the ``acked`` rows and lease up to ``count`` due jobs, in
        one transaction. Nothing is leased, and no write lock taken, while
        ``DueQueues`` knows none of ``queues`` has a job due. One queue,
        nothing to ack: a single autocommit write statement: sqlite takes
        the write lock before its subquery reads, so the read and the write
        are one transaction. Many queues: only those the probe found due
        are tried, in their order."""
        db = self._conn()
        now = time.time()
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self._write(lambda db: self._sweep(db, now))
            if self.on_sweep is not None:
                self.on_sweep()
        if self._due.quiet(db, queues, now):
            return self._ack_only(acked)
        if len(queues) > DIRECT_QUEUES:
            queues = self._due.probe(db, queues, now)
            if not queues:
                return self._ack_only(acked)
        if len(queues) == 1 and not acked:
            sql = LEASE_ONE if count == 1 else LEASE_MANY
            rows = self._exclusive(lambda: db.execute(sql, (now, queues[0], count)).fetchall())
            got = self._deliveries(queues[0], rows)
        else:
            per_queue = self._write(lambda db: delete_then_lease(db, acked, now, queues, count))
            got = [d for queue, rows in per_queue for d in self._deliveries(queue, rows)]
        if got:
            self._due.forget()  # leased rows fall due again at their lease's end
        return got

    def _ack_only(self, acked: Sequence[int]) -> list[Delivery]:
        """Nothing is due: delete the ``acked`` rows alone, before any wait."""
        if acked:
            self._write(lambda db: by_ids(db, DELETE_IDS, (), acked))
        return []

    def _deliveries(self, queue: str, rows: list) -> list[Delivery]:
        if len(rows) > 1:
            rows.sort()  # RETURNING order is unspecified; ids follow insertion
        prefix = self.id_prefix
        return [Delivery(f"{prefix}{r[0]}", queue, r[1], r[2], r[3], r[4]) for r in rows]

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Delete the jobs past their ttl in the next window of rowids.

        Queries already hide such jobs; this only frees their space. A window
        at a time (no index on ``expires``: it would slow every add and ack),
        oldest rows first, which are the ones that expire first."""
        start = self._sweep_from
        end = start + SWEEP_ROWS
        db.execute("DELETE FROM jobs WHERE id >= ? AND id < ? AND expires <= ?", (start, end, now))
        top = db.execute("SELECT max(id) FROM jobs").fetchone()[0]
        self._sweep_from = end if top is not None and end <= top else 0
        self._last_sweep = now

    def _until_next_due(self, queues: Sequence[str], armed: bool) -> float:
        """Seconds until a delayed job or a lease of ``queues`` falls due
        (as the lease just before found it, else asked now)."""
        now = time.time()
        limit = MAX_SLEEP if armed else POLL_INTERVAL
        left = self._due.seconds_left(queues, now)
        if left is None:
            left = 0.0 if self._due.probe(self._conn(), queues, now) else self._due.seconds_left(queues, now)
        return min(limit, left if left is not None else 0.0)

    @guarded
    def ack(self, ids: Iterable[str]) -> None:
        self._by_ids(DELETE_IDS, (), ids)

    @guarded
    def delete(self, ids: Iterable[str]) -> None:
        self._by_ids(DELETE_IDS, (), ids)

    @guarded
    def nack(self, ids: Iterable[str]) -> None:
        if self._by_ids("UPDATE jobs SET leased = 0, due = ?, nacks = nacks + 1 WHERE id IN ({})",
                        (time.time(),), ids):
            self._made_due()

    def _by_ids(self, sql: str, head: tuple, ids: Iterable[str]) -> int:
        """Run ``sql`` over ``ids`` in one transaction; rows changed."""
        rowids = self.own_rowids(ids)
        if not rowids:
            return 0
        db = self._conn()
        if len(rowids) <= CHUNK:
            statement = with_ids(sql, len(rowids))
            return self._exclusive(lambda: db.execute(statement, (*head, *rowids)).rowcount)
        return self._write(lambda db: by_ids(db, sql, head, rowids))

    @guarded
    def working(self, id: str) -> None:
        rowids = self.own_rowids([id])
        if rowids:
            db = self._conn()
            self._exclusive(lambda: db.execute(
                "UPDATE jobs SET due = ? + retry WHERE id = ? AND leased = 1", (time.time(), rowids[0])
            ))

    @guarded
    def extend(self, ids: Sequence[str], seconds: float) -> None:
        self._by_ids(EXTEND_IDS, (time.time() + seconds,), ids)

    # -- claims and lifecycle -----------------------------------------------

    @guarded
    def claim(self, key: str, ttl: float) -> bool:
        now = time.time()

        def take(db: sqlite3.Connection) -> bool:
            db.execute(DROP_EXPIRED_CLAIMS, (now,))
            return db.execute(TAKE_CLAIM, (key, now + ttl)).rowcount == 1

        return self._write(take)

    @guarded
    def add_claimed(self, pairs: Sequence[tuple[str, NewJob]], claim_ttl: float) -> list[Optional[str]]:
        """Every claim and the jobs of those won in one ``BEGIN IMMEDIATE``
        transaction: a crash commits both or neither."""
        if not pairs:
            return []
        now = time.time()
        rows = [_row(job, now) for _, job in pairs]

        def take_and_add(db: sqlite3.Connection) -> list[Optional[str]]:
            db.execute(DROP_EXPIRED_CLAIMS, (now,))
            return [
                self._id(db.execute(INSERT, row).lastrowid)  # type: ignore[arg-type]
                if db.execute(TAKE_CLAIM, (key, now + claim_ttl)).rowcount == 1 else None
                for (key, _), row in zip(pairs, rows)
            ]

        ids = self._write(take_and_add)
        if any(ids):
            self._made_due()
        return ids

    def moved(self) -> Optional[str]:
        return self._store.moved()

    def close(self) -> None:
        self._waiter.disarm()
        self._wake.close()
        self._store.close()
