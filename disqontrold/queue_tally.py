"""Per-queue job outcomes and durations, for `disqontrolctl metrics`.

A consumer counts, per queue, the jobs that succeeded, failed and were
retried, and failed and were parked in the failure queue, and how long each
job ran (a histogram, BUCKETS). It writes them in a region of shared memory
the master made before the fork (one per consumer process, beside its
scoreboard); the master reads the live ones for status and folds a dead
consumer's last counts into its slot's totals, as it does the per-group
done / failed counters, so a crash, a recycle or a reload loses none and a
counter never goes down while the master runs.

Layout: a word (u64) counting the cells in use, then one cell per queue the
consumer ran a job of, in the order of first use: the queue's index in the
group, the three counters, the bucket counts (not cumulative; the last one
past BUCKETS[-1]) and the sum of the durations (a float64). A cell takes
CELL_BYTES; the region has room for every queue of the group but only the
cells in use are written or read, so a consumer's memory for it is
CELL_BYTES times the queues it ran jobs of, at most times the group's
queues. Each word is one aligned 8-byte store, never torn; a reader may see
one job's bucket before its sum, which the next read makes good. One writer
(the consumer), so no lock.
"""
from __future__ import annotations

import bisect
import mmap
from typing import Any, Iterable, Optional, Sequence

#: Upper bounds (s) of the duration histogram: 1 ms to 10 min, 1-2.5-5 steps.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, 600.0)
DONE, RETRIED, PARKED = 0, 1, 2
OUTCOMES = ("done", "retried", "parked")
_WORD = 8
_INDEX = 0  # cell word: the queue's index in the group
_COUNTS = 1  # first counter word
_FIRST_BUCKET = _COUNTS + len(OUTCOMES)
_SUM = _FIRST_BUCKET + len(BUCKETS) + 1  # + the bucket past the last bound
CELL_WORDS = _SUM + 1
CELL_BYTES = CELL_WORDS * _WORD
_HEADER_WORDS = 1  # cells in use


class QueueCells:
    """One consumer's per-queue counters in shared memory (see the module)."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.queues = list(queues)
        size = max(1, (_HEADER_WORDS + len(self.queues) * CELL_WORDS) * _WORD)
        self._map = mmap.mmap(-1, size)  # anonymous + MAP_SHARED: survives fork, pages made on first write
        self._words = memoryview(self._map).cast("Q")
        self._floats = memoryview(self._map).cast("d")
        self._index = {queue: i for i, queue in enumerate(self.queues)}
        self._cell_of: dict[str, int] = {}  # writer side: queue -> its cell's first word

    # -- writer side (the consumer) --
    def record(self, queue: str, outcome: Optional[int], duration: Optional[float]) -> None:
        """Count one job of ``queue`` (DONE, RETRIED or PARKED; None: only
        its run, a failure counted when the job comes back); ``duration``:
        seconds it ran (None: it did not run, a redelivery parked unrun)."""
        base = self._cell_of.get(queue)
        if base is None:
            base = self._new_cell(queue)
            if base is None:
                return  # not one of the group's queues
        words = self._words
        if outcome is not None:
            words[base + _COUNTS + outcome] += 1
        if duration is not None:
            words[base + _FIRST_BUCKET + bisect.bisect_left(BUCKETS, duration)] += 1
            self._floats[base + _SUM] += duration

    def _new_cell(self, queue: str) -> Optional[int]:
        index = self._index.get(queue)
        if index is None:
            return None
        used = self._words[0]
        base = _HEADER_WORDS + used * CELL_WORDS
        self._words[base + _INDEX] = index  # the cell is whole before it is counted in
        self._words[0] = used + 1
        self._cell_of[queue] = base
        return base

    # -- reader side (the master) --
    def read(self) -> dict[str, list[float]]:
        """queue -> [done, retried, parked, bucket counts..., duration sum]."""
        used = min(self._words[0], len(self.queues))
        end = _HEADER_WORDS + used * CELL_WORDS
        words = self._words[_HEADER_WORDS:end].tolist()
        sums = self._floats[_HEADER_WORDS:end].tolist()
        out = {}
        for start in range(0, len(words), CELL_WORDS):
            index = words[start + _INDEX]
            if index < len(self.queues):
                out[self.queues[index]] = [*words[start + _COUNTS:start + _SUM], sums[start + _SUM]]
        return out

    def close(self) -> None:
        self._words.release()
        self._floats.release()
        self._map.close()


class QueueTotals:
    """Per-queue sums of cells, kept by the master: a slot's dead processes',
    the retired slots', and the live ones' added for a status reply."""

    def __init__(self) -> None:
        self.by_queue: dict[str, list[float]] = {}

    def add(self, counts: dict[str, list[float]]) -> "QueueTotals":
        for queue, values in counts.items():
            mine = self.by_queue.get(queue)
            if mine is None:
                self.by_queue[queue] = list(values)
            else:
                for i, value in enumerate(values):
                    mine[i] += value
        return self

    def reply(self) -> dict[str, Any]:
        """The status reply's ``queue_jobs``: the bucket bounds, and per queue
        the outcome counters, the bucket counts (not cumulative; the last
        past the last bound) and the durations' sum."""
        queues = {}
        for queue, values in sorted(self.by_queue.items()):
            entry: dict[str, Any] = {name: int(values[i]) for i, name in enumerate(OUTCOMES)}
            entry["durations"] = [int(n) for n in values[len(OUTCOMES):-1]]
            entry["duration_sum"] = round(values[-1], 6)
            queues[queue] = entry
        return {"buckets": list(BUCKETS), "queues": queues}


def total(parts: Iterable[dict[str, list[float]]]) -> QueueTotals:
    """The sum of several cells' or totals' counts."""
    out = QueueTotals()
    for part in parts:
        out.add(part)
    return out
