"""Turning a parsed disqontrol.yml into a list of one-line problems.

First the JSON schema (every key, every type), then the rules that span keys.
Each line starts with the key path, e.g.
``disqontrol.consumers[0].queues[1]: 'foo' is not a configured queue; ...``.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from disqontrol_client.brokers import ENGINES
from disqontrol_client.errors import ConfigError
from disqontrol_client.config_schema import (
    SCHEMA,
    WORKER,
    WORKER_KEYS,
)

ROOT = "disqontrol"
ENGINE_ERROR_PREFIX = f"{ROOT}.broker: "  # how the engines' URL errors start
DEFAULT_DISQUE_PORT = 7711
SQLITE_PREFIXES = ("sqlite://", "sqlite:")  # longest first

_VALIDATOR = Draft202012Validator(SCHEMA)
# Plain-words explanations of the schema's regular expressions.
_PATTERN_MEANING = {
    r"^\S+$": "is not a valid queue name (one word, no blanks)",
    r"^https?://\S+$": "is not an http:// or https:// URL",
}


def key_path(parts: Iterable[Any]) -> str:
    """``disqontrol.consumers[0].queues`` from jsonschema's path parts."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def schema_errors(data: Any) -> list[str]:
    """Every schema violation, one line each, sorted by key path."""
    messages: set[str] = set()
    for error in _VALIDATOR.iter_errors(data):
        messages.update(_describe(error))
    flagged = {line.partition(": ")[0] for line in messages}
    messages.update(f"{where}: {value!r} is not a finite number" for where, value in _non_finite(data, [])
                    if where not in flagged)
    return sorted(messages)


def _non_finite(data: Any, where: list[Any]) -> Iterable[tuple[str, float]]:
    """YAML's ``.nan`` / ``.inf`` wherever they are: the schema's bounds let
    NaN through (every comparison with it is false), and an infinite timeout
    or scale breaks the broker's arithmetic far from the config."""
    if isinstance(data, float) and not math.isfinite(data):
        yield key_path(where), data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _non_finite(value, where + [key])
    elif isinstance(data, list):
        for n, value in enumerate(data):
            yield from _non_finite(value, where + [n])


def _describe(error: ValidationError) -> list[str]:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _allowed_keys(error.schema, error.instance)
        return [
            f"{key_path(where + [key])}: unknown key; allowed: {', '.join(allowed)}"
            for key in error.instance
            if key not in error.schema.get("properties", {})
        ]
    if error.validator == "pattern" and error.validator_value in _PATTERN_MEANING:
        return [f"{key_path(where)}: {error.instance!r} {_PATTERN_MEANING[error.validator_value]}"]
    return [f"{key_path(where)}: {error.message}"]


def _allowed_keys(schema: Mapping[str, Any], instance: Mapping[str, Any]) -> list[str]:
    """The keys allowed here; for a worker, those of its type."""
    kind = instance.get("type")
    if schema is WORKER and kind in WORKER_KEYS:
        return sorted(("type",) + WORKER_KEYS[kind])
    return sorted(schema.get("properties", {}))


# --- rules spanning keys (run once the schema holds) --------------------------

def cross_key_errors(
    section: Mapping[str, Any], consumer_defaults: Mapping[str, Any],
    queue_defaults: Mapping[str, Any] = {},  # noqa: B006 (read only)
) -> list[str]:
    """Problems no schema can see. ``section`` is the ``disqontrol:`` mapping;
    ``consumer_defaults`` and ``queue_defaults`` the built-in ones
    (overridden by the file's)."""
    errors: list[str] = []
    if "broker" in section and "disque" in section:
        errors.append(f"{ROOT}.disque: give either broker or disque, not both")
    if "broker" in section:
        errors.extend(_broker_errors(section["broker"]))
    errors.extend(_disque_errors(section.get("disque", ())))
    queues = section.get("queues") or {}
    for name, queue in queues.items():
        errors.extend(_queue_errors(name, queue, section.get("queue_defaults", {})))
    errors.extend(_failure_cycle_errors(queues, queue_defaults, section.get("queue_defaults", {})))
    merged_defaults = {**consumer_defaults, **section.get("consumer_defaults", {})}
    errors.extend(_process_errors(f"{ROOT}.consumer_defaults", merged_defaults))
    errors.extend(_consumer_errors(section.get("consumers", ()), queues, merged_defaults))
    timezone = (section.get("scheduler") or {}).get("timezone")
    if timezone:
        errors.extend(_timezone_errors(timezone))
    claim_store = (section.get("scheduler") or {}).get("claim_store")
    if claim_store:
        errors.extend(_broker_errors(claim_store, key="scheduler.claim_store"))
    return errors


def _broker_errors(url: str, key: str = "broker") -> list[str]:
    scheme = urlsplit(url).scheme
    if scheme not in ENGINES:
        return [
            f"{ROOT}.{key}: {url!r} has an unknown scheme {scheme!r}; "
            f"allowed: {', '.join(sorted(ENGINES))}"
        ]
    if scheme == "sqlite" and not sqlite_path(url):
        return [f"{ROOT}.{key}: {url!r} names no database file; e.g. sqlite:///var/lib/disqontrol/jobs.db"]
    try:
        _parse_engine_url(scheme, url)
    except ConfigError as exc:
        return [f"{ROOT}.{key}: {str(exc).removeprefix(ENGINE_ERROR_PREFIX)}"]
    return []


