"""The redis engine's claim-and-add script (lua/add_claimed.lua) against a
real redis-server: what the contract suite cannot reach from outside."""
from __future__ import annotations

from disqontrol_client.brokers import NewJob
from tests.integration.test_redis_broker import broker, raw  # noqa: F401 (fixtures)

TTL = 60.0  # s


def test_a_replayed_call_counts_as_won_and_adds_the_job_once(broker, monkeypatch):
    # Given a call whose reply was lost: the client sends the same script
    # (same job id, same claim) again, as redis-py's retry does
    sent = []
    pipeline = broker._pipeline

    def twice(calls, extra=()):
        sent.append(calls)
        pipeline(calls, extra)
        return pipeline(calls, extra)

    monkeypatch.setattr(broker, "_pipeline", twice)
    [job_id] = broker.add_claimed([("sched:e:1200", NewJob("q", b"x"))], TTL)
    # Then the second run still reports the claim as won, and the job exists once
    assert job_id is not None and len(sent) == 1
    assert broker.length("q") == 1 and broker.show(job_id)["payload"] == b"x"


def test_the_claim_holds_the_job_id_and_expires_with_the_ttl(broker, raw):
    [job_id] = broker.add_claimed([("sched:e:1200", NewJob("q", b"x"))], TTL)

    assert raw.get("dq:claim:sched:e:1200") == job_id.encode()
    assert 0 < raw.pttl("dq:claim:sched:e:1200") <= TTL * 1000


def test_claims_of_several_queues_go_in_one_round_trip(broker, monkeypatch):
    calls_per_trip = []
    pipeline = broker._pipeline
    monkeypatch.setattr(broker, "_pipeline", lambda calls, extra=(): calls_per_trip.append(len(calls))
                        or pipeline(calls, extra))

    got = broker.add_claimed([(f"sched:e:{n}", NewJob(q, b"x")) for n, q in enumerate("abca")], TTL)

    assert calls_per_trip == [3] and all(got)
    assert [broker.length(q) for q in ("a", "b", "c")] == [2, 1, 1]
