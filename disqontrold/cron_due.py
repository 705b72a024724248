"""Which runs of a crontab entry are due: pure time arithmetic, no broker.

Everything takes ``now`` as an argument (unix seconds) so tests drive the
clock by hand. A *run* is a fire time of the entry's cron expression, a whole
minute, as unix seconds: an absolute instant, so two schedulers on hosts in
different zones or on either side of a DST change name the same run alike.

Time zones and DST follow croniter (>= 2.0) on zone-aware datetimes: when the
clocks go forward, a run inside the skipped hour (02:30 on the spring change
in Europe) fires at the first valid minute after it (03:00); when they go
back, a run inside the repeated hour fires twice, once per UTC offset.
"""
from __future__ import annotations

import os
from pathlib import Path
from datetime import datetime, timezone, tzinfo
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from disqontrol_client.config import SchedulerConfig
from disqontrol_client.errors import ConfigError
from disqontrold.crontab import CrontabEntry

# A run up to this late is "on time": a pass that starts a little after the
# minute (a loaded machine, cron's own delay) still runs it under "skip".
ON_TIME_GRACE = 60.0
MISSED_ONCE = "once"
MISSED_SKIP = "skip"
MISSED_CATCH_UP = "catch_up"
MISSED_POLICIES = (MISSED_ONCE, MISSED_SKIP, MISSED_CATCH_UP)
LOCALTIME = "/etc/localtime"
# croniter's get_prev is strictly before its start: start just after ``until``
# so that a run exactly at ``until`` is found.
_INCLUSIVE_NUDGE = 1.0


DEFAULT_SETTINGS = SchedulerConfig(crontab=Path("crontab"))


def check_settings(settings: SchedulerConfig) -> None:
    """Refuse settings the due computation cannot follow, naming the key."""
    if settings.missed_runs not in MISSED_POLICIES:
        raise ConfigError(
            f"disqontrol.scheduler.missed_runs: {settings.missed_runs!r} is not one of "
            f"{', '.join(MISSED_POLICIES)}"
        )
    for key in ("missed_window", "catch_up_limit"):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"disqontrol.scheduler.{key}: {value!r} is not a whole number >= 0")


def resolve_timezone(name: Optional[str]) -> tzinfo:
    """The zone of the crontab: the configured IANA name, else the system's
    (``$TZ``, then /etc/localtime), else UTC. A zone object with DST rules,
    never a fixed offset, so a daemon running across a DST change keeps
    firing at local wall-clock times."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"disqontrol.scheduler.timezone: {name!r} is not a known time zone; "
                "use an IANA name such as 'Europe/Prague' or 'UTC'"
            ) from None
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a POSIX TZ string zoneinfo cannot read: fall back to the file
    try:
        with open(LOCALTIME, "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def fire_times(
    expression: str, zone: tzinfo, after: float, until: float, limit: int
) -> list[float]:
    """Runs ``t`` with ``after < t <= until``: the latest ``limit`` of them,
    oldest first. Walks backwards from ``until`` so a long window costs at
    most ``limit`` steps."""
    if limit <= 0 or until <= after:
        return []
    walker = croniter(expression, datetime.fromtimestamp(until + _INCLUSIVE_NUDGE, zone))
    found: list[float] = []
    while len(found) < limit:
        run = walker.get_prev(datetime).timestamp()
        if run <= after:
            break
        if run <= until:
            found.append(run)
    found.reverse()
    return found


def next_fire_time(expression: str, zone: tzinfo, after: float) -> float:
    """The first run strictly after ``after``."""
    return croniter(expression, datetime.fromtimestamp(after, zone)).get_next(datetime).timestamp()


def due_runs(
    entry: CrontabEntry,
    last_checked: float,
    now: float,
    settings: Optional[SchedulerConfig] = None,
    zone: Optional[tzinfo] = None,
) -> list[float]:
    """The runs of ``entry`` to add now, oldest first.

    ``last_checked`` is when the previous pass looked (a one-shot or a freshly
    started daemon passes ``now - missed_window``: the broker's claims, not
    this process, remember what ran). Runs in the last ``ON_TIME_GRACE``
    seconds are on time; older ones since ``last_checked`` but within
    ``missed_window`` were missed and follow ``missed_runs``: "once" adds the
    latest of them, "skip" none, "catch_up" the latest ``catch_up_limit``."""
    settings = settings or DEFAULT_SETTINGS
    zone = zone or timezone.utc
    check_settings(settings)
    on_time_from = max(last_checked, now - ON_TIME_GRACE)
    # At most one run fits in a window of a minute (runs are whole minutes),
    # two around a DST fall-back are still distinct instants an hour apart.
    on_time = fire_times(entry.expression, zone, on_time_from, now, limit=1)
    missed_limit = {MISSED_ONCE: 1, MISSED_SKIP: 0, MISSED_CATCH_UP: settings.catch_up_limit}
    missed_from = max(last_checked, now - settings.missed_window)
    missed = fire_times(
        entry.expression, zone, missed_from, on_time_from,
        limit=missed_limit[settings.missed_runs],
    )
    return missed + on_time
