"""The job and its stored envelope, wire-compatible with the PHP Disqontrol.

A stored payload is ``{"body": <json>, "metadata": {...}}``. PHP and Python
producers and consumers can share one broker because both read and write this
exact shape. A payload without exactly those two keys was added by another
library: it is the job body itself and gets fresh metadata.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

DEFAULT_JOB_LIFETIME = 2592000  # 30 days, Disque's default TTL
DEFAULT_PROCESS_TIMEOUT = 600
ENVELOPE_KEYS = frozenset(("body", "metadata"))

# Metadata keys of the PHP Disqontrol; extra keys (e.g. "last-error") are kept.
RETRIES = "retries"
ORIGINAL_ID = "original-id"
CREATION_TIME = "creation-time"
JOB_LIFETIME = "job-lifetime"
PROCESS_TIMEOUT = "process-timeout"
LAST_ERROR = "last-error"
# Set on a job moved to a failure queue: the queue it failed in (for replay).
ORIGINAL_QUEUE = "original-queue"
#: The keys every job's metadata has (``fresh_metadata``).
METADATA_KEYS = frozenset((RETRIES, ORIGINAL_ID, CREATION_TIME, JOB_LIFETIME, PROCESS_TIMEOUT))


def fresh_metadata(
    *,
    job_lifetime: int = DEFAULT_JOB_LIFETIME,
    process_timeout: int = DEFAULT_PROCESS_TIMEOUT,
    now: Optional[float] = None,
) -> dict[str, Any]:
    """Metadata of a job that has never run."""
    return {
        RETRIES: 0,
        ORIGINAL_ID: None,
        CREATION_TIME: int(now if now is not None else time.time()),
        JOB_LIFETIME: job_lifetime,
        PROCESS_TIMEOUT: process_timeout,
    }


@dataclass
class Job:
    """A unit of work: a JSON-serializable body bound for a named queue.

    ``id`` is set by the broker once the job is stored; ``metadata`` travels
    with the job (retry count, original id, creation time, limits).
    """

    body: Any
    queue: str
    metadata: dict[str, Any] = field(default_factory=dict)
    id: Optional[str] = None
    # Broker counters of the delivery this job came from (0 for new jobs).
    nacks: int = 0
    additional_deliveries: int = 0

    @property
    def retries(self) -> int:
        return int(self.metadata.get(RETRIES, 0) or 0)

    @property
    def original_id(self) -> Optional[str]:
        """The id of the first copy: retries are new broker jobs."""
        return self.metadata.get(ORIGINAL_ID) or self.id

    def encode(self) -> bytes:
        """The stored payload (the PHP Disqontrol envelope)."""
        return encode_envelope(self.body, self.metadata)


def encode_envelope(body: Any, metadata: dict[str, Any], *, allow_nan: bool = True) -> bytes:
    """Serialize body + metadata. Raises TypeError for a non-JSON body, and
    ValueError for NaN or an infinity unless ``allow_nan`` (Python writes
    them as ``NaN``, which no other JSON reader accepts: producers refuse
    them; a retry keeps what a job already holds)."""
    return json.dumps(
        {"body": body, "metadata": metadata}, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan
    ).encode("utf-8")


def loads_json(text: str) -> Any:
    """A body's JSON text, read as every other JSON reader does: Python's
    json takes NaN and Infinity, which PHP, jq and an http endpoint refuse;
    here they raise ValueError like any other text that is not JSON."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def usable_metadata(key: str, value: Any) -> bool:
    """Whether ``value`` is one the retry path can count with: a failure of a
    job whose ``creation-time`` is a date string raised in the consumer, on
    every delivery, so the job never reached its failure queue."""
    if key == ORIGINAL_ID:
        return value is None or isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if key == RETRIES:
        return isinstance(value, int) and value >= 0
    return math.isfinite(value) and value > 0


_PLAIN_NUMBERS = (int, float)  # exact types: json.loads makes no subclasses (nor bools here)


def _plainly_usable(metadata: dict[str, Any]) -> bool:
    """True when every key of ours is there and usable (see
    ``usable_metadata``), checked without a call per key: this runs once per
    job a consumer reserves, where that call cost more than the JSON
    decoding of a small job. False sends the caller to ``usable_metadata``,
    which decides."""
    try:
        retries, original_id = metadata[RETRIES], metadata[ORIGINAL_ID]
        created, lifetime, timeout = metadata[CREATION_TIME], metadata[JOB_LIFETIME], metadata[PROCESS_TIMEOUT]
    except KeyError:
        return False
    return (type(retries) is int and retries >= 0 and (original_id is None or type(original_id) is str)
            and type(created) in _PLAIN_NUMBERS and type(lifetime) in _PLAIN_NUMBERS
            and type(timeout) in _PLAIN_NUMBERS
            and 0 < created < math.inf and 0 < lifetime < math.inf and 0 < timeout < math.inf)


def decode_payload(
    payload: bytes | str,
    *,
    job_lifetime: int = DEFAULT_JOB_LIFETIME,
    process_timeout: int = DEFAULT_PROCESS_TIMEOUT,
) -> tuple[Any, dict[str, Any]]:
    """Read a stored payload into (body, metadata).

    A payload that is not our envelope (another library's job, or not JSON at
    all) is taken as the body itself, with fresh metadata, so it is still run
    rather than lost.
    """
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
    try:
        data = json.loads(text)
    except ValueError:
        return text, fresh_metadata(job_lifetime=job_lifetime, process_timeout=process_timeout)
    if isinstance(data, dict) and data.keys() == ENVELOPE_KEYS:
        metadata = data["metadata"]
        if metadata == []:
            metadata = {}  # PHP's json_encode writes an empty array as []
        if isinstance(metadata, dict):
            if not _plainly_usable(metadata):
                # e.g. a PHP job without them, or another library's "creation-time":
                # "2026-11-28T10:00:00Z": fresh values for the missing and the unusable
                fresh = fresh_metadata(job_lifetime=job_lifetime, process_timeout=process_timeout)
                kept = {k: v for k, v in metadata.items() if k not in METADATA_KEYS or usable_metadata(k, v)}
                metadata = {**fresh, **kept}
            return data["body"], metadata
    return data, fresh_metadata(job_lifetime=job_lifetime, process_timeout=process_timeout)
