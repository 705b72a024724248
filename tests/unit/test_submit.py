"""new_job_for: the envelope, TTL and lease every producer and retry uses."""
from __future__ import annotations

import json

import pytest

from disqontrol_client.brokers.broker import MAX_TTL
from disqontrol_client.config import QueueConfig, WorkerConfig
from disqontrol_client.errors import UsageError
from disqontrol_client.job import CREATION_TIME, RETRIES, Job, decode_payload, fresh_metadata
from disqontrol_client.submit import LEASE_GRACE, new_job_for

NOW = 1_700_000_000.0
QUEUE = QueueConfig(name="q", worker=WorkerConfig(type="command", command="true"),
                    job_process_timeout=30, job_lifetime=1000)


def test_new_job_gets_fresh_metadata_from_its_queue():
    new = new_job_for(Job({"id": 5}, "q"), QUEUE, delay=7, now=NOW)
    body, metadata = decode_payload(new.payload)
    assert body == {"id": 5}
    assert metadata == fresh_metadata(job_lifetime=1000, process_timeout=30, now=NOW)
    assert (new.queue, new.delay, new.ttl) == ("q", 7, 1000)


def test_lease_outlasts_the_process_timeout_by_a_grace():
    new = new_job_for(Job("x", "q"), QUEUE, now=NOW)
    assert new.retry == QUEUE.job_process_timeout + LEASE_GRACE > QUEUE.job_process_timeout


def test_retry_keeps_its_metadata_and_gets_only_the_lifetime_left():
    # Given a job created 400 s ago and failed twice
    metadata = fresh_metadata(job_lifetime=1000, process_timeout=30, now=NOW - 400)
    metadata[RETRIES] = 2
    # When its retry is built
    new = new_job_for(Job("x", "q", metadata), QUEUE, delay=16, now=NOW)
    # Then the count and creation time travel on, and the TTL is what is left
    _, stored = decode_payload(new.payload)
    assert (stored[RETRIES], stored[CREATION_TIME]) == (2, NOW - 400)
    assert new.ttl == pytest.approx(600)


def test_ttl_lets_a_delayed_job_run_once_and_never_exceeds_the_maximum():
    old = fresh_metadata(job_lifetime=1000, now=NOW - 990)
    new = new_job_for(Job("x", "q", old), QUEUE, delay=100, now=NOW)
    assert new.ttl == 100 + new.retry
    assert new_job_for(Job("x", "failed-jobs"), None, ttl=MAX_TTL, now=NOW).ttl == MAX_TTL  # explicit wins
    assert new_job_for(Job("x", "q"), None, delay=MAX_TTL - 1, now=NOW).ttl == MAX_TTL


def test_delay_past_the_longest_ttl_is_refused():
    with pytest.raises(UsageError, match=r"^delay 3932100 s for queue 'q' is not shorter than the job's time to live "
                       r"\(3932100 s, at most 3932100\): the job would expire before it runs$"):
        new_job_for(Job("x", "q"), None, delay=MAX_TTL, now=NOW)


def test_without_a_queue_config_the_default_limits_apply():
    new = new_job_for(Job("x", "any-queue"), None, now=NOW)
    _, metadata = decode_payload(new.payload)
    assert (metadata["job-lifetime"], metadata["process-timeout"], new.ttl) == (2592000, 600, 2592000)


def test_body_that_is_not_json_is_a_usage_error_naming_the_queue():
    with pytest.raises(UsageError, match=r"^the body of a job for queue 'q' is not JSON-serializable: "):
        new_job_for(Job({1, 2}, "q"), QUEUE)


def test_payload_is_compact_utf8_json():
    new = new_job_for(Job("ž", "q"), QUEUE, now=NOW)
    assert "ž".encode() in new.payload and b", " not in new.payload
    assert json.loads(new.payload)["body"] == "ž"
