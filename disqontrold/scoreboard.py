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
no sequence.

Last, the queues the consumer holds because their worker's setup raised
(disqontrold/held_queues.py) and those it pauses because their jobs could
not start (disqontrold/paused_queues.py): a short JSON object of two lists,
rewritten at each setup try or pause (rarely), under a sequence of its own.
The master shows them in status and leaves those queues' backlog out of
autoscaling.

Beside it, in a mapping of its own sized by the group's queues, the
per-queue job outcomes and durations (disqontrold/queue_tally.py)."""
from __future__ import annotations

import json
import mmap
import struct
import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from disqontrol_client.config_schema import MAX_JOB_BATCH
from disqontrold.queue_tally import QueueCells

IDLE, BUSY, STOPPING, STARTING, SETTING_UP = 0, 1, 2, 3, 4
STATE_NAMES = {IDLE: "idle", BUSY: "busy", STOPPING: "stopping", STARTING: "starting", SETTING_UP: "setting_up"}
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
#: Bytes of the held and paused queues' JSON (a few hundred per queue, errors cut short).
HELD_BYTES = 4096
_HELD_HEADER = 8  # its sequence and its length, two native unsigned ints
HELD, PAUSED = "held", "paused"  # the region's two lists


@dataclass(frozen=True)
class Snapshot:
    state: str
    job: str
    since: float  # time.monotonic() of the current state's start (system-wide clock)
    heartbeat: float
    done: int
    failed: int


class Scoreboard:
    def __init__(self, queues: Sequence[str] = ()) -> None:
        self.queue_cells = QueueCells(queues)  # per-queue outcomes and durations
        held_at = _SIZE + MAX_JOB_PIDS * _PID_BYTES
        self._map = mmap.mmap(-1, held_at + _HELD_HEADER + HELD_BYTES)  # anonymous + MAP_SHARED: survives fork
        # Not struct.pack_into: it zeroes its bytes before writing them, and a
        # reader catching that 0 before and after a write would take it as
        # an unchanged, even sequence.
        self._seq_cell = memoryview(self._map)[:_SEQ_BYTES].cast("I")
        self._pid_cells = memoryview(self._map)[_SIZE:held_at].cast("I")
        self._held_cells = memoryview(self._map)[held_at:held_at + _HELD_HEADER].cast("I")  # sequence, length
        self._held_at = held_at + _HELD_HEADER
        self._published: dict[str, list[dict[str, Any]]] = {HELD: [], PAUSED: []}  # writer side
        self._region: dict[str, list[dict[str, Any]]] = {}  # reader side: the last whole read
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

    @contextmanager
    def setting_up(self, queue: str) -> Iterator[None]:
        """While a held queue's worker is built in this process (blocking):
        the master gives it start_timeout, as at start, then the state the
        consumer was in comes back, its start time included."""
        saved = (self._state, self._job, self._since)
        self.set_state(SETTING_UP, queue)
        try:
            yield
        finally:
            self._state, self._job, self._since = saved
            self._write(time.monotonic())

    def set_held(self, entries: list[dict[str, Any]]) -> None:
        """Publish the held queues (dicts of JSON values); what does not fit
        in HELD_BYTES is cut: the errors first, then the last queues."""
        self._publish(HELD, entries)

    def set_paused(self, entries: list[dict[str, Any]]) -> None:
        """Publish the paused queues, as set_held (held ones are kept first)."""
        self._publish(PAUSED, entries)

    def _publish(self, kind: str, entries: list[dict[str, Any]]) -> None:
        self._published[kind] = entries
        data = _fit(self._published[HELD], self._published[PAUSED])
        seq = (self._held_cells[0] + 1) % _SEQ_MODULUS  # odd: being written
        self._held_cells[0] = seq
        self._map[self._held_at:self._held_at + len(data)] = data
        self._held_cells[1] = len(data)
        self._held_cells[0] = (seq + 1) % _SEQ_MODULUS

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

    def held(self) -> list[dict[str, Any]]:
        """The queues the consumer holds (the last whole write; [] if none)."""
        return self._read_region().get(HELD, [])

    def paused(self) -> list[dict[str, Any]]:
        """The queues the consumer pauses (the last whole write; [] if none)."""
        return self._read_region().get(PAUSED, [])

    def _read_region(self) -> dict[str, list[dict[str, Any]]]:
        for _ in range(READ_ATTEMPTS):
            before = self._held_cells[0]
            length = min(self._held_cells[1], HELD_BYTES)
            data = bytes(self._map[self._held_at:self._held_at + length])
            if before % 2 == 0 and self._held_cells[0] == before:
                self._region = json.loads(data) if data else {}
                break
        return self._region

    def job_pids(self) -> list[int]:
        """The job processes the consumer had running (read once it is dead)."""
        return [pid for pid in self._pid_cells if pid]

    def close(self) -> None:
        self._seq_cell.release()  # mmap refuses to close while a view exists
        self._pid_cells.release()
        self._held_cells.release()
        self._map.close()
        self.queue_cells.close()


def _fit(held: list[dict[str, Any]], paused: list[dict[str, Any]]) -> bytes:
    """The JSON of the ``held`` and ``paused`` entries within HELD_BYTES:
    without their errors if need be, then without the queues past what fits
    (the paused ones first)."""
    for kept in range(len(held) + len(paused), -1, -1):
        region = {HELD: held[:kept], PAUSED: paused[:max(0, kept - len(held))]}
        for shown in (region, {kind: [{**e, "error": None} for e in entries] for kind, entries in region.items()}):
            data = json.dumps(shown, separators=(",", ":")).encode()
            if len(data) <= HELD_BYTES:
                return data
    return b"{}"
