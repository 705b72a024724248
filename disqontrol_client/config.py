"""Reading and validating disqontrol.yml into frozen dataclasses.

Every key is checked against the JSON schema of ``config_schema`` and by the
cross-key rules below; each problem becomes one line naming its key path
(``disqontrol.queues.pic-resize.worker.type: 'inline_php' is not one of
[...]``), all of them in one ConfigError. Relative paths are resolved against
the config file's directory, so the result does not depend on the cwd.

yaml and jsonschema (~10 MiB resident) are imported by the functions that
read and validate, not by this module: the daemon's master and consumers
use the dataclasses only, and every MiB a consumer carries makes each fork
of an isolated job slower (disqontrold.reload validates in a child).
"""
from __future__ import annotations

import binascii
import functools
import os
import shlex
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from disqontrol_client.config_schema import (  # noqa: F401 (re-exported)
    FAILURE_STRATEGIES,
    MAX_JOB_LIFETIME,
    WORKER_TYPES,
)
from disqontrol_client.errors import ConfigError
from disqontrol_client.frozen import FrozenDict, deep_freeze

ENV_CONFIG = "DISQONTROL_CONFIG"
YAML_MERGE_TAG = "tag:yaml.org,2002:merge"
LOOKUP_PATHS = (Path("disqontrol.yml"), Path("/etc/disqontrol/disqontrol.yml"))
FAILURE_QUEUE_TTL = 3932100
GROUP_NAME_CHARS = 120  # a group's name past this shows its first queues, how many more, a CRC
# Beside the config file when not set: a checkout or a /opt install keeps its
# state together; a system install sets /var/log/disqontrol and /run/disqontrol.
DEFAULT_LOG_DIR = "log"
DEFAULT_RUN_DIR = "run"


@dataclass(frozen=True)
class WorkerConfig:
    type: str  # one of WORKER_TYPES
    command: Optional[str] = None  # command
    name: Optional[str] = None  # inline / isolated python: WORKERS name or "module:callable"
    address: Optional[str] = None  # http
    method: str = "post"  # http: post | get
    headers: Mapping[str, str] = field(default_factory=dict)  # http
    body_format: str = "json"  # http: json | form


@dataclass(frozen=True)
class QueueConfig:
    name: str
    worker: WorkerConfig
    job_process_timeout: float = 600
    job_lifetime: int = 2592000
    failure_strategy: str = "retry"
    max_retries: int = 37
    failure_queue: str = "failed-jobs"
    # Multiplies every retry delay of SPEC §6 (1.0 = the real schedule). Lets
    # tests and impatient users shrink the schedule without touching time.
    backoff_scale: float = 1.0


@dataclass(frozen=True)
class ConsumerConfig:
    queues: tuple[str, ...]
    min_processes: int = 1
    max_processes: int = 5
    autoscale: bool = True
    autoscale_idle_seconds: float = 30.0  # s of spare capacity before autoscaling removes a process
    job_batch: int = 10
    max_jobs_per_process: int = 0  # 0 = no limit
    max_memory_per_process: int = 0  # MiB of RSS, 0 = no limit
    start_timeout: float = 600.0  # s a consumer may start (imports, setup_environment()) before it is hung

    @functools.cached_property
    def name(self) -> str:
        """The group's name in logs, titles and status: its queues joined by
        '+'. Past GROUP_NAME_CHARS, the first queues that fit, how many more
        and a CRC-32 of them all (a queue is in one group only, so the first
        names it; the digest tells a group whose later queues changed from
        the one it was): 10,000 per-tenant queues made a 150 KB name, which
        cut the state and job id off every consumer's process title, made
        one status line 260 KB and every group metric's label 150 KB."""
        joined = "+".join(self.queues)
        if len(joined) <= GROUP_NAME_CHARS:
            return joined
        shown: list[str] = []
        size = 0
        for queue in self.queues:
            if shown and size + len(queue) > GROUP_NAME_CHARS:
                break
            shown.append(queue)
            size += len(queue) + 1
        digest = binascii.crc32(joined.encode())  # not hashlib: OpenSSL stays out of the processes that fork jobs
        return f"{'+'.join(shown)}+...{len(self.queues) - len(shown)}-more-{digest:08x}"


@dataclass(frozen=True)
class SchedulerConfig:
    crontab: Path
    timezone: Optional[str] = None  # None: the system's
    missed_runs: str = "once"  # once | skip | catch_up
    missed_window: int = 3600  # s: how far back "once"/"catch_up" look
    catch_up_limit: int = 60  # max missed minutes added per entry by catch_up
    # Broker URL holding the scheduler's claims (None: the broker itself);
    # lets a disque broker, which has no claim(), be scheduled once per minute.
    claim_store: Optional[str] = None


