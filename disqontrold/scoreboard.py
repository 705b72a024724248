"""Per-consumer status in shared memory: the consumer writes its state on
every job start without a syscall; the master reads it for status(), the
process title and hung-consumer detection. One small anonymous shared mmap per
consumer, created by the master before the fork. A sequence counter (odd while
writing) lets the reader retry a torn read."""
from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

IDLE, BUSY, STOPPING, STARTING = 0, 1, 2, 3
STATE_NAMES = {IDLE: "idle", BUSY: "busy", STOPPING: "stopping", STARTING: "starting"}
JOB_ID_BYTES = 64
_LAYOUT = struct.Struct(f"<IBxxxddQQ{JOB_ID_BYTES}s")  # seq state since heartbeat done failed job
READ_ATTEMPTS = 100


@dataclass(frozen=True)
class Snapshot:
    state: str
    job: str
    since: float  # time.monotonic() of the current state's start (system-wide clock)
    heartbeat: float
    done: int
    failed: int


class Scoreboard:
    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _LAYOUT.size)  # anonymous + MAP_SHARED: survives fork
        self._seq = 0
        self._state = STARTING
        self._job = b""
        self._since = time.monotonic()
        self.done = 0
        self.failed = 0
        self._write(self._since)

    # -- writer side (the consumer) --
    def _write(self, now: float) -> None:
        self._seq += 1
        _LAYOUT.pack_into(self._map, 0, self._seq, 0, 0.0, 0.0, 0, 0, b"")  # odd: writing
        self._seq += 1
        _LAYOUT.pack_into(
            self._map, 0, self._seq, self._state, self._since, now, self.done, self.failed, self._job
        )

    def set_state(self, state: int, job_id: str = "") -> None:
        now = time.monotonic()
        self._state = state
        self._job = job_id.encode()[:JOB_ID_BYTES]
        self._since = now
        self._write(now)

    def count(self, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        self._write(time.monotonic())

    def heartbeat(self) -> None:
        self._write(time.monotonic())

    # -- reader side (the master) --
    def read(self) -> Snapshot:
        for _ in range(READ_ATTEMPTS):
            seq1 = _LAYOUT.unpack_from(self._map, 0)[0]
            values = _LAYOUT.unpack_from(self._map, 0)
            if seq1 % 2 == 0 and values[0] == seq1:
                break
        _, state, since, heartbeat, done, failed, job = values
        return Snapshot(
            state=STATE_NAMES.get(state, "unknown"),
            job=job.rstrip(b"\0").decode(errors="replace"),
            since=since, heartbeat=heartbeat, done=done, failed=failed,
        )

    def close(self) -> None:
        self._map.close()
