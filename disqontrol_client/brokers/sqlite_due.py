"""Which of a consumer's queues have a job due: asked of the sqlite file in
one statement for all of them, and remembered while nothing can have
changed, so an idle consumer of many queues costs what one of one queue does.

Per-tenant queues run to thousands in one group. Asking queue by queue
(a lease attempt and a next-due query each, several times a second) made an
idle consumer of 10,000 queues run 40,000 statements a second, a third of a
core. Here one statement (``PROBE``) walks the group's names (``json_each``)
and looks up each one's soonest job in the (queue, due) index, in C; a
consumer then leases from the queues it found due only. When it found none,
the answer holds until the soonest due time it saw (a delayed job, a lease
expiry) or until another connection commits, which ``PRAGMA data_version``
tells for the price of one statement; a commit of this connection that could
make a job due sooner (an add, a nack, a lease) ``forget``s it. Another
process's add also wakes the waiting consumer (``sqlite_wake``), which then
sees the new data version and asks again.
"""
from __future__ import annotations

import json
import math
import sqlite3
from typing import Optional, Sequence

# One row per queue holding a live job: (its position in the names, its soonest due time).
PROBE = (
    "SELECT q.key, j.due FROM json_each(?2) AS q JOIN jobs AS j ON j.id ="
    " (SELECT id FROM jobs WHERE queue = q.value AND expires > ?1 ORDER BY due LIMIT 1)"
)
DATA_VERSION = "PRAGMA data_version"  # changes when another connection commits
# Up to this many queues a lease just tries each in turn (at most this many
# statements, in the write transaction a lease holds anyway); past it, the
# PROBE's one statement first picks the queues that have a job due.
DIRECT_QUEUES = 4


class DueQueues:
    """One connection's last answer to "is any job of these queues due?"."""

    def __init__(self) -> None:
        self._names: tuple[str, ...] = ()
        self._names_json = "[]"
        self._db: Optional[sqlite3.Connection] = None  # whose data version it is (a forked child opens its own)
        self._version: Optional[int] = None  # data version when none was due; None = nothing known
        self._until = 0.0  # the soonest due time then (time.time()), inf if none
        self._forgotten = 0  # forget() calls so far: a probe keeps its answer only if none came during it

    def forget(self) -> None:
        """This connection committed a change that may make a job due sooner.
        The count first: a probe running in another thread then sees it."""
        self._forgotten += 1
        self._version = None

    def quiet(self, db: sqlite3.Connection, queues: Sequence[str], now: float) -> bool:
        """True while no job of ``queues`` can be due: none was at the last
        probe, no other connection committed since, and the soonest due time
        then seen is still ahead. One statement, whatever the queue count.
        Data versions of two connections do not compare: after a fork the
        child's new connection started at its parent's number, and the
        child took the parent's "nothing due" for its own."""
        if self._version is None:
            return False
        if (db is not self._db or now >= self._until or tuple(queues) != self._names
                or db.execute(DATA_VERSION).fetchone()[0] != self._version):
            self._version = None  # stale: its soonest due time must not be waited for either
            return False
        return True

    def probe(self, db: sqlite3.Connection, queues: Sequence[str], now: float) -> list[str]:
        """The ``queues`` with a job due at ``now``, in their given order
        (their priority); when none is, remember so until the soonest due
        time or another connection's commit."""
        forgotten = self._forgotten
        version = db.execute(DATA_VERSION).fetchone()[0]  # before the probe: a commit between is seen next time
        names = tuple(queues)
        if names != self._names:
            self._names, self._names_json = names, json.dumps(names)
        heads = sorted(db.execute(PROBE, (now, self._names_json)))
        ready = [names[n] for n, due in heads if due <= now]
        if ready:
            self._version = None
        else:
            self._db, self._until = db, min((due for _, due in heads), default=math.inf)
            self._version = version
            if self._forgotten != forgotten:
                # Another thread on this connection (a shared producer) committed an add
                # meanwhile: it left the data version as it was, so only this tells of it.
                self._version = None
        return ready

    def seconds_left(self, queues: Sequence[str], now: float) -> Optional[float]:
        """Seconds until a job of ``queues`` falls due, as the last probe
        found it; None when nothing is known (probe first)."""
        if self._version is None or tuple(queues) != self._names:
            return None
        return max(self._until - now, 0.0)
