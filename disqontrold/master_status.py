"""What ``disqontrolctl status`` shows of the master: its own state, each
consumer's scoreboard, the slots waiting to restart and each group's
process counts. Kept apart from the master's loop: it only reads."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from disqontrol_client.logfmt import redact_url
from disqontrold.queue_tally import total
from disqontrold.held_status import consumer_held, consumer_paused, held_queues, paused_queues

if TYPE_CHECKING:
    from disqontrold.master import Master
    from disqontrold.slots import Slot

#: Decimal places of the ages and uptimes in the reply (milliseconds).
AGE_DIGITS = 3


def master_status(master: Master) -> dict[str, Any]:
    """The status reply of the master and its consumers (broker password hidden)."""
    now = time.monotonic()
    consumers = [_consumer_status(pid, slot, now) for pid, slot in sorted(master.children.items())]
    return {
        "master": {
            "pid": master.pid,
            "uptime": round(now - master.started, AGE_DIGITS),
            "config": str(master.config_path) if master.config_path else None,
            "generation": master.generation,
            "broker": redact_url(master.config.broker),
            "stopping": master.stopping,
        },
        "consumers": consumers,
        "held": held_queues(consumers),
        "paused": paused_queues(consumers),
        "restarting": [{"group": s.group.name, "state": "restarting",
                        "in": round(max(0.0, s.next_start - now), AGE_DIGITS), "restarts": s.restarts}
                       for s in master.slots if s.pid is None],
        "groups": groups_status(master),
        "queue_jobs": queue_jobs(master),
    }


def _consumer_status(pid: int, slot: Slot, now: float) -> dict[str, Any]:
    """One live consumer: its scoreboard plus the counts of its predecessors in the slot."""
    snap = slot.scoreboard.read() if slot.scoreboard is not None else None
    busy = snap is not None and snap.state == "busy"
    setting_up = snap is not None and snap.state == "setting_up"
    return {
        "pid": pid,
        "group": slot.group.name,
        "queues": list(slot.group.queues),
        "generation": slot.generation,
        "state": "retiring" if slot.retiring else (snap.state if snap else "starting"),
        "job": snap.job if busy else None,
        "job_age": round(now - snap.since, AGE_DIGITS) if busy else None,
        "job_pids": slot.scoreboard.job_pids() if slot.scoreboard is not None else [],  # command / isolated jobs
        "heartbeat_age": round(now - snap.heartbeat, AGE_DIGITS) if snap else None,
        # queues whose worker's setup raised; while one is built in the process: which, for how long
        "held": consumer_held(slot.scoreboard.held(), now) if slot.scoreboard is not None else [],
        # queues whose jobs could not start (no process, memory or descriptor; the program missing)
        "paused": consumer_paused(slot.scoreboard.paused(), now) if slot.scoreboard is not None else [],
        "setting_up": snap.job if setting_up else None,
        "setting_up_for": round(now - snap.since, AGE_DIGITS) if setting_up else None,
        "done": slot.done_before + (snap.done if snap else 0),
        "failed": slot.failed_before + (snap.failed if snap else 0),
        "restarts": slot.restarts,
        "uptime": round(now - slot.started_at, AGE_DIGITS),
    }


def queue_jobs(master: Master) -> dict[str, Any]:
    """Per queue, the jobs done, retried and parked and their durations
    since the master started: retired slots', earlier processes' of each
    slot, and the live ones' (so the counters never go down while it runs)."""
    slots = [*master.children.values(), *(slot for slot in master.slots if slot.pid is None)]
    return total([
        master.retired_queue_totals.by_queue,
        *(slot.queues_before.by_queue for slot in slots),
        *(slot.scoreboard.queue_cells.read() for slot in master.children.values() if slot.scoreboard is not None),
    ]).reply()


def groups_status(master: Master) -> list[dict[str, Any]]:
    """Each group's process count, bounds, last scaling decision, and its
    jobs done / failed and restarts since the master started (retired
    slots included, so the totals never go down while the master runs)."""
    live = [slot.group.name for slot in master.children.values() if not slot.retiring]
    totals: dict[str, list[int]] = {name: list(counts) for name, counts in master.retired_totals.items()}
    waiting = [slot for slot in master.slots if slot.pid is None]
    for slot in [*master.children.values(), *waiting]:
        snap = slot.scoreboard.read() if slot.scoreboard is not None else None
        counts = totals.setdefault(slot.group.name, [0, 0, 0])
        counts[0] += slot.done_before + (snap.done if snap else 0)
        counts[1] += slot.failed_before + (snap.failed if snap else 0)
        counts[2] += slot.restarts
    return [{
        "group": group.name,
        "processes": live.count(group.name),
        "target": master.targets.get(group.name, group.min_processes),
        "min": group.min_processes,
        "max": group.max_processes,
        "autoscale": group.autoscale,
        "last_scaling": master.scaled.get(group.name),
        **dict(zip(("done", "failed", "restarts"), totals.get(group.name, [0, 0, 0]))),
    } for group in master.config.consumers]
