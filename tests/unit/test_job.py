"""The stored envelope (SPEC §4): what we write, what the PHP Disqontrol
writes, and payloads of other libraries taken as the body itself."""
from __future__ import annotations

import json
import math

import pytest

from disqontrol_client.job import (
    CREATION_TIME,
    JOB_LIFETIME,
    ORIGINAL_ID,
    PROCESS_TIMEOUT,
    RETRIES,
    Job,
    decode_payload,
    fresh_metadata,
)

NOW = 1_700_000_000


def test_encode_writes_exactly_body_and_metadata():
    job = Job({"id": 5, "name": "žluťoučký"}, "q", fresh_metadata(job_lifetime=100, process_timeout=7, now=NOW))
    stored = json.loads(job.encode())
    assert stored == {
        "body": {"id": 5, "name": "žluťoučký"},
        "metadata": {RETRIES: 0, ORIGINAL_ID: None, CREATION_TIME: NOW, JOB_LIFETIME: 100, PROCESS_TIMEOUT: 7},
    }


@pytest.mark.parametrize("body", ["pic.png", 5, 1.5, None, True, [1, "a"], {"nested": {"x": [1]}}])
def test_encode_decode_round_trip(body):
    metadata = fresh_metadata(now=NOW)
    metadata[RETRIES] = 3
    metadata["last-error"] = "exit code 1"
    assert decode_payload(Job(body, "q", metadata).encode()) == (body, metadata)


def test_php_made_envelope_is_read_with_its_metadata():
    # Given a payload exactly as the PHP Disqontrol stores it (a retried job)
    php = (
        '{"body":{"pic":"example-pic.png","sizes":[64,128]},"metadata":{"retries":2,'
        '"original-id":"D-dcb833cf-8YL1NT17e9+wsA/09NqxscQI-05a1","creation-time":1480000000,'
        '"job-lifetime":172800,"process-timeout":600}}'
    )
    # When it is decoded
    body, metadata = decode_payload(php.encode())
    # Then the body and every metadata key come through unchanged
    assert body == {"pic": "example-pic.png", "sizes": [64, 128]}
    assert metadata == {
        RETRIES: 2, ORIGINAL_ID: "D-dcb833cf-8YL1NT17e9+wsA/09NqxscQI-05a1",
        CREATION_TIME: 1480000000, JOB_LIFETIME: 172800, PROCESS_TIMEOUT: 600,
    }
    job = Job(body, "resize-pic", metadata, id="D-new")
    assert (job.retries, job.original_id) == (2, "D-dcb833cf-8YL1NT17e9+wsA/09NqxscQI-05a1")


def test_partial_php_metadata_is_completed_with_fresh_values():
    body, metadata = decode_payload(b'{"body":"x","metadata":{"retries":1}}', job_lifetime=50, process_timeout=9)
    assert body == "x"
    assert (metadata[RETRIES], metadata[JOB_LIFETIME], metadata[PROCESS_TIMEOUT]) == (1, 50, 9)


def test_php_envelope_with_empty_metadata_is_still_an_envelope():
    # a PHP Job whose metadata array is empty is encoded "metadata":[], and
    # PHP reads it as an envelope: its worker got the body, ours got the
    # whole envelope as the body
    body, metadata = decode_payload(b'{"body":{"id":5},"metadata":[]}', job_lifetime=50, process_timeout=9)
    assert body == {"id": 5}
    assert (metadata[RETRIES], metadata[ORIGINAL_ID], metadata[JOB_LIFETIME], metadata[PROCESS_TIMEOUT]) == (
        0, None, 50, 9)


@pytest.mark.parametrize("payload, body", [
    (b'{"task": "send", "args": [1]}', {"task": "send", "args": [1]}),  # another library's JSON
    (b'{"body": "x", "metadata": {}, "extra": 1}', {"body": "x", "metadata": {}, "extra": 1}),  # not exactly 2 keys
    (b'{"body": "x", "metadata": "nope"}', {"body": "x", "metadata": "nope"}),  # metadata not a mapping
    (b'"just a string"', "just a string"),
    (b"not json at all", "not json at all"),
])
def test_foreign_payload_is_the_body_itself_with_fresh_metadata(payload, body):
    decoded_body, metadata = decode_payload(payload, job_lifetime=123, process_timeout=4)
    assert decoded_body == body
    assert (metadata[RETRIES], metadata[ORIGINAL_ID], metadata[JOB_LIFETIME], metadata[PROCESS_TIMEOUT]) == (
        0, None, 123, 4)


def test_original_id_of_a_first_copy_is_its_own_id():
    assert Job("x", "q", fresh_metadata(), id="D-1").original_id == "D-1"


def test_non_json_body_is_refused_at_encoding():
    with pytest.raises(TypeError):
        Job(object(), "q").encode()


@pytest.mark.parametrize("key, value", [
    (CREATION_TIME, "2026-11-28T10:00:00Z"), (CREATION_TIME, None), (JOB_LIFETIME, "3600"),
    (JOB_LIFETIME, -5), (PROCESS_TIMEOUT, True), (RETRIES, "2"), (RETRIES, -1), (RETRIES, 1.5),
    (ORIGINAL_ID, 17), (CREATION_TIME, math.nan), (JOB_LIFETIME, math.inf), (PROCESS_TIMEOUT, 0),
])
def test_unusable_metadata_values_are_replaced_with_fresh_ones(key, value):
    # another library's "creation-time" as a date string raised in the
    # consumer when the job failed, at every delivery: it never got parked
    metadata = {**fresh_metadata(now=NOW), "retries": 1, "last-error": {"message": "x"}, key: value}
    body, decoded = decode_payload(json.dumps({"body": "b", "metadata": metadata}).encode(),
                                   job_lifetime=50, process_timeout=9)
    fresh = {RETRIES: 0, ORIGINAL_ID: None, JOB_LIFETIME: 50, PROCESS_TIMEOUT: 9}
    assert body == "b"
    assert decoded[key] == fresh.get(key, decoded[key]) and decoded[key] != value
    assert {k: v for k, v in decoded.items() if k != key} == {k: v for k, v in metadata.items() if k != key}
    assert Job("b", "q", decoded).retries >= 0
    assert isinstance(decoded[CREATION_TIME], int) and decoded[JOB_LIFETIME] > 0


def test_usable_metadata_is_kept_as_stored():
    # the common case, checked without a call per key: floats, a retry
    # count and a first id pass through untouched, extra keys too
    metadata = {RETRIES: 3, ORIGINAL_ID: "S-5", CREATION_TIME: NOW + 0.5, JOB_LIFETIME: 60.0,
                PROCESS_TIMEOUT: 7, "last-error": {"message": "x"}}
    _, decoded = decode_payload(json.dumps({"body": "b", "metadata": metadata}).encode(),
                                job_lifetime=50, process_timeout=9)
    assert decoded == metadata
