"""Structured log lines: one line per event, ``event=... key=value``.

Kept in the client package because brokers log reconnects too; the daemon's
handlers and files are set up by ``disqontrold.log``.
"""
from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Anything outside these characters makes a value quoted (a regex: this runs per log field).
_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_.:/+@,\[\]]")
MAX_VALUE_CHARS = 2000


def format_value(value: Any) -> str:
    """Quote a value only when it needs it, so lines stay grep-friendly."""
    text = value if isinstance(value, str) else ("null" if value is None else str(value))
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "..."
    if text and _UNSAFE.search(text) is None:
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def format_fields(event: str, fields: dict[str, Any]) -> str:
    parts = [f"event={format_value(event)}"]
    parts.extend(f"{key}={format_value(value)}" for key, value in fields.items())
    return " ".join(parts)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as ``event=NAME key=value ...`` (cheap when disabled)."""
    if logger.isEnabledFor(level):
        logger.log(level, format_fields(event, fields))


def redact_url(url: str) -> str:
    """A broker URL fit for logs and status: its password becomes ``***``
    (the user name and every host stay, so the reader knows which server)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    hosts = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{hosts}"))