@dataclass(frozen=True)
class Config:
    path: Optional[Path]  # the file it was read from (absolute), None if built in code
    broker: str  # URL with relative sqlite paths resolved, e.g. sqlite:///abs/disqontrol.db
    log_dir: Path
    run_dir: Path
    queues: Mapping[str, QueueConfig]
    consumers: tuple[ConsumerConfig, ...]  # includes a default group for each unlisted queue
    scheduler: Optional[SchedulerConfig] = None
    control_socket_group: Optional[str] = None  # socket mode 0660 with this group, else 0600
    raw: Mapping[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> QueueConfig:
        """The queue's config; a ConfigError naming the known queues otherwise."""
        try:
            return self.queues[name]
        except KeyError:
            raise ConfigError(
                f"unknown queue {name!r}; configured queues: {', '.join(sorted(self.queues)) or '(none)'}"
            ) from None

    @property
    def failure_queues(self) -> frozenset[str]:
        return frozenset(q.failure_queue for q in self.queues.values())




# --- finding the file -------------------------------------------------------

def find_config_path(explicit: Optional[str | os.PathLike[str]] = None) -> Path:
    """SPEC §2 lookup: --config, $DISQONTROL_CONFIG, ./disqontrol.yml, /etc/disqontrol/disqontrol.yml.

    A path the user named (``--config`` or the variable) must exist: falling
    through to another file would run with a config nobody asked for.
    """
    if explicit is not None and str(explicit) != "":
        return _existing(Path(explicit), "--config")
    from_env = os.environ.get(ENV_CONFIG)
    if from_env:
        return _existing(Path(from_env), f"${ENV_CONFIG}")
    for candidate in LOOKUP_PATHS:
        if candidate.is_file():
            return candidate.absolute()
    looked = ", ".join(str(p.absolute()) for p in LOOKUP_PATHS)
    raise ConfigError(
        f"no config file found; looked at --config (not given), ${ENV_CONFIG} (not set), {looked}; "
        "pass --config PATH"
    )


def _existing(path: Path, source: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"{source}: {str(path)!r} is not a readable file")
    return path.absolute()


# --- reading and validating -------------------------------------------------

def load_config(path: Optional[str | os.PathLike[str]] = None) -> Config:
    """Find, read and validate the config; ConfigError names the key path."""
    import yaml  # noqa: PLC0415 (see the module docstring)

    found = find_config_path(path)
    try:
        text = found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{found}: cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader(fast=True))  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        # Again with PyYAML's own parser: its messages name the culprit ('\t', not
        # "character"), and it reads configs libyaml refuses that it read before
        # libyaml did (a literal block whose first line opens with a tab).
        try:
            data = yaml.load(text, Loader=_unique_key_loader(fast=False))  # noqa: S506
        except yaml.YAMLError as problem:
            raise ConfigError(f"{found}: not valid YAML: {_yaml_problem(problem)}") from None
    if data is None:
        raise ConfigError(f"{found}: is empty; expected a 'disqontrol:' mapping")
    return parse_config(data, base_dir=found.parent, path=found)


def _unique_key_loader(fast: bool) -> type:
    """A SafeLoader that refuses a key given twice in one mapping. PyYAML
    keeps the last silently: a second ``queues:`` (or a queue pasted twice)
    would replace the first without a word. Merge keys (``<<: *defaults``)
    may still be overridden, as YAML intends. ``fast``: on libyaml's parser
    when PyYAML has it: a config of 10,000 queues parsed in 0.7 s of CPU
    instead of 2.6 s (the daemon's start and reload, every disqontrolctl
    command)."""
    import yaml  # noqa: PLC0415

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader) if fast else yaml.SafeLoader

    class UniqueKeyLoader(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            first_line: dict[str, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == YAML_MERGE_TAG:
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first_line:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key_node.value!r} (first at line {first_line[key_node.value]})",
                        problem_mark=key_node.start_mark)
                first_line[key_node.value] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's error on one line: "line 2, column 1: found character ..."."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def parse_config(data: Any, *, base_dir: str | os.PathLike[str], path: Optional[Path] = None) -> Config:
    """Validate an already parsed mapping (``{"disqontrol": {...}}``).

    ``base_dir`` is what relative paths are relative to (the config file's
    directory). Used by ``load_config`` and by code that builds configs in
    memory (tests, embedding applications).
    """
    from disqontrol_client import config_checks  # noqa: PLC0415 (jsonschema: see the module docstring)

    base = Path(os.path.abspath(base_dir))
    messages = config_checks.schema_errors(data)
    if not messages:
        messages = config_checks.cross_key_errors(data["disqontrol"], _defaults(ConsumerConfig),
                                                  _defaults(QueueConfig))
    if messages:
        raise ConfigError("\n".join(messages))
    return _build(data, base, path)


# --- building the dataclasses -----------------------------------------------

def _defaults(cls: type) -> dict[str, Any]:
    """The dataclass's own defaults: the single source of the SPEC §3 defaults."""
    return {
        f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    }


