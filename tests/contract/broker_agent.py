"""A separate process for the contract tests: producers and consumers of any
engine, so that concurrency and wake-ups are tested across real processes.

    python -m tests.contract.broker_agent produce URL QUEUE COUNT PREFIX OUT
    python -m tests.contract.broker_agent consume URL QUEUE BATCH OUT
    python -m tests.contract.broker_agent add-on-line URL QUEUE
    python -m tests.contract.broker_agent home URL QUEUE

``produce`` writes one ``id payload`` line per job it added; ``consume``
prints ``ready`` once connected, then writes one line per job it was given
(flushed before the ack) until killed;
``add-on-line`` prints ``ready``, then for each line read from stdin waits a
moment, adds a job and prints the monotonic time just before the add;
``home`` (sqlite-sharded) reserves once, prints its consumer home shard and
keeps it until stdin closes.
"""
from __future__ import annotations

import sys
import time

from disqontrol_client.brokers import NewJob, open_broker

PRODUCE_BATCH = 50  # every other batch goes through add_many
IDLE_TIMEOUT = 1.0
ADD_PAUSE = 0.05  # s: lets the test's reserve reach its sleep before the add


def produce(url: str, queue: str, count: int, prefix: str, out: str) -> None:
    with open_broker(url) as broker, open(out, "w", encoding="utf-8") as f:
        for start in range(0, count, PRODUCE_BATCH):
            payloads = [f"{prefix}-{i}" for i in range(start, min(start + PRODUCE_BATCH, count))]
            if (start // PRODUCE_BATCH) % 2:
                ids = broker.add_many([NewJob(queue, p.encode()) for p in payloads])
            else:
                ids = [broker.add(queue, p.encode()) for p in payloads]
            f.writelines(f"{i} {p}\n" for i, p in zip(ids, payloads))


def consume(url: str, queue: str, batch: int, out: str) -> None:
    with open_broker(url) as broker, open(out, "w", encoding="utf-8") as f:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while True:
            got = broker.reserve([queue], count=batch, timeout=IDLE_TIMEOUT)
            if not got:
                continue
            f.writelines(f"{d.id} {d.payload.decode()}\n" for d in got)
            f.flush()
            broker.ack([d.id for d in got])


def add_on_line(url: str, queue: str) -> None:
    with open_broker(url) as broker:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        for n, _line in enumerate(sys.stdin):
            time.sleep(ADD_PAUSE)
            started = time.monotonic()
            broker.add(queue, f"wake-{n}".encode())
            sys.stdout.write(f"{started!r}\n")
            sys.stdout.flush()


def home(url: str, queue: str) -> None:
    with open_broker(url) as broker:
        broker.reserve([queue], timeout=0)
        sys.stdout.write(f"{broker.home()}\n")  # type: ignore[attr-defined]
        sys.stdout.flush()
        sys.stdin.read()


def main(argv: list[str]) -> None:
    command, url, queue, *rest = argv
    if command == "produce":
        produce(url, queue, int(rest[0]), rest[1], rest[2])
    elif command == "consume":
        consume(url, queue, int(rest[0]), rest[1])
    elif command == "add-on-line":
        add_on_line(url, queue)
    elif command == "home":
        home(url, queue)
    else:
        raise SystemExit(f"unknown command {command!r}; allowed: produce, consume, add-on-line, home")


if __name__ == "__main__":
    main(sys.argv[1:])