def _parse_engine_url(scheme: str, url: str) -> None:
    """The engine's own URL checks (redis prefix and options, disque
    options, sqlite's shards), made without connecting: otherwise --check and a reload passed
    a URL every consumer then refused at start, crash-looping. A sqlite
    path is checked as written (relative ones resolve against the config's
    directory later), so the message names the file the user meant."""
    if scheme in ("redis", "rediss"):
        from disqontrol_client.brokers.redis import RedisBroker  # noqa: PLC0415 (redis-py for redis users only)

        RedisBroker.from_url(url).close()
    elif scheme == "disque":
        from disqontrol_client.brokers.disque import parse_url  # noqa: PLC0415

        parse_url(url)
    elif scheme == "sqlite":
        from disqontrol_client.brokers.sqlite import URL_PREFIX, path_from_url  # noqa: PLC0415

        path_from_url(URL_PREFIX + url.partition(":")[2].removeprefix("//"))


def _disque_errors(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    passwords = [node.get("password") for node in nodes]
    return [
        f"{ROOT}.disque[{i}].password: every node must have the same password as node 0"
        for i, password in enumerate(passwords)
        if password != passwords[0]
    ]


def _queue_errors(name: str, queue: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    where = f"{ROOT}.queues.{name}"
    errors = []
    worker = queue["worker"]
    allowed = ("type",) + WORKER_KEYS[worker["type"]]
    for key in worker:
        if key not in allowed:
            errors.append(
                f"{where}.worker.{key}: not a key of a {worker['type']} worker; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
    failure_queue = queue.get("failure_queue", defaults.get("failure_queue"))
    if failure_queue == name:
        errors.append(f"{where}.failure_queue: {name!r} is the queue itself; name another queue")
    return errors


def _failure_cycle_errors(queues: Mapping[str, Mapping[str, Any]], built_in: Mapping[str, Any],
                          file_defaults: Mapping[str, Any]) -> list[str]:
    """A failure queue that is itself a configured queue passes its failed
    jobs on to its own failure queue: a chain that comes back to where it
    started (a -> b -> a) never parks a job that keeps failing. A queue
    naming itself (there or in the file's queue_defaults) is _queue_errors'
    message; one that does so by the built-in default only (a queue named
    ``failed-jobs``) is this one's."""
    defaults = {**built_in, **file_defaults}

    def next_of(name: str) -> Any:
        return queues[name].get("failure_queue", defaults.get("failure_queue"))

    errors, reported = [], set()
    for start in queues:
        chain = [start]
        while next_of(chain[-1]) in queues and next_of(chain[-1]) not in chain:
            chain.append(next_of(chain[-1]))
        if next_of(chain[-1]) != start or frozenset(chain) in reported:
            continue
        if chain == [start] and queues[start].get("failure_queue", file_defaults.get("failure_queue")) == start:
            continue
        reported.add(frozenset(chain))
        path = " -> ".join(chain + [start])
        errors.append(
            f"{ROOT}.queues.{start}.failure_queue: failed jobs would go round in a circle ({path}) and a job "
            "that keeps failing would never be parked; end the chain in a queue that is not configured "
            f"as one, or give {chain[-1]!r} another failure_queue"
        )
    return errors


def _process_errors(where: str, settings: Mapping[str, Any]) -> list[str]:
    low, high = settings["min_processes"], settings["max_processes"]
    if low > high:
        return [f"{where}: min_processes ({low}) is greater than max_processes ({high})"]
    return []


def _consumer_errors(
    consumers: Sequence[Mapping[str, Any]], queues: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[str]:
    errors: list[str] = []
    owner: dict[str, str] = {}
    configured = ", ".join(sorted(queues)) or "(none)"
    for i, consumer in enumerate(consumers):
        where = f"{ROOT}.consumers[{i}]"
        errors.extend(_process_errors(where, {**defaults, **consumer}))
        for j, queue in enumerate(consumer["queues"]):
            if queue not in queues:
                errors.append(f"{where}.queues[{j}]: {queue!r} is not a configured queue; configured: {configured}")
            elif queue in owner:
                errors.append(
                    f"{where}.queues[{j}]: {queue!r} is already consumed by {owner[queue]}; "
                    "a queue belongs to one consumer group"
                )
            else:
                owner[queue] = where
    return errors


def _timezone_errors(name: str) -> list[str]:
    import zoneinfo  # noqa: PLC0415 (only configs with a scheduler need it)

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [f"{ROOT}.scheduler.timezone: {name!r} is not a known time zone (e.g. 'Europe/Prague', 'UTC')"]
    return []


# --- broker URLs ---------------------------------------------------------------

def sqlite_path(url: str) -> str:
    """The file part of a sqlite URL: after ``sqlite://`` or ``sqlite:``, before ``?``."""
    for prefix in SQLITE_PREFIXES:
        if url.startswith(prefix):
            return url[len(prefix):].partition("?")[0]
    return ""


def resolve_broker_url(url: str, base: str | os.PathLike[str]) -> str:
    """An absolute ``sqlite:///abs/file.db`` for a relative sqlite path; other URLs as given."""
    if urlsplit(url).scheme != "sqlite":
        return url
    path = sqlite_path(url)
    query = url.partition("?")[2]
    absolute = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
    return f"sqlite://{absolute}" + (f"?{query}" if query else "")


def disque_url(nodes: Sequence[Mapping[str, Any]]) -> str:
    """The PHP-style node list as ``disque://[:password@]host:port,host:port``."""
    password = nodes[0].get("password")
    auth = f":{quote(password, safe='')}@" if password else ""
    hosts = []
    for node in nodes:
        host = node["host"]
        host = f"[{host}]" if ":" in host else host  # IPv6
        hosts.append(f"{host}:{node.get('port', DEFAULT_DISQUE_PORT)}")
    return f"disque://{auth}{','.join(hosts)}"


def default_broker_url(base: str | os.PathLike[str]) -> str:
    return f"sqlite://{os.path.join(base, 'disqontrol.db')}"

