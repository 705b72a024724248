#!/usr/bin/env python3
"""The machine's fork limit: fork + _exit + waitpid per second from N
processes of a given resident size, measured in a fresh interpreter.

The isolated worker forks one child per job, and what a fork costs grows
with the forking process's resident memory (page tables to copy, then to
tear down at exit): bench/throughput.py prints the isolated drain rate
beside this rate, for a bare interpreter and for one grown to a consumer's
RSS, measured in the same run.

Usage: python -S bench/forkrate.py SECONDS PROCESSES [ANON_MIB]
ANON_MIB grows the interpreter's anonymous resident memory (RssAnon, the
part a fork copies page tables for and exit tears down) to that size.
Prints two numbers: forks per second summed over the processes, and the
CPU milliseconds one fork costs (parent + child, any load).
"""
import os
import sys
import time

MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


KIB = 1024
MS = 1000


def anon_mib(pid: str = "self") -> float:
    """RssAnon of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * KIB / MIB
    raise RuntimeError(f"/proc/{pid}/status has no RssAnon line")


def grow_to(target_mib: float) -> bytearray:
    """Touch anonymous memory until this process has ``target_mib`` of it resident."""
    ballast = bytearray(max(0, int((target_mib - anon_mib()) * MIB)))
    for offset in range(0, len(ballast), PAGE):
        ballast[offset] = 1  # a written page is resident and has its own page-table entry
    return ballast


def fork_loop(seconds: float) -> int:
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        count += 1
    return count


def in_parallel(processes: int, loop: "Callable[[], int]") -> tuple[int, float]:  # noqa: F821 (no typing: -S stays bare)
    """Run ``loop`` in ``processes`` forked processes at once: the sum of
    the counts they return, and the CPU seconds they and their reaped
    children used."""
    read_fd, write_fd = os.pipe()
    before = os.times()
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            os.write(write_fd, f"{loop()}\n".encode())
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    after = os.times()
    os.close(write_fd)
    with os.fdopen(read_fd) as results:
        total = sum(int(line) for line in results.read().split())
    return total, after.children_user + after.children_system - before.children_user - before.children_system


def main(argv: list) -> int:
    seconds, processes = float(argv[0]), int(argv[1])
    ballast = grow_to(float(argv[2])) if len(argv) > 2 else bytearray()
    total, cpu_seconds = in_parallel(processes, lambda: fork_loop(seconds))
    del ballast
    sys.stdout.write(f"{total / seconds:.1f} {cpu_seconds / max(total, 1) * MS:.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
