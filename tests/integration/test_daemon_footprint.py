"""The master and its consumers stay small: the config is validated in a
forked child, so yaml, jsonschema and psutil (and croniter without a
scheduler) are never loaded by the processes an isolated job is forked
from, before or after a reload. Checked on a real daemon through the
shared objects each process maps (/proc/PID/maps)."""
from __future__ import annotations

import signal
from pathlib import Path

from tests.support.daemon import Daemon, python_worker

# Native parts of the heavy packages: _yaml (PyYAML's libyaml binding),
# rpds (jsonschema's referencing), _psutil_linux.
HEAVY_NATIVE = ("_yaml", "rpds", "_psutil_linux")
HEAVY_PURE = ("/croniter/", "/dateutil/", "/jsonschema/")
# What an isolated Python consumer on sqlite has no use for: hashlib's
# OpenSSL binding (libcrypto: ~0.8 MiB of anonymous memory each job's fork
# would copy) and shutil's compressors (argparse's help formatter imports
# shutil; ~30 mappings).
UNNEEDED_NATIVE = ("_hashlib", "libcrypto", "_bz2", "_lzma")


def loaded_heavy(pid: int, names: tuple[str, ...] = HEAVY_NATIVE) -> list[str]:
    """Heavy native modules mapped by ``pid``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({name for name in names if f"/{name}." in maps or f"/{name}/" in maps})


def opened_heavy(pid: int) -> list[str]:
    """Heavy pure-Python packages whose files ``pid`` holds open (none, normally): a
    cheap second check, as pure modules leave no mapping behind."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except FileNotFoundError:
            continue
        found += [name for name in HEAVY_PURE if name in target]
    return found


def test_master_and_consumers_never_load_the_config_validators(tmp_path):
    # Given a daemon with an isolated Python queue
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"iso": {"worker": python_worker("isolated_python_worker")}})
    daemon.start(consumers=1)
    try:
        daemon.add("iso", [1])
        daemon.wait_runs(1)
        # Then neither the master nor its consumer has the validators loaded
        for pid in [daemon.pid, *daemon.consumer_pids()]:
            assert loaded_heavy(pid) == [], pid
            assert opened_heavy(pid) == [], pid
        # And neither has OpenSSL or compressors: the consumer forks each job from them
        for pid in [daemon.pid, *daemon.consumer_pids()]:
            assert loaded_heavy(pid, UNNEEDED_NATIVE) == [], pid

        # When the config is reloaded (validated again)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_taken")
        daemon.wait_event("consumer_ready", 2)
        daemon.add("iso", [2])
        daemon.wait_runs(2)

        # Then the master and the new generation are still free of them
        for pid in [daemon.pid, *daemon.consumer_pids()]:
            assert loaded_heavy(pid) == [], pid
    finally:
        daemon.stop()


def test_the_validators_are_what_the_check_looks_for():
    """The check above can fail: a process that imports them maps them."""
    import os

    import jsonschema  # noqa: F401
    import yaml  # noqa: F401

    import hashlib  # noqa: F401
    import shutil  # noqa: F401

    mapped = loaded_heavy(os.getpid(), HEAVY_NATIVE + UNNEEDED_NATIVE)
    assert "rpds" in mapped
    assert {"_hashlib", "_bz2", "_lzma"} <= set(mapped)
    assert "_yaml" in mapped or not yaml.__with_libyaml__
