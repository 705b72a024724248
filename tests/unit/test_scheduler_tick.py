"""The Scheduler's pass logic with a hand-driven clock. The broker here is an
in-memory fake of the claim methods (claim, add_many, add_claimed): the
cross-process exactly-once guarantee is tested on real brokers in
tests/integration."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from disqontrol_client.config import SchedulerConfig
from disqontrol_client.errors import BrokerUnavailable, ClaimedNotAdded, ConfigError
from disqontrold.crontab import parse_crontab
from disqontrold.scheduler import SCHEDULED_TIME, Clock, Scheduler, claim_key
from tests.unit.scheduler_fakes import AtomicMemoryBroker, MemoryBroker

UTC = timezone.utc


def at(hour: int, minute: int, second: float = 0) -> float:
    return datetime(2026, 1, 1, hour, minute, tzinfo=UTC).timestamp() + second


SETTINGS = SchedulerConfig(crontab=Path("c"), timezone="UTC")


def scheduler(text: str, broker: MemoryBroker, now: float,
              settings: SchedulerConfig = SETTINGS) -> Scheduler:
    return Scheduler(parse_crontab(text, "c"), broker, settings, now=now)  # type: ignore[arg-type]


def scheduled_times(broker: MemoryBroker) -> list[int]:
    return [json.loads(job.payload)["metadata"][SCHEDULED_TIME] for job in broker.jobs]


def test_due_entry_is_added_with_body_envelope_and_run_time():
    broker = MemoryBroker()
    # Given an every-minute entry and a scheduler started at 12:00:30 under "skip"
    sched = scheduler('* * * * * q {"a": 1}', broker, at(12, 0, 30), replace(SETTINGS, missed_runs="skip"))
    # When it ticks at 12:00:31
    runs = sched.tick(at(12, 0, 31))
    # Then the 12:00 job is added once, in the PHP envelope, with its run time
    assert [r.job_id for r in runs] == ["id-0"]
    payload = json.loads(broker.jobs[0].payload)
    assert payload["body"] == {"a": 1}
    assert payload["metadata"]["retries"] == 0 and payload["metadata"][SCHEDULED_TIME] == at(12, 0)
    assert broker.jobs[0].queue == "q"
    # And a tick later in the minute adds nothing, the next minute adds the next run
    assert sched.tick(at(12, 0, 59)) == []
    sched.tick(at(12, 1, 0.2))
    assert scheduled_times(broker) == [at(12, 0), at(12, 1)]


def test_two_schedulers_on_one_claim_store_add_each_run_once():
    broker = MemoryBroker()
    first = scheduler("* * * * * q", broker, at(12, 0, 1))
    second = scheduler("* * * * * q", broker, at(12, 0, 1))
    for minute in range(5):
        for sched in (first, second):
            sched.tick(at(12, minute, 2))
    # latest missed (11:59) + 12:00..12:04, each once
    assert scheduled_times(broker) == [at(11, 59)] + [at(12, m) for m in range(5)]


def test_a_restarted_scheduler_does_not_repeat_runs_the_claims_remember():
    broker = MemoryBroker()
    catch_up = replace(SETTINGS, missed_runs="catch_up", missed_window=2 * 3600)
    scheduler("@hourly q", broker, at(12, 0, 1), catch_up).tick(at(12, 0, 2))
    assert scheduled_times(broker) == [at(11, 0), at(12, 0)]  # caught up, on time
    # When a new scheduler (no local memory) starts in the same hour
    scheduler("@hourly q", broker, at(12, 10), catch_up).tick(at(12, 10, 1))
    # Then nothing is added again
    assert len(broker.jobs) == 2


def test_claim_key_names_entry_and_utc_minute():
    entry = parse_crontab("* * * * * q", "c")[0]
    assert claim_key(entry, at(12, 7, 0)) == f"sched:{entry.key}:20260101T1207Z"


def test_claim_ttl_covers_the_look_back_window():
    broker = MemoryBroker()
    scheduler("* * * * * q", broker, at(12, 0, 1)).tick(at(12, 0, 2))
    assert all(ttl >= SETTINGS.missed_window for ttl in broker.claims.values())


def test_broker_failure_after_claim_loses_the_run_and_tick_does_not_raise(caplog):
    broker = MemoryBroker()
    sched = scheduler("* * * * * q", broker, at(12, 0, 30), replace(SETTINGS, missed_runs="skip"))
    broker.fail_add = True
    # When the add fails after the claim
    assert sched.tick(at(12, 0, 31)) == []
    # Then the run is logged as lost and, claimed, never added twice later
    assert "event=schedule_lost" in caplog.text and "queue=q" in caplog.text
    broker.fail_add = False
    sched.tick(at(12, 0, 40))
    assert broker.jobs == []
    sched.tick(at(12, 1, 1))
    assert scheduled_times(broker) == [at(12, 1)]


def test_broker_failure_with_atomic_claims_loses_nothing_and_the_next_pass_adds_the_run(caplog):
    broker = AtomicMemoryBroker()
    sched = scheduler("* * * * * q", broker, at(12, 0, 30), replace(SETTINGS, missed_runs="skip"))
    broker.fail_add = True
    # When the claim-and-add fails (neither the claim nor the job is kept)
    assert sched.tick(at(12, 0, 31)) == []
    # Then no run is lost: the next pass, with the broker back, adds it once
    assert "schedule_lost" not in caplog.text and broker.claims == {}
    broker.fail_add = False
    sched.tick(at(12, 0, 40))
    sched.tick(at(12, 0, 50))
    assert scheduled_times(broker) == [at(12, 0)]


def test_run_due_raises_broker_errors_for_the_one_shot():
    broker = MemoryBroker()
    broker.fail_add = True
    sched = scheduler("* * * * * q", broker, at(12, 0, 30))
    with pytest.raises(ClaimedNotAdded) as lost:  # claimed, not added: a BrokerError
        sched.run_due(at(12, 0, 31))
    assert isinstance(lost.value.__cause__, BrokerUnavailable) and len(lost.value.keys) == 2
    atomic = AtomicMemoryBroker()
    atomic.fail_add = True
    with pytest.raises(BrokerUnavailable):
        scheduler("* * * * * q", atomic, at(12, 0, 30)).run_due(at(12, 0, 31))


def test_broker_without_claim_is_refused_clearly():
    class NoClaim(MemoryBroker):
        def claim(self, key: str, ttl: float) -> bool:
            raise NotImplementedError("NoClaim has no claim()")

    sched = scheduler("* * * * * q", NoClaim(), at(12, 0, 30))
    refused = r"needs Broker.claim\(\).*NoClaim refuses it.*sqlite or redis.*scheduler.claim_store"
    with pytest.raises(ConfigError, match=refused):
        sched.run_due(at(12, 0, 31))


def test_next_deadline_is_the_next_run_capped_at_a_minute_away():
    broker = MemoryBroker()
    sched = scheduler("@hourly q", broker, at(12, 0, 30))
    sched.tick(at(12, 0, 31))
    # the next hourly run is 13:00, but the deadline is at most MAX_SLEEP from now
    assert sched.next_deadline() <= time.time() + 60
    assert scheduler("", broker, at(12, 0)).next_deadline() <= time.time() + 60


def test_next_deadline_of_a_near_run_is_that_run():
    now = time.time()
    broker = MemoryBroker()
    sched = scheduler("* * * * * q", broker, now)
    sched.tick(now)
    minute_after = (now // 60 + 1) * 60
    assert sched.next_deadline() == pytest.approx(minute_after)


def test_status_lists_next_and_last_run_of_every_entry():
    broker = MemoryBroker()
    sched = scheduler("@hourly q 1\n*/5 * * * * r x", broker, at(12, 2), replace(SETTINGS, missed_runs="skip"))
    sched.tick(at(12, 5, 3))
    rows = {row["queue"]: row for row in sched.status()}
    assert rows["q"]["next_run"] == "2026-01-01T13:00:00+00:00"
    assert rows["q"]["last_run"] == "2026-01-01T12:00:00+00:00"
    assert rows["q"]["last_job_id"] is None
    assert rows["r"]["next_run"] == "2026-01-01T12:10:00+00:00"
    assert rows["r"]["last_added"] == "2026-01-01T12:05:00+00:00" and rows["r"]["last_job_id"] == "id-0"
    assert rows["r"]["entry"] == "c:2" and rows["r"]["schedule"] == "*/5 * * * *"
    json.dumps(sched.status())  # serializable for the control socket


def test_scaled_clock_runs_faster_and_maps_back_to_real_time():
    clock = Clock(scale=60, origin=1000.0)
    assert clock.to_real(1000.0 + 600) == pytest.approx(1010.0)
    assert clock.real_duration(3600) == 60
    with pytest.raises(ConfigError, match="DISQONTROL_SCHEDULER_TIME_SCALE: 'fast' is not SCALE"):
        Clock.from_env({"DISQONTROL_SCHEDULER_TIME_SCALE": "fast"})
    with pytest.raises(ConfigError, match="SCALE: -1.0 is not a number > 0"):
        Clock.from_env({"DISQONTROL_SCHEDULER_TIME_SCALE": "-1"})
    assert Clock.from_env({}).scale == 1.0
    shared = Clock.from_env({"DISQONTROL_SCHEDULER_TIME_SCALE": "60@1000.5"})
    assert (shared.scale, shared.origin) == (60.0, 1000.5)


def test_scheduler_without_entries_runs_nothing():
    broker = MemoryBroker()
    assert scheduler("# nothing\n", broker, at(12, 0)).tick(at(12, 1)) == []
    assert broker.claims == {}


def test_a_broker_factory_is_opened_per_pass_and_closed():
    # Given a scheduler given a way to open the broker instead of a connection
    opened: list[MemoryBroker] = []
    closed: list[MemoryBroker] = []

    shared = MemoryBroker()
    shared.close = lambda: closed.append(shared)  # type: ignore[method-assign]

    def connect() -> MemoryBroker:
        opened.append(shared)
        return shared

    sched = Scheduler(parse_crontab("* * * * * q", "c"), connect, SETTINGS, now=at(12, 0, 30))  # type: ignore[arg-type]
    # When a pass has runs to add, and one has none
    sched.tick(at(12, 0, 31))
    sched.tick(at(12, 0, 40))
    # Then the connection was opened and closed once, for the pass with work
    assert len(opened) == len(closed) == 1
    assert len(shared.jobs) == 2  # 11:59 (latest missed, policy once) and 12:00


def test_claims_go_to_the_claim_store_when_one_is_given():
    # Given a broker that cannot claim (like disque) and a separate claim store
    class NoClaim(MemoryBroker):
        def claim(self, key: str, ttl: float) -> bool:
            raise NotImplementedError("no claim here")

    jobs, store = NoClaim(), MemoryBroker()
    entries = parse_crontab("* * * * * q", "c")
    first, second = (
        Scheduler(entries, jobs, SETTINGS, now=at(12, 0, 30), claims=store)  # type: ignore[arg-type]
        for _ in range(2)
    )
    # When both pass in the same minute
    first.tick(at(12, 0, 31))
    second.tick(at(12, 0, 32))
    # Then the claims are in the store and each run was added to the broker once
    assert len(store.claims) == 2 and store.jobs == []
    assert scheduled_times(jobs) == [at(11, 59), at(12, 0)]
