"""Producer and consumer processes for the redis crash test.

    python -m tests.support.redis_flow produce URL QUEUE COUNT PROGRESS_FILE
    python -m tests.support.redis_flow consume URL QUEUE DONE_FILE

They behave as an application should around a broker restart: a producer
retries an add that raised BrokerUnavailable (at least once: a retried add
may duplicate, never lose), a consumer retries its ack and keeps reserving.
"""
from __future__ import annotations

import sys
import time

from disqontrol_client.brokers import open_broker
from disqontrol_client.errors import BrokerUnavailable

PACE = 0.001  # s between adds: keeps the producer busy while the server dies
LEASE = 3  # s: a lease whose reply died with the server comes back this soon
RETRY_PAUSE = 0.05  # s before retrying a refused call
BATCH = 10


def _until_reachable(call, on_failure=lambda: None):
    """Run ``call`` until the broker answers."""
    while True:
        try:
            return call()
        except BrokerUnavailable:
            on_failure()
            time.sleep(RETRY_PAUSE)


def produce(url: str, queue: str, count: int, progress: str) -> None:
    """Writes "<jobs added> <failed calls>" after every call, failed or not."""
    broker = open_broker(url)
    added = failures = 0
    with open(progress, "w", encoding="utf-8") as out:

        def report() -> None:
            out.write(f"{added} {failures}\n")
            out.flush()

        def failed() -> None:
            nonlocal failures
            failures += 1
            report()

        for index in range(count):
            _until_reachable(lambda: broker.add(queue, str(index).encode(), retry=LEASE), failed)
            added += 1
            report()
            time.sleep(PACE)
    broker.close()


def consume(url: str, queue: str, done: str) -> None:
    broker = open_broker(url)
    with open(done, "a", encoding="utf-8") as out:
        while True:
            jobs = broker.reserve([queue], count=BATCH, timeout=1)
            for job in jobs:
                out.write(job.payload.decode() + "\n")
            out.flush()
            if jobs:
                _until_reachable(lambda: broker.ack([job.id for job in jobs]))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "produce":
        produce(args[0], args[1], int(args[2]), args[3])
    else:
        consume(*args)
