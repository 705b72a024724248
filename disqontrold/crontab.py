"""Reading a disqontrol crontab: ``m h dom mon dow QUEUE BODY...`` lines.

Parsing is separate from scheduling so that ``disqontrold --check``, the
one-shot and the built-in scheduler refuse a bad file with the same message,
naming the file and line (``etc/crontab:7: 'mon-xyz' is not a valid day of
week ...``) before any job is added.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Optional

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from disqontrol_client.errors import ConfigError
from disqontrol_client.job import loads_json

COMMENT = "#"
CRON_FIELDS = 5
KEY_HEX_CHARS = 16  # 64 bits of sha256: collisions between entries are not a concern

# Name, allowed values of each of the five time fields, in order.
FIELDS: tuple[tuple[str, str], ...] = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat"),
)
FIELD_SYNTAX = "*, N, a-b, */N, a-b/N or a list of those joined by ','"

# The nicknames of Vixie cron that name a time (@reboot names an event).
NICKNAMES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"

# A fixed start for validating an expression: any instant works, this one is
# reproducible.
_VALIDATION_START = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class CrontabEntry:
    """One schedule line: when (a 5-field cron expression), which queue, what body."""

    schedule: str  # as written: "*/5 * * * *" or "@hourly"
    expression: str  # the 5-field form croniter runs ("0 * * * *" for "@hourly")
    queue: str
    body: Any  # JSON value if the text parsed as JSON, else the text itself
    source: str  # "path:line", for messages and status
    line: str  # the line as written, without the newline

    @property
    def key(self) -> str:
        """A stable name of the entry across processes, hosts and restarts.

        Hash of schedule + queue + body (canonical JSON), so reformatting the
        body's whitespace or moving the line keeps the key, and two schedulers
        reading the same crontab agree on it."""
        canonical = json.dumps(
            [self.expression, self.queue, self.body], sort_keys=True, separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:KEY_HEX_CHARS]


def parse_body(text: str) -> Any:
    """SPEC §7: the body is JSON if it parses, else the rest of the line as a
    string. NaN and Infinity, which Python's json reads but JSON has not (nor
    PHP, jq or an http endpoint), make it a string too."""
    try:
        return loads_json(text)
    except ValueError:
        return text


def _check_field(index: int, value: str, where: str) -> None:
    """Validate one time field alone, so the message names the bad field."""
    name, allowed = FIELDS[index]
    fields = ["*"] * CRON_FIELDS
    fields[index] = value
    try:
        croniter(" ".join(fields), _VALIDATION_START)
    except (CroniterError, ValueError, KeyError, IndexError):
        raise ConfigError(
            f"{where}: {value!r} is not a valid {name} (allowed: {allowed}; syntax: {FIELD_SYNTAX})"
        ) from None


def check_expression(expression: str, where: str) -> None:
    """Validate a 5-field expression field by field, then as a whole (a date
    like ``* * 31 2 *`` is valid field by field but never happens)."""
    fields = expression.split()
    if len(fields) != CRON_FIELDS:
        raise ConfigError(
            f"{where}: {expression!r} has {len(fields)} time fields; "
            f"expected {CRON_FIELDS} (minute hour day-of-month month day-of-week) or one of "
            f"{', '.join(NICKNAMES)}"
        )
    for index, value in enumerate(fields):
        _check_field(index, value, where)
    try:
        croniter(expression, _VALIDATION_START).get_next(datetime)
    except CroniterBadDateError:
        raise ConfigError(f"{where}: {expression!r} never happens (no such date)") from None
    except (CroniterBadCronError, CroniterError, ValueError) as error:
        raise ConfigError(f"{where}: {expression!r} is not a valid schedule: {error}") from None


def parse_line(text: str, where: str) -> Optional[CrontabEntry]:
    """One line -> an entry, or None for a blank line or a comment."""
    line = text.rstrip("\r\n")
    stripped = line.strip()
    if not stripped or stripped.startswith(COMMENT):
        return None
    if stripped.startswith("@"):
        nickname, *rest = stripped.split(None, 2)
        if nickname.lower() == REBOOT:
            raise ConfigError(
                f"{where}: {REBOOT} is not supported: the scheduler adds jobs at clock times; "
                "add a job at boot from your service manager instead"
            )
        if nickname.lower() not in NICKNAMES:
            raise ConfigError(
                f"{where}: {nickname!r} is not a known schedule nickname; allowed: {', '.join(NICKNAMES)}"
            )
        schedule, expression = nickname, NICKNAMES[nickname.lower()]
    else:
        parts = stripped.split(None, CRON_FIELDS + 1)
        if len(parts) < CRON_FIELDS:
            raise ConfigError(
                f"{where}: {stripped!r} is not a crontab line; expected "
                "'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK QUEUE [BODY]'"
            )
        schedule = expression = " ".join(parts[:CRON_FIELDS])
        rest = parts[CRON_FIELDS:]
        check_expression(expression, where)
    if not rest:
        raise ConfigError(f"{where}: the line names no queue after the schedule {schedule!r}")
    queue = rest[0]
    body_text = rest[1].strip() if len(rest) > 1 else ""
    body = parse_body(body_text) if body_text else None
    return CrontabEntry(
        schedule=schedule, expression=expression, queue=queue, body=body, source=where, line=line
    )


def parse_crontab(
    text: str, path: str | os.PathLike[str] = "<crontab>", queues: Optional[Collection[str]] = None
) -> list[CrontabEntry]:
    """Every entry of a crontab text; ConfigError at the first bad line.

    With ``queues`` (the configured queue names) an entry naming another
    queue is refused too: a typo would otherwise pile jobs up unseen."""
    entries: list[CrontabEntry] = []
    seen: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        entry = parse_line(raw, where)
        if entry is None:
            continue
        if queues is not None and entry.queue not in queues:
            known = ", ".join(sorted(queues)) or "(none)"
            raise ConfigError(f"{where}: unknown queue {entry.queue!r}; configured queues: {known}")
        if entry.key in seen:
            raise ConfigError(
                f"{where}: same schedule, queue and body as {seen[entry.key]}; "
                "both would share one run per minute: remove one"
            )
        seen[entry.key] = where
        entries.append(entry)
    return entries


def load_crontab(
    path: str | os.PathLike[str], queues: Optional[Collection[str]] = None
) -> list[CrontabEntry]:
    """Read and parse a crontab file; a missing or unreadable file is a ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"crontab {str(path)!r} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"crontab {str(path)!r} is not UTF-8 text: {error}") from None
    return parse_crontab(text, path, queues)
