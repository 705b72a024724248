"""An in-memory stand-in for the two broker methods the scheduler uses, for
unit tests of its pure logic (the real engines race in tests/integration)."""
from __future__ import annotations

from disqontrol_client.brokers.broker import NewJob
from disqontrol_client.errors import BrokerUnavailable


class MemoryBroker:
    """claim() and add_many() over dicts; ``fail_add`` simulates a lost broker."""

    def __init__(self) -> None:
        self.claims: dict[str, float] = {}
        self.jobs: list[NewJob] = []
        self.fail_add = False

    def claim(self, key: str, ttl: float) -> bool:
        if key in self.claims:
            return False
        self.claims[key] = ttl
        return True

    def add_many(self, items: list[NewJob]) -> list[str]:
        if self.fail_add:
            raise BrokerUnavailable("broker down (test)")
        self.jobs.extend(items)
        return [f"id-{len(self.jobs) - len(items) + i}" for i in range(len(items))]

    def close(self) -> None:
        self.closed = True