def _resolve(base: Path, value: str) -> Path:
    return Path(os.path.normpath(base / Path(value).expanduser()))


def resolve_command(command: str, base: Path) -> str:
    """The command line with a relative program path made absolute against
    ``base`` (the config's directory), so ``../examples/resize_pic.py`` means
    the same under ``--daemonize`` (cwd /) or systemd's WorkingDirectory.

    Only a program containing a ``/`` is touched: a bare name (``php``) is
    looked up on PATH. The arguments are kept as written. A line shlex cannot
    split is returned unchanged: the worker check names the problem."""
    lexer = shlex.shlex(command, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # as shlex.split: '#' is an ordinary character
    try:
        program = lexer.get_token()
    except ValueError:  # unbalanced quotes
        return command
    if not program or "/" not in program:
        return command
    expanded = os.path.expanduser(program)
    if os.path.isabs(expanded) and expanded == program:
        return command
    rest = command[lexer.instream.tell():]
    resolved = shlex.quote(str(_resolve(base, program)))
    return f"{resolved} {rest}" if rest else resolved


def _build(data: Mapping[str, Any], base: Path, path: Optional[Path]) -> Config:
    section = data["disqontrol"]
    queue_defaults = {**_defaults(QueueConfig), **section.get("queue_defaults", {})}
    queues = {
        name: QueueConfig(
            name=name,
            worker=_worker(queue["worker"], base),
            **{**queue_defaults, **{k: v for k, v in queue.items() if k != "worker"}},
        )
        for name, queue in (section.get("queues") or {}).items()
    }
    consumer_defaults = {**_defaults(ConsumerConfig), **section.get("consumer_defaults", {})}
    consumers = [
        ConsumerConfig(**{**consumer_defaults, **consumer, "queues": tuple(consumer["queues"])})
        for consumer in section.get("consumers", ())
    ]
    listed = {name for consumer in consumers for name in consumer.queues}
    consumers += [
        ConsumerConfig(**{**consumer_defaults, "queues": (name,)}) for name in queues if name not in listed
    ]
    _refuse_shared_names(consumers, len(section.get("consumers", ())))
    return Config(
        path=path,
        broker=_broker(section, base),
        log_dir=_resolve(base, section.get("log_dir", DEFAULT_LOG_DIR)),
        run_dir=_resolve(base, section.get("run_dir", DEFAULT_RUN_DIR)),
        queues=FrozenDict(queues),
        consumers=tuple(consumers),
        scheduler=_scheduler(section.get("scheduler"), base),
        control_socket_group=section.get("control_socket_group"),
        raw=deep_freeze(data),
    )


def _refuse_shared_names(groups: Sequence[ConsumerConfig], listed: int) -> None:
    """A group's name is its own: the master scales, retires and reports
    groups by name, so two groups named alike (queues with a '+': group
    ``[a, b]`` and queue ``a+b``'s own group are both ``a+b``) would have
    the autoscaler or SIGTTOU retire one group's consumers for the other's."""
    first: dict[str, int] = {}
    for index, group in enumerate(groups):
        other = first.setdefault(group.name, index)
        if other != index:
            raise ConfigError(
                f"{_group_key(groups, index, listed)}: the group's name {group.name!r} (its queues joined by '+') "
                f"is also that of {_group_key(groups, other, listed)}; a group's name must be its own: put these "
                "queues in one group, or rename a queue with a '+' in its name")


def _group_key(groups: Sequence[ConsumerConfig], index: int, listed: int) -> str:
    """The config key of a group: its consumers entry, or its one queue's (a default group)."""
    if index < listed:
        return f"disqontrol.consumers[{index}]"
    return f"disqontrol.queues.{groups[index].queues[0]}"


def _worker(raw: Mapping[str, Any], base: Path) -> WorkerConfig:
    settings = dict(raw)
    if settings.get("command"):
        settings["command"] = resolve_command(settings["command"], base)
    if "method" in settings:
        settings["method"] = settings["method"].lower()
    settings["headers"] = FrozenDict(settings.get("headers", {}))  # hashable, unlike the default {}
    return WorkerConfig(**settings)


def _broker(section: Mapping[str, Any], base: Path) -> str:
    from disqontrol_client import config_checks  # noqa: PLC0415

    if "disque" in section:
        return config_checks.disque_url(section["disque"])
    if "broker" in section:
        return config_checks.resolve_broker_url(section["broker"], base)
    return config_checks.default_broker_url(base)


def _scheduler(raw: Optional[Mapping[str, Any]], base: Path) -> Optional[SchedulerConfig]:
    if raw is None:
        return None
    settings = {**raw, "crontab": _resolve(base, raw["crontab"])}
    if raw.get("claim_store"):
        from disqontrol_client import config_checks  # noqa: PLC0415

        settings["claim_store"] = config_checks.resolve_broker_url(raw["claim_store"], base)
    return SchedulerConfig(**settings)
