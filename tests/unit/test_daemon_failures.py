"""failures.handle_failure against a real sqlite broker: retry copies and the
failure queue (SPEC §6)."""
from __future__ import annotations

import json

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.config import FAILURE_QUEUE_TTL, QueueConfig, WorkerConfig
from disqontrol_client.job import (
    CREATION_TIME, JOB_LIFETIME, LAST_ERROR, ORIGINAL_ID, ORIGINAL_QUEUE, PROCESS_TIMEOUT, RETRIES, Job,
    decode_payload, fresh_metadata,
)
from disqontrol_client.submit import LEASE_GRACE, new_job_for
from disqontrold.failures import handle_failure
from disqontrold.workers.base import Outcome

NOW = 1_800_000_000.0
NO_JITTER = lambda: 0.0  # noqa: E731
FAILED = Outcome(ok=False, error="exit code 3", details={"exit_code": 3})


@pytest.fixture
def broker(tmp_path):
    with open_broker(f"sqlite://{tmp_path}/jobs.db") as opened:
        yield opened


def queue(**overrides) -> QueueConfig:
    return QueueConfig(name="q", worker=WorkerConfig(type="command", command="/bin/true"), **overrides)


def leased_job(broker, config: QueueConfig, retries: int = 0, created: float = NOW) -> Job:
    metadata = fresh_metadata(job_lifetime=config.job_lifetime, now=created)
    metadata[RETRIES] = retries
    broker.add_many([new_job_for(Job({"x": 1}, "q", metadata), config)])
    [delivery] = broker.reserve(["q"], timeout=0)
    body, stored = decode_payload(delivery.payload)
    return Job(body, "q", stored, id=delivery.id)


def stored(broker, job_id: str) -> tuple[dict, dict]:
    shown = broker.show(job_id)
    body, metadata = decode_payload(shown["payload"])
    return shown, metadata


def test_first_failure_becomes_a_delayed_retry_copy_and_the_old_job_is_acked(broker):
    config = queue(backoff_scale=1.0)
    job = leased_job(broker, config, created=NOW)
    decision = handle_failure(broker, job, config, FAILED, now=NOW, jitter=NO_JITTER)
    assert (decision.action, decision.attempt, decision.delay) == ("retry", 1, 4.0)
    assert broker.show(job.id) is None
    shown, metadata = stored(broker, decision.new_id)
    assert shown["state"] == "delayed"
    assert metadata[RETRIES] == 1 and metadata[ORIGINAL_ID] == job.id
    assert metadata[LAST_ERROR] == {"message": "exit code 3", "exit_code": 3, "time": NOW}


def test_backoff_scale_and_retry_immediately_change_the_delay(broker):
    scaled = queue(backoff_scale=0.5)
    assert handle_failure(broker, leased_job(broker, scaled, retries=2), scaled, FAILED,
                          now=NOW, jitter=NO_JITTER).delay == 4**3 * 0.5
    immediate = queue(failure_strategy="retry_immediately")
    assert handle_failure(broker, leased_job(broker, immediate, retries=2), immediate, FAILED,
                          now=NOW, jitter=NO_JITTER).delay == 0.0


def test_failure_past_max_retries_goes_to_the_failure_queue(broker):
    config = queue(max_retries=2, failure_queue="dead")
    job = leased_job(broker, config, retries=2)
    decision = handle_failure(broker, job, config, FAILED, now=NOW)
    assert decision.action == "failed"
    shown, metadata = stored(broker, decision.new_id)
    assert shown["queue"] == "dead" and shown["ttl"] == FAILURE_QUEUE_TTL
    assert metadata[ORIGINAL_QUEUE] == "q" and metadata[RETRIES] == 3
    assert metadata[LAST_ERROR]["message"] == "exit code 3"
    assert broker.show(job.id) is None


def test_a_retry_that_would_outlive_the_job_goes_to_the_failure_queue(broker):
    # created 100 s before the end of its 1,000 s lifetime; retry 3 waits 64 s, retry 4 256 s
    config = queue(job_lifetime=1000)
    created = NOW - 900
    assert handle_failure(broker, leased_job(broker, config, retries=2, created=created), config, FAILED,
                          now=NOW, jitter=NO_JITTER).action == "retry"
    decision = handle_failure(broker, leased_job(broker, config, retries=3, created=created), config,
                              FAILED, now=NOW, jitter=NO_JITTER)
    assert decision.action == "failed"
    _, metadata = stored(broker, decision.new_id)
    assert metadata[CREATION_TIME] == int(created)
    assert json.dumps(metadata)  # stays JSON for PHP consumers


def test_a_consumed_failure_queue_gets_the_job_as_its_own_new_job(broker):
    # "dead" is itself a configured queue whose worker may run 700 s
    config = queue(max_retries=2, failure_queue="dead")
    dead = QueueConfig(name="dead", worker=WorkerConfig(type="command", command="/bin/true"),
                       job_process_timeout=700, job_lifetime=86400)
    job = leased_job(broker, config, retries=2, created=NOW - 1000)
    decision = handle_failure(broker, job, config, FAILED, failure_queue=dead, now=NOW)
    assert decision.action == "failed"
    shown, metadata = stored(broker, decision.new_id)
    # its lease covers dead's timeout (the 600 s of a plain failure queue let a
    # second consumer take it while the first still ran it), and its lifetime is dead's
    assert shown["queue"] == "dead" and shown["retry"] == 700 + LEASE_GRACE
    assert metadata[JOB_LIFETIME] == 86400 and metadata[PROCESS_TIMEOUT] == 700
    assert metadata[CREATION_TIME] == int(NOW)
    # it starts dead's retries from 0, and still says where and why it failed first
    assert metadata[RETRIES] == 0
    assert metadata[ORIGINAL_QUEUE] == "q" and metadata[ORIGINAL_ID] == job.id
    assert metadata[LAST_ERROR]["message"] == "exit code 3"
    assert broker.show(job.id) is None
