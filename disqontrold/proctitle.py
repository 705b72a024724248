"""Process titles that tell `ps` what each process does:
``disqontrold: master [/etc/disqontrol.yml]``,
``disqontrold: consumer [pic-resize] idle`` / ``busy D-1a2b... 3s``."""
from __future__ import annotations

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


def consumer_title(group: str, state: str, job_id: str = "", age: float = 0.0) -> str:
    if state == "busy":
        return f"consumer [{group}] busy {job_id} {age:.0f}s"
    return f"consumer [{group}] {state}"
