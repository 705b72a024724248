"""Per-consumer status in shared memory: the consumer writes its state on
every job start without a syscall; the master reads it for status(), the
process title and hung-consumer detection. One small anonymous shared mmap per
consumer, created by the master before the fork. A sequence counter (a
seqlock: odd while the fields are written) lets the reader retry a torn read:
a torn read could show a busy state with a zero start time, which the master
would take for a hung consumer and kill.

After the fields, the pids of the job processes the consumer runs (one
cell per place of its job window): if the consumer dies first, the master
ends them (see disqontrold/orphans.py). Each cell is one aligned 4-byte
store, never torn; status reads them live (a pid a moment stale at worst)
and the master's ending reads them once the consumer is gone, so they need
no sequence."""
from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

from disqontrol_client.config_schema import MAX_JOB_BATCH

IDLE, BUSY, STOPPING, STARTING = 0, 1, 2, 3
STATE_NAMES = {IDLE: "idle", BUSY: "busy", STOPPING: "stopping", STARTING: "starting"}
JOB_ID_BYTES = 64
_SEQ_BYTES = 4  # a native unsigned int at offset 0, written with one store
# The sequence wraps (an even modulus keeps its parity) instead of overflowing
# the cell after ~2**31 writes: a busy consumer gets there within a day.
_SEQ_MODULUS = 2 ** (8 * _SEQ_BYTES)
_FIELDS = struct.Struct(f"<BxxxddQQ{JOB_ID_BYTES}s")  # state since heartbeat done failed job
_SIZE = _SEQ_BYTES + _FIELDS.size
#: Job processes one consumer can run at once: job_batch's maximum.
MAX_JOB_PIDS = MAX_JOB_BATCH
_PID_BYTES = 4  # a native unsigned int per pid (Linux pids stay below 2**22)
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
        self._map = mmap.mmap(-1, _SIZE + MAX_JOB_PIDS * _PID_BYTES)  # anonymous + MAP_SHARED: survives fork
        # Not struct.pack_into: it zeroes its bytes before writing them, and a
        # reader catching that 0 before and after a write would take it as
        # an unchanged, even sequence.
        self._seq_cell = memoryview(self._map)[:_SEQ_BYTES].cast("I")
        self._pid_cells = memoryview(self._map)[_SIZE:].cast("I")
        self._cell_of: dict[int, int] = {}  # job pid -> its cell (writer side)
        self._free_cells = list(range(MAX_JOB_PIDS - 1, -1, -1))
        self._seq = 0
        self._state = STARTING
        self._job = b""
        self._since = time.monotonic()
        self.done = 0
        self.failed = 0
        self._write(self._since)
        self._last = self.read()  # no writer yet: a whole snapshot to fall back on

    # -- writer side (the consumer) --
    def _write(self, now: float) -> None:
        """Odd sequence, then the fields, then even: the sequence is written
        on its own before and after, never in the same copy as the fields."""
        self._seq = (self._seq + 1) % _SEQ_MODULUS
        self._seq_cell[0] = self._seq
        _FIELDS.pack_into(
            self._map, _SEQ_BYTES, self._state, self._since, now, self.done, self.failed, self._job
        )
        self._seq = (self._seq + 1) % _SEQ_MODULUS
        self._seq_cell[0] = self._seq

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

    def job_started(self, pid: int) -> None:
        """Note a running job process (the master ends it if we die first)."""
        if self._free_cells:
            cell = self._free_cells.pop()
            self._pid_cells[cell] = pid
            self._cell_of[pid] = cell

    def job_ended(self, pid: int) -> None:
        cell = self._cell_of.pop(pid, None)
        if cell is not None:
            self._pid_cells[cell] = 0
            self._free_cells.append(cell)

    # -- reader side (the master) --
    def read(self) -> Snapshot:
        """The last complete write: the sequence must be even and unchanged
        across the read of the fields (retried while the consumer writes).
        Racing a consumer that writes without pause, or one killed
        mid-write, it returns the previous whole snapshot, never a torn one."""
        for _ in range(READ_ATTEMPTS):
            before = self._seq_cell[0]
            values = _FIELDS.unpack_from(self._map, _SEQ_BYTES)
            if before % 2 == 0 and self._seq_cell[0] == before:
                self._last = self._snapshot(values)
                break
        return self._last

    @staticmethod
    def _snapshot(values: tuple) -> Snapshot:
        state, since, heartbeat, done, failed, job = values
        return Snapshot(
            state=STATE_NAMES.get(state, "unknown"),
            job=job.rstrip(b"\0").decode(errors="replace"),
            since=since, heartbeat=heartbeat, done=done, failed=failed,
        )

    def job_pids(self) -> list[int]:
        """The job processes the consumer had running (read once it is dead)."""
        return [pid for pid in self._pid_cells if pid]

    def close(self) -> None:
        self._seq_cell.release()  # mmap refuses to close while a view exists
        self._pid_cells.release()
        self._map.close()
