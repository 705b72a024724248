"""A cluster-wide view of Disque jobs, for status, peek and show.

Disque keeps queues per node: a job is *queued* on one node while its copies
on the others are *active*. One node's view would call a job that is ready
elsewhere "leased", so these functions merge what every node holds: a job
queued on any node is ready; an active job still inside its first DELAY is
delayed; any other active job is leased (out with a consumer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import redis

STATE_ACTIVE = "active"
STATE_QUEUED = "queued"
LIVE_STATES = (STATE_QUEUED, STATE_ACTIVE)
SCAN_COUNT = 1000  # JSCAN work per round trip
SHOW_CHUNK = 20  # SHOWs per pipelined round trip: bodies held while they are read
CTIME_PER_SECOND = 1_000_000_000  # Disque's ctime is milliseconds * 1e6

READY, DELAYED, LEASED = "ready", "delayed", "leased"


def text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def pairs(reply: Optional[Sequence[Any]]) -> dict[str, Any]:
    """Disque's flat [key, value, key, value, ...] replies as a dict."""
    if not reply:
        return {}
    return dict(zip(map(text, reply[::2]), reply[1::2]))


@dataclass(frozen=True)
class JobView:
    """One job as the whole cluster knows it."""

    id: str
    queue: str
    body: bytes
    state: str  # READY | DELAYED | LEASED
    nacks: int
    additional_deliveries: int
    created: float  # unix s
    due: float  # unix s it was (or will be) first queued
    ttl: int
    retry: int
    delay: int
    order: int  # Disque's ctime: ms * 1e6, made unique per node; the FIFO order

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "queue": self.queue, "payload": self.body, "state": self.state,
            "nacks": self.nacks, "additional_deliveries": self.additional_deliveries,
            "ctime": self.created, "ttl": self.ttl, "retry": self.retry, "delay": self.delay,
        }


def node_state(job: dict[str, Any], now: float) -> str:
    """The state of one node's copy."""
    if text(job["state"]) == STATE_QUEUED:
        return READY
    created = int(job["ctime"]) / CTIME_PER_SECOND
    return DELAYED if created + int(job["delay"]) > now else LEASED


def merge(copies: Iterable[dict[str, Any]], now: float) -> dict[str, JobView]:
    """Every node's copies (SHOW / JSCAN REPLY all) -> one view per job id.
    Queued anywhere wins; the counters are best effort per node: take the
    highest."""
    views: dict[str, JobView] = {}
    for job in copies:
        if job.get("body") is None or text(job["state"]) not in LIVE_STATES:
            continue
        job_id = text(job["id"])
        state = node_state(job, now)
        created = int(job["ctime"]) / CTIME_PER_SECOND
        seen = views.get(job_id)
        if seen is not None:
            state = READY if READY in (state, seen.state) else seen.state
        views[job_id] = JobView(
            id=job_id, queue=text(job["queue"]), body=bytes(job["body"]), state=state,
            nacks=max(int(job["nacks"]), seen.nacks if seen else 0),
            additional_deliveries=max(int(job["additional-deliveries"]),
                                      seen.additional_deliveries if seen else 0),
            created=created, due=created + int(job["delay"]), ttl=int(job["ttl"]),
            retry=int(job["retry"]), delay=int(job["delay"]), order=int(job["ctime"]),
        )
    return views


def scan(connection: redis.Redis, queue: Optional[str] = None, *, bodies: bool = True) -> list[dict[str, Any]]:
    """Every live job one node holds (of ``queue``, or of all queues).
    Without ``bodies`` each is dropped as its reply is read, a few jobs per
    round trip: what a walk of a large queue keeps of every job."""
    args: list[Any] = ["COUNT", SCAN_COUNT if bodies else SHOW_CHUNK]
    if queue is not None:
        args += ["QUEUE", queue]
    for state in LIVE_STATES:
        args += ["STATE", state]
    args += ["REPLY", "all"]
    cursor, jobs = 0, []
    while True:
        reply = connection.execute_command("JSCAN", cursor, *args)
        cursor = int(reply[0])
        for item in reply[1]:
            job = pairs(item)
            if not bodies and job.get("body") is not None:
                job["body"] = b""
            jobs.append(job)
        if cursor == 0:
            return jobs


def show_many(connection: redis.Redis, ids: Sequence[str]) -> list[dict[str, Any]]:
    """One node's copies of ``ids`` (SHOW each, one pipelined round trip);
    the jobs it does not hold are left out."""
    pipe = connection.pipeline(transaction=False)
    for job_id in ids:
        pipe.execute_command("SHOW", job_id)
    return [pairs(reply) for reply in pipe.execute() if reply]

