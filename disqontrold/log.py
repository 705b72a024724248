"""The daemon's log: one line per event, to ``log_dir/disqontrol.log`` and stderr.

``2026-11-28T03:41:32.123Z level=info pid=123 event=job_done job=D-.. queue=q``.
The file is reopened on SIGUSR1 (by the master, which forwards the signal to
its consumers) so logrotate can move it without copytruncate.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

from disqontrol_client.errors import ConfigError
from disqontrol_client.logfmt import log_event

LOG_FILE_NAME = "disqontrol.log"
LEVELS = ("debug", "info", "warning", "error")

logger = logging.getLogger(__name__)


class EventFormatter(logging.Formatter):
    """UTC timestamp with milliseconds, level and pid in front of the event.

    A line is formatted once per record, not once per handler (the file and
    stderr both write it), and the date part once per second: a job's
    ``job_done`` line is on every job's path."""

    def __init__(self) -> None:
        super().__init__()
        self._date: tuple[int, str] = (-1, "")  # (second, its date text): one object, so threads see a pair

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get("_event_line")
        if line is not None:
            return line
        second, stamp = self._date
        if int(record.created) != second:
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._date = (second, stamp)
        line = (
            f"{stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"pid={record.process} {record.getMessage()}"
        )
        if record.exc_info:
            # One line per event, even with a traceback: newlines are escaped.
            line += " traceback=" + repr(self.formatException(record.exc_info))
        record._event_line = line
        return line


class ReopenableFileHandler(logging.FileHandler):
    """A FileHandler whose file can be reopened after logrotate moved it."""

    def reopen(self) -> None:
        """Switch to a file opened anew at the path, its directory made again
        if it was removed. Never raises: a removed log directory used to
        kill the master at the next SIGUSR1 (logrotate), and every consumer
        with it; a file that cannot be opened keeps the old one in use."""
        try:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            stream = self._open()
        except OSError as exc:
            log_event(logger, "log_reopen_failed", logging.ERROR, path=self.baseFilename, error=exc,
                      keeping="the file open before")
            return
        self.acquire()
        try:
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


_file_handler: Optional[ReopenableFileHandler] = None


def parse_level(name: str) -> int:
    """A level name of LEVELS to its logging constant."""
    if name.lower() not in LEVELS:
        raise ConfigError(f"log level {name!r} is not one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


def setup_logging(log_dir: Optional[Path], level: int | str = logging.INFO, stderr: bool = True) -> None:
    """Send every record of the process to the log file and/or stderr.

    Called once by the master before forking; consumers inherit the handlers
    (the file is opened in append mode, so lines of several processes never
    overwrite each other)."""
    global _file_handler
    if isinstance(level, str):
        level = parse_level(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = EventFormatter()
    if log_dir is not None:
        log_dir = Path(log_dir)
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"disqontrol.log_dir: cannot create {str(log_dir)!r}: {exc.strerror}") from exc
        _file_handler = ReopenableFileHandler(log_dir / LOG_FILE_NAME, encoding="utf-8")
        _file_handler.setFormatter(formatter)
        root.addHandler(_file_handler)
    if stderr:
        stream_handler = logging.StreamHandler(sys.stderr)
        stream_handler.setFormatter(formatter)
        root.addHandler(stream_handler)
    root.setLevel(level)
    logging.logThreads = False
    logging.logMultiprocessing = False
    # logging.raiseExceptions stays on: a broken log file is visible on stderr.


def reopen_logs() -> None:
    """Reopen the log file (after SIGUSR1); a no-op without one."""
    if _file_handler is not None:
        _file_handler.reopen()
