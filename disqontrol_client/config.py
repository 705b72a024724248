"""Reading and validating disqontrol.yml into frozen dataclasses.

SHAPE ONLY (skeleton): the loader/validator is filled in by the foundation
work. Every other module depends only on the dataclasses below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from disqontrol_client.errors import ConfigError

ENV_CONFIG = "DISQONTROL_CONFIG"
LOOKUP_PATHS = (Path("disqontrol.yml"), Path("/etc/disqontrol/disqontrol.yml"))

WORKER_TYPES = ("command", "inline_python_worker", "isolated_python_worker", "http")
FAILURE_STRATEGIES = ("retry", "retry_immediately")
MAX_JOB_LIFETIME = 3932100
FAILURE_QUEUE_TTL = 3932100


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
    job_batch: int = 10
    max_jobs_per_process: int = 0  # 0 = no limit
    max_memory_per_process: int = 0  # MiB of RSS, 0 = no limit

    @property
    def name(self) -> str:
        """The group's name in logs, titles and status: its queues joined by '+'."""
        return "+".join(self.queues)


@dataclass(frozen=True)
class SchedulerConfig:
    crontab: Path
    timezone: Optional[str] = None  # None: the system's
    missed_runs: str = "once"  # once | skip | catch_up
    missed_window: int = 3600  # s: how far back "once"/"catch_up" look
    catch_up_limit: int = 60  # max missed minutes added per entry by catch_up


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


def find_config_path(explicit: Optional[str | os.PathLike[str]] = None) -> Path:
    """SPEC §2 lookup: --config, $DISQONTROL_CONFIG, ./disqontrol.yml, /etc/disqontrol/disqontrol.yml."""
    raise NotImplementedError


def load_config(path: Optional[str | os.PathLike[str]] = None) -> Config:
    """Find, read and validate the config; ConfigError names the key path."""
    raise NotImplementedError
