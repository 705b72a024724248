"""Held queues (their worker's setup raises: held_queues.py) as the master
sees them in its consumers' scoreboards: for ``disqontrolctl status`` and
metrics (an operator whose queue is held otherwise saw only a growing
backlog) and for the autoscaler (a held queue's backlog is work no process
of the group can do: more processes would only fail the same setup)."""
from __future__ import annotations

from typing import Any, Iterable, Optional

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
    rows: dict[str, dict[str, Any]] = {}
    for consumer in consumers:
        if consumer.get("state") == "retiring":
            continue
        for entry in consumer.get("held") or ():
            row = rows.setdefault(entry["queue"], {
                "queue": entry["queue"], "group": consumer.get("group"), "consumers": [], "tries": 0,
                "error": entry.get("error"), "next_try_in": None, "trying_for": None})
            row["consumers"].append(consumer.get("pid"))
            row["tries"] = max(row["tries"], entry.get("tries") or 0)
            for key, pick in (("next_try_in", min), ("trying_for", max)):
                if entry.get(key) is not None:
                    row[key] = entry[key] if row[key] is None else pick(row[key], entry[key])
    return sorted(rows.values(), key=lambda row: row["queue"])


def held_by_group(scoreboards: Iterable[Any]) -> set[str]:
    """The queues every built consumer of a group holds: no process of the
    group runs their jobs now (a consumer still starting says nothing)."""
    held: Optional[set[str]] = None
    for scoreboard in scoreboards:
        if scoreboard.read().state in NOT_BUILT:
            continue
        queues = {entry.get("queue") for entry in scoreboard.held()}
        held = queues if held is None else held & queues
    return held or set()
