"""``Broker.claim`` on Disque: a majority of nodes, each atomic on its own.

Disque has no key-value store and its job ids are random, but one node runs
one command at a time, and ``ADDJOB q body t REPLICATE 1 MAXLEN 1`` on an
empty queue queues the job before the command returns. So on one node the
first such ADDJOB to the queue ``__claim__:<key>`` wins and every later one
gets ``-MAXLEN`` until the job's TTL drops it: a claim with an expiry.

One node is not enough (its death would forget the claim), so a claim is
taken on every node, in node-id order, and is won with a strict majority of
the cluster's nodes (as Redlock does). Two callers cannot both hold a
majority; a claim survives the loss of a minority of nodes. A caller that
won some nodes but not a majority gives them back and, unless someone else
holds a majority, tries again after a short random pause. Each claim job's
body is its caller's random token, so "someone else holds a majority" is
told apart from a split vote.
"""
from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections import Counter
from typing import Optional

import redis

from disqontrol_client.brokers.disque_client import ClusterNode, FailoverClient, parse_hello
from disqontrol_client.errors import BrokerError, BrokerUnavailable
from disqontrol_client.logfmt import log_event

logger = logging.getLogger(__name__)

CLAIM_QUEUE_PREFIX = "__claim__:"
CLAIM_ADDJOB_TIMEOUT_MS = 1000  # unused with REPLICATE 1, but ADDJOB requires it
CLAIM_ROUNDS = 5  # split votes resolved by retrying this many times
CLAIM_PAUSE = (0.01, 0.05)  # s: random pause between rounds, so contenders desynchronise
TAKEN = "MAXLEN"  # Disque's refusal when the claim queue already holds the claim


def claim_queue(key: str) -> str:
    return CLAIM_QUEUE_PREFIX + key


def _take(connection: redis.Redis, key: str, ttl: int, token: str) -> tuple[Optional[str], Optional[str]]:
    """On one node: (our claim job id, None) if it gave us the claim, else
    (None, the holder's token, or None if the holder just gave it back)."""
    try:
        job_id = connection.execute_command(
            "ADDJOB", claim_queue(key), token, CLAIM_ADDJOB_TIMEOUT_MS,
            "REPLICATE", 1, "RETRY", 0, "TTL", ttl, "MAXLEN", 1,
        )
    except redis.ResponseError as exc:
        if not str(exc).startswith(TAKEN):
            raise BrokerError(f"Disque refused the claim {key!r}: {exc}") from exc
        held = connection.execute_command("QPEEK", claim_queue(key), 1)
        return None, (_text(held[0][2]) if held else None)
    return _text(job_id), None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _round(client: FailoverClient, nodes: list[ClusterNode], key: str, ttl: int,
           token: str) -> tuple[dict[str, str], Counter[Optional[str]], int]:
    """One pass over the nodes: (won: address -> job id, holders' tokens of
    the other nodes, unreachable nodes)."""
    won: dict[str, str] = {}
    holders: Counter[Optional[str]] = Counter()
    unreachable = 0
    for node in nodes:
        try:
            job_id, holder = client.on_node(node, lambda c: _take(c, key, ttl, token))
        except (redis.ConnectionError, redis.TimeoutError):
            unreachable += 1
            continue
        if job_id is None:
            holders[holder] += 1
        else:
            won[node.address] = job_id
    return won, holders, unreachable


def _give_back(client: FailoverClient, nodes: list[ClusterNode], key: str, won: dict[str, str]) -> None:
    for node in nodes:
        if node.address in won:
            try:
                client.on_node(node, lambda c: c.execute_command("DELJOB", won[node.address]))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # The node is gone; its half-claim expires with its TTL.
                log_event(logger, "disque_claim_not_returned", level=logging.WARNING,
                          node=node.address, key=key, error=exc)


def claim(client: FailoverClient, key: str, ttl: float) -> bool:
    """True for the first caller of ``key`` until ``ttl`` seconds pass."""
    ttl_s = max(1, int(math.ceil(ttl)))
    token = uuid.uuid4().hex  # who holds a node's claim, so a split is told from a loss
    for _ in range(CLAIM_ROUNDS):
        client.node_id, client.cluster = parse_hello(client.execute_command("HELLO"))
        nodes = sorted(client.cluster, key=lambda n: n.id)
        majority = len(nodes) // 2 + 1
        won, holders, unreachable = _round(client, nodes, key, ttl_s, token)
        if len(won) >= majority:
            return True
        _give_back(client, nodes, key, won)
        if any(count >= majority for holder, count in holders.items() if holder is not None):
            return False
        if len(nodes) - unreachable < majority:
            raise BrokerUnavailable(
                f"claim {key!r}: only {len(nodes) - unreachable} of {len(nodes)} Disque nodes answer; "
                f"a claim needs {majority}"
            )
        time.sleep(random.uniform(*CLAIM_PAUSE))
    raise BrokerError(f"claim {key!r}: still split between contenders after {CLAIM_ROUNDS} rounds")
