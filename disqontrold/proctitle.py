"""Process titles that tell `ps` what each process does:
``disqontrold: master [/etc/disqontrol.yml]``,
``disqontrold: consumer [pic-resize] idle`` / ``busy S-1a2b since 03:41:32Z``.
A title is set when a job starts and cannot tick while the job runs, so it
shows the start time; ``disqontrolctl status`` shows the age."""
from __future__ import annotations

import time

PREFIX = "disqontrold: "

try:
    from setproctitle import setproctitle as _set
except ImportError:  # setproctitle is a dependency; a title is not worth a crash
    _set = None


def set_title(text: str) -> None:
    if _set is not None:
        _set(PREFIX + text)


def master_title(config_path: object) -> str:
    return f"master [{config_path}]"


def consumer_title(group: str, state: str, job_id: str = "") -> str:
    if state == "busy":
        return f"consumer [{group}] busy {job_id} since {time.strftime('%H:%M:%SZ', time.gmtime())}"
    return f"consumer [{group}] {state}"
