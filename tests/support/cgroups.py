"""A full process table for real-daemon tests: the daemon's processes moved
into a cgroup v1 pids group whose limit is what they use already (as under
systemd's TasksMax), so their next fork fails with EAGAIN."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

import pytest

PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")
UNLIMITED = "max"

needs_pids_cgroup = pytest.mark.skipif(
    os.geteuid() != 0 or not (PIDS_CGROUPS / "cgroup.procs").exists(),
    reason="needs root and the cgroup v1 pids controller to limit the daemon's forks",
)


@contextlib.contextmanager
def no_more_processes(pids: Iterable[int], name: str) -> Iterator[Path]:
    """Move ``pids`` into a new pids cgroup limited to its current count;
    yields the group (write UNLIMITED to its pids.max to lift the limit).
    On exit whatever is left in it goes back to the root group."""
    group = PIDS_CGROUPS / f"dq-test-{os.getpid()}-{name}"
    group.mkdir()
    try:
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
        (group / "pids.max").write_text((group / "pids.current").read_text())
        yield group
    finally:
        (group / "pids.max").write_text(UNLIMITED)
        for pid in (group / "cgroup.procs").read_text().split():
            (PIDS_CGROUPS / "cgroup.procs").write_text(pid)
        group.rmdir()
