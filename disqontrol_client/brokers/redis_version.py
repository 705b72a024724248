"""The data version of a Redis key prefix: ``<prefix>:version``.

Why: users upgrade and roll back with jobs waiting. A release that changes
the key layout must know which layout a prefix holds, and an older release
must refuse a prefix a newer one wrote rather than misread it. Version 1 is
the layout of lua/common.lua; data written before versions existed is
version 1 too. Each broker connection checks at its first call, then once
a second at most, so a running process stops once a newer release has
upgraded the prefix under it (lua/version.lua stamps an unstamped prefix
atomically). A future layout change goes in a Lua script that checks the
version key and rewrites the keys and the version in one atomic call.
"""
from __future__ import annotations

import re
from typing import Callable

from disqontrol_client.errors import BrokerDataError

VERSION = 1  # the layout this release writes
OLDEST = 1  # the oldest layout this release reads
UNVERSIONED = 1  # the layout of data written before versions existed
SCRIPT = "version"  # lua/version.lua
VERSION_PATTERN = "[0-9]+"  # how a data version is stored
RECHECK = 1.0  # s between two looks of a connection at its prefix's version


def version_key(prefix: str) -> str:
    return f"{prefix}:version"


def check(run: Callable[[list[str], list[int]], bytes], prefix: str, queues_key: str, where: str) -> None:
    """Stamp the prefix if it is new (``run`` runs lua/version.lua), then
    refuse a version this release cannot read, or a value that is no
    version (another program's key on a shared prefix)."""
    stored = run([version_key(prefix), queues_key], [VERSION, UNVERSIONED])
    text = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else str(stored)
    if not re.fullmatch(VERSION_PATTERN, text):
        raise BrokerDataError(
            f"redis broker {where}: key {version_key(prefix)!r} holds {text!r}, not a data version: written by "
            f"another program; this release reads versions {OLDEST} to {VERSION}: use another prefix "
            "(?prefix=...) for disqontrol or for that program")
    found = int(text)
    if not OLDEST <= found <= VERSION:
        written = "a newer disqontrol" if found > VERSION else "an unknown program"
        raise BrokerDataError(
            f"redis broker {where}: prefix {prefix!r} holds data version {found} (key {version_key(prefix)!r}), "
            f"written by {written}; this release reads versions {OLDEST} to {VERSION}: upgrade disqontrol, "
            "or use another prefix (?prefix=...)")
