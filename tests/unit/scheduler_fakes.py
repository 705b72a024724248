"""An in-memory stand-in for the broker methods the scheduler uses, for
unit tests of its pure logic (the real engines race in tests/integration)."""
from __future__ import annotations

from typing import Optional, Sequence

from disqontrol_client.brokers.broker import NewJob, claim_then_add
from disqontrol_client.errors import BrokerUnavailable


class MemoryBroker:
    """claim() and add_many() over dicts, and add_claimed() as the base
    class's claim-then-add; ``fail_add`` simulates a lost broker."""

    atomic_claims = False

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

    def add_claimed(self, pairs: Sequence[tuple[str, NewJob]], claim_ttl: float) -> list[Optional[str]]:
        return claim_then_add(self, self, pairs, claim_ttl)


class AtomicMemoryBroker(MemoryBroker):
    """An engine whose add_claimed takes the claims and adds the jobs together
    (sqlite, redis): ``fail_add`` then leaves neither."""

    atomic_claims = True

    def add_claimed(self, pairs: Sequence[tuple[str, NewJob]], claim_ttl: float) -> list[Optional[str]]:
        if self.fail_add:
            raise BrokerUnavailable("broker down (test)")
        return super().add_claimed(pairs, claim_ttl)
