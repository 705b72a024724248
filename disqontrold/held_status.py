"""Held queues (their worker's setup raises: held_queues.py) and paused
queues (their jobs cannot start: no process, memory or descriptor left, or
the program missing: paused_queues.py) as the master sees them in its
consumers' scoreboards: for ``disqontrolctl status`` and metrics (an
operator whose queue is held or paused otherwise saw only a growing backlog)
and for the autoscaler (their backlog is work no process of the group can do
now: more processes would only fail the same setup, or take more of the
processes the machine has run out of)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

#: Characters of a setup error shown in status (the log has all of it).
ERROR_CHARS = 200
AGE_DIGITS = 3
#: Consumer states whose scoreboard says nothing of held queues yet.
NOT_BUILT = ("starting",)


def one_line(error: str, limit: int = ERROR_CHARS) -> str:
    """An error message on one line, cut at ``limit`` characters."""
    text = " ".join(error.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _age(moment: Optional[float], now: float, future: bool) -> Optional[float]:
    if moment is None:
        return None
    return round(max(0.0, moment - now if future else now - moment), AGE_DIGITS)


def consumer_held(entries: Iterable[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """A consumer's held queues with its monotonic times made relative:
    ``next_try_in`` (s) while waiting, ``trying_for`` (s) while a try runs."""
    return [{"queue": e.get("queue"), "tries": e.get("tries"), "error": e.get("error"),
             "next_try_in": _age(e.get("next_try"), now, future=True),
             "trying_for": _age(e.get("trying_since"), now, future=False)} for e in entries]


def held_queues(consumers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per held queue, from the consumers' status: which consumers hold it,
    the most tries, the setup's error, the soonest next try, the longest
    try running."""
    return _by_queue(consumers, "held", lambda e: {"tries": 0, "error": e.get("error"),
                                                   "next_try_in": None, "trying_for": None},
                     (("tries", max), ("next_try_in", min), ("trying_for", max)))


def consumer_paused(entries: Iterable[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """A consumer's paused queues with its monotonic times made relative:
    ``paused_for`` (s since the incident's first pause), ``pause`` (s, this
    pause's length), ``resumes_in`` (s)."""
    return [{"queue": e.get("queue"), "errno": e.get("errno"), "error": e.get("error"),
             "paused_for": _age(e.get("since"), now, future=False), "pause": e.get("pause"),
             "resumes_in": _age(e.get("until"), now, future=True)} for e in entries]


def paused_queues(consumers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per paused queue, from the consumers' status: which consumers pause
    it, why (the first one's errno and error), the longest time paused and
    pause, the soonest resumption."""
    return _by_queue(consumers, "paused", lambda e: {"errno": e.get("errno"), "error": e.get("error"),
                                                     "paused_for": None, "pause": None, "resumes_in": None},
                     (("paused_for", max), ("pause", max), ("resumes_in", min)))


def _by_queue(consumers: Iterable[dict[str, Any]], kind: str, first: Callable[[dict[str, Any]], dict[str, Any]],
              picks: Sequence[tuple[str, Callable[[Any, Any], Any]]]) -> list[dict[str, Any]]:
    """One row per queue of the consumers' ``kind`` entries (retiring ones
    left out): ``first`` of its first entry, then each key of ``picks``
    merged over the entries that have it."""
    rows: dict[str, dict[str, Any]] = {}
    for consumer in consumers:
        if consumer.get("state") == "retiring":
            continue
        for entry in consumer.get(kind) or ():
            row = rows.setdefault(entry["queue"], {
                "queue": entry["queue"], "group": consumer.get("group"), "consumers": [], **first(entry)})
            row["consumers"].append(consumer.get("pid"))
            for key, pick in picks:
                if entry.get(key) is not None:
                    row[key] = entry[key] if row[key] is None else pick(row[key], entry[key])
    return sorted(rows.values(), key=lambda row: row["queue"])


def held_by_group(scoreboards: Iterable[Any]) -> set[str]:
    """The queues every built consumer of a group holds or pauses: no
    process of the group runs their jobs now (a consumer still starting
    says nothing)."""
    held: Optional[set[str]] = None
    for scoreboard in scoreboards:
        if scoreboard.read().state in NOT_BUILT:
            continue
        queues = {entry.get("queue") for entry in [*scoreboard.held(), *scoreboard.paused()]}
        held = queues if held is None else held & queues
    return held or set()
