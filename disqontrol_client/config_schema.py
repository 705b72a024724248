"""The JSON schema of disqontrol.yml (SPEC §3 plus our documented extensions).

Kept apart from the loader so the rules read as one table. jsonschema's own
messages already have the SPEC's form (``'x' is not one of [...]``); the
loader only prefixes them with the key path. Rules that span several keys
(min vs max processes, a queue in two groups, ...) live in the loader.
"""
from __future__ import annotations

from typing import Any

MAX_JOB_LIFETIME = 3932100  # s: Disque's maximum TTL (about 45 days)
MIN_JOB_BATCH = 1
MAX_JOB_BATCH = 99  # Disque's GETJOB COUNT is capped below 100 by the PHP Disqontrol
MAX_TCP_PORT = 65535

WORKER_TYPES = ("command", "inline_python_worker", "isolated_python_worker", "http")
FAILURE_STRATEGIES = ("retry", "retry_immediately")
HTTP_METHODS = ("post", "get", "POST", "GET")
HTTP_BODY_FORMATS = ("json", "form")
MISSED_RUNS = ("once", "skip", "catch_up")

#: Keys each worker type accepts, beyond ``type`` (the loader refuses others).
WORKER_KEYS: dict[str, tuple[str, ...]] = {
    "command": ("command",),
    "inline_python_worker": ("name",),
    "isolated_python_worker": ("name",),
    "http": ("address", "method", "headers", "body_format"),
}
#: The key each worker type cannot do without.
WORKER_REQUIRED: dict[str, str] = {
    "command": "command",
    "inline_python_worker": "name",
    "isolated_python_worker": "name",
    "http": "address",
}

_NON_EMPTY = {"type": "string", "minLength": 1}
# A queue name is one word: crontab lines and CLI arguments split on blanks.
_QUEUE_NAME = {"type": "string", "pattern": r"^\S+$"}
_PATH = _NON_EMPTY
_POSITIVE_NUMBER = {"type": "number", "exclusiveMinimum": 0}
_COUNT = {"type": "integer", "minimum": 0}

QUEUE_SETTINGS: dict[str, Any] = {
    "job_process_timeout": _POSITIVE_NUMBER,
    "job_lifetime": {"type": "integer", "minimum": 1, "maximum": MAX_JOB_LIFETIME},
    "failure_strategy": {"enum": list(FAILURE_STRATEGIES)},
    "max_retries": _COUNT,
    "failure_queue": _QUEUE_NAME,
    "backoff_scale": _POSITIVE_NUMBER,
}

CONSUMER_SETTINGS: dict[str, Any] = {
    "min_processes": {"type": "integer", "minimum": 1},
    "max_processes": {"type": "integer", "minimum": 1},
    "autoscale": {"type": "boolean"},
    "autoscale_idle_seconds": _POSITIVE_NUMBER,
    "job_batch": {"type": "integer", "minimum": MIN_JOB_BATCH, "maximum": MAX_JOB_BATCH},
    "max_jobs_per_process": _COUNT,
    "max_memory_per_process": _COUNT,
    "start_timeout": _POSITIVE_NUMBER,
}

WORKER: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(WORKER_TYPES)},
        "command": _NON_EMPTY,
        "name": _NON_EMPTY,
        "address": {"type": "string", "pattern": r"^https?://\S+$"},
        "method": {"enum": list(HTTP_METHODS)},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "body_format": {"enum": list(HTTP_BODY_FORMATS)},
    },
    # per-type required key: "'command' is a required property"
    "allOf": [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {"required": [key]},
        }
        for kind, key in WORKER_REQUIRED.items()
    ],
}

DISQUE_NODE: dict[str, Any] = {
    "type": "object",
    "required": ["host"],
    "additionalProperties": False,
    "properties": {
        "host": _NON_EMPTY,
        "port": {"type": "integer", "minimum": 1, "maximum": MAX_TCP_PORT},
        "password": {"type": ["string", "null"]},
    },
}

SCHEDULER: dict[str, Any] = {
    "type": "object",
    "required": ["crontab"],
    "additionalProperties": False,
    "properties": {
        "crontab": _PATH,
        "timezone": {"type": ["string", "null"]},
        "missed_runs": {"enum": list(MISSED_RUNS)},
        "missed_window": _COUNT,
        "catch_up_limit": _COUNT,
        "claim_store": _NON_EMPTY,
    },
}

DISQONTROL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "broker": _NON_EMPTY,
        "disque": {"type": "array", "minItems": 1, "items": DISQUE_NODE},
        "log_dir": _PATH,
        "run_dir": _PATH,
        "cache_dir": _PATH,  # PHP Disqontrol's; accepted and unused
        "control_socket_group": _NON_EMPTY,
        "queue_defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": QUEUE_SETTINGS,
        },
        "queues": {
            "type": "object",
            "propertyNames": _QUEUE_NAME,
            "additionalProperties": {
                "type": "object",
                "required": ["worker"],
                "additionalProperties": False,
                "properties": {"worker": WORKER, **QUEUE_SETTINGS},
            },
        },
        "consumer_defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": CONSUMER_SETTINGS,
        },
        "consumers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["queues"],
                "additionalProperties": False,
                "properties": {
                    "queues": {"type": "array", "minItems": 1, "uniqueItems": True, "items": _QUEUE_NAME},
                    **CONSUMER_SETTINGS,
                },
            },
        },
        "scheduler": SCHEDULER,
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["disqontrol"],
    "additionalProperties": False,
    "properties": {"disqontrol": DISQONTROL},
}
