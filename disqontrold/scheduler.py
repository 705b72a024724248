"""The scheduler: adds each due crontab run to its queue exactly once per
minute, however many schedulers run on one broker and whenever one crashes.

Exactly once comes from the broker, not from this process: a pass hands the
broker every due run at once, ``Broker.add_claimed``: for run ``M`` of entry
``E`` it takes the claim ``sched:E:M`` (the first caller wins until the
claim expires) and adds the job only where it won. On sqlite and redis
(``atomic_claims``) the claim and its job commit together, so a crash
leaves both or neither. With a separate ``claim_store`` (or an engine without
atomic claims) the claims come first and the add second: a scheduler dying
in between loses those runs (at most once, never twice), logged as
``schedule_lost`` when it sees the failure.

The same class serves the master's built-in scheduler (``tick`` on every
deadline) and the one-shot of the system cron (``run_due`` once). Neither
keeps a local record: a fresh scheduler looks back ``missed_window`` seconds
and the claims tell it what already ran.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.broker import Broker, NewJob, claim_then_add
from disqontrol_client.config import Config, SchedulerConfig
from disqontrol_client.errors import BrokerError, BrokerUnavailable, ClaimedNotAdded, ConfigError
from disqontrol_client.job import Job
from disqontrol_client.submit import new_job_for
from disqontrol_client.logfmt import log_event
from disqontrold.cron_due import (
    DEFAULT_SETTINGS,
    ON_TIME_GRACE,
    check_settings,
    due_runs,
    fire_times,
    next_fire_time,
    resolve_timezone,
)
from disqontrold.crontab import CrontabEntry, load_crontab

logger = logging.getLogger("disqontrold.scheduler")

# Metadata key: the run (unix seconds of its cron minute) a scheduled job is for.
# Workers can read it; extra metadata keys survive retries (SPEC §4).
SCHEDULED_TIME = "scheduled-time"
CLAIM_PREFIX = "sched"
# A claim outlives the furthest look-back by this much, so schedulers whose
# clocks disagree by up to a few minutes still see each other's claims.
CLAIM_MARGIN = 300.0
# The master wakes at least this often, so a change of the wall clock
# (NTP step, manual date) is noticed within a minute.
MAX_SLEEP = 60.0
# Test hook, read only here: "SCALE" or "SCALE@ORIGIN". The scheduler's clock
# runs SCALE times faster than the wall clock from ORIGIN (unix seconds;
# default: when the scheduler starts), so 60 is a cron minute every real
# second; schedulers given one ORIGIN agree on the time. Never set it in
# production; the integration tests use it to see minutes pass in seconds.
TIME_SCALE_ENV = "DISQONTROL_SCHEDULER_TIME_SCALE"


class Clock:
    """The scheduler's time, in unix seconds: the wall clock, or (test hook)
    the wall clock sped up ``scale`` times from the moment it was made."""

    def __init__(self, scale: float = 1.0, origin: Optional[float] = None) -> None:
        if not scale > 0:
            raise ConfigError(f"{TIME_SCALE_ENV}: {scale!r} is not a number > 0")
        self.scale = scale
        self.origin = time.time() if origin is None else origin

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Clock":
        text = environ.get(TIME_SCALE_ENV, "")
        if not text:
            return cls()
        scale, _, origin = text.partition("@")
        try:
            return cls(float(scale), float(origin) if origin else None)
        except ValueError:
            raise ConfigError(
                f"{TIME_SCALE_ENV}: {text!r} is not SCALE or SCALE@ORIGIN (numbers, SCALE > 0)"
            ) from None

    def now(self) -> float:
        return self.origin + (time.time() - self.origin) * self.scale

    def to_real(self, moment: float) -> float:
        """A scheduler-time instant as a ``time.time()`` instant."""
        return self.origin + (moment - self.origin) / self.scale

    def real_duration(self, seconds: float) -> float:
        return seconds / self.scale


@dataclass(frozen=True)
class Run:
    """One run this scheduler handled: added (``job_id``) or found claimed."""

    entry: CrontabEntry
    time: float  # unix seconds of the cron minute
    job_id: Optional[str]  # None: another scheduler had claimed it


# A broker, or a way to open one: then each pass opens its own connection and
# closes it, so a forking master holds no connection its children inherit.
BrokerSource = Union[Broker, Callable[[], Broker]]


def _connect(source: BrokerSource, connections: ExitStack) -> Broker:
    """The connection itself, or a new one from a factory, closed with ``connections``."""
    if hasattr(source, "claim"):  # a connection, not a factory
        return source  # type: ignore[return-value]
    broker = source()  # type: ignore[operator]
    connections.callback(broker.close)
    return broker


def claim_key(entry: CrontabEntry, run_time: float) -> str:
    """``sched:<entry key>:<UTC minute>``: readable in redis-cli, the same on
    every host whatever its zone."""
    minute = time.strftime("%Y%m%dT%H%MZ", time.gmtime(run_time))
    return f"{CLAIM_PREFIX}:{entry.key}:{minute}"


def iso(moment: Optional[float], zone: tzinfo = timezone.utc) -> Optional[str]:
    return None if moment is None else datetime.fromtimestamp(moment, zone).isoformat()


def load_entries(config: Config, crontab: Optional[os.PathLike[str] | str] = None) -> list[CrontabEntry]:
    """Validate the crontab of ``config`` (or the one given) against its queues:
    what ``--check``, a reload and the one-shot all run first."""
    path = crontab if crontab is not None else (config.scheduler.crontab if config.scheduler else None)
    if path is None:
        raise ConfigError("disqontrol.scheduler.crontab: no crontab is configured; give --crontab")
    return load_crontab(path, queues=list(config.queues))


class Scheduler:
    """Adds due crontab runs to the broker. Not thread-safe; one per process."""

    def __init__(
        self,
        entries: Sequence[CrontabEntry],
        broker: BrokerSource,
        settings: SchedulerConfig = DEFAULT_SETTINGS,
        *,
        config: Optional[Config] = None,
        clock: Optional[Clock] = None,
        now: Optional[float] = None,
        claims: Optional[BrokerSource] = None,
    ) -> None:
        check_settings(settings)
        self.broker = broker
        # Where claims go: given here, else settings.claim_store, else the broker.
        self._given_claims = claims
        self.claims: Optional[BrokerSource] = None
        self.config = config
        self.clock = clock or Clock()
        self.entries: list[CrontabEntry] = []
        self.settings = settings
        self.zone: tzinfo = timezone.utc
        self.configure(entries, settings, config)
        start = self.clock.now() if now is None else now
        # No local memory: look back as far as the policy may add missed runs.
        self.last_checked = start - max(settings.missed_window, ON_TIME_GRACE)
        self.last_added: dict[str, Run] = {}

    @classmethod
    def from_config(cls, config: Config, broker: BrokerSource, **kwargs: Any) -> "Scheduler":
        if config.scheduler is None:
            raise ConfigError("disqontrol.scheduler: not configured; add 'scheduler: {crontab: PATH}'")
        return cls(load_entries(config), broker, config.scheduler, config=config, **kwargs)

    def configure(
        self, entries: Sequence[CrontabEntry], settings: SchedulerConfig, config: Optional[Config]
    ) -> None:
        """Take new entries and settings (a reload). Validates everything before
        changing anything, so a refused reload leaves the old ones running."""
        check_settings(settings)
        zone = resolve_timezone(settings.timezone)
        self.entries, self.settings, self.config, self.zone = list(entries), settings, config, zone
        store = settings.claim_store
        self.claims = self._given_claims if store is None else (lambda: open_broker(store))

    def reload(self, config: Config) -> None:
        """Re-read the crontab of a new config; ConfigError refuses the reload."""
        if config.scheduler is None:
            raise ConfigError("disqontrol.scheduler: not configured in the new config")
        self.configure(load_entries(config), config.scheduler, config)
        log_event(logger, "scheduler_reloaded", entries=len(self.entries), crontab=config.scheduler.crontab)

    # -- the master's hooks ------------------------------------------------

    def next_deadline(self) -> float:
        """When ``tick`` should next run, as a ``time.time()`` instant: the
        earliest next run of any entry, but at most ``MAX_SLEEP`` away."""
        horizon = time.time() + MAX_SLEEP
        if not self.entries:
            return horizon
        upcoming = min(next_fire_time(e.expression, self.zone, self.last_checked) for e in self.entries)
        return min(self.clock.to_real(upcoming), horizon)

    def tick(self, now: Optional[float] = None) -> list[Run]:
        """``run_due`` for the master's loop: a broker failure is logged, not
        raised (the runs it missed follow ``missed_runs`` at the next tick)."""
        try:
            return self.run_due(now)
        except (BrokerUnavailable, BrokerError) as error:
            log_event(logger, "scheduler_broker_error", logging.ERROR, error=error)
            return []

    def status(self) -> list[dict[str, Any]]:
        """Every entry with its next run and its last one, for ``disqontrolctl status``."""
        rows = []
        for entry in self.entries:
            previous = fire_times(entry.expression, self.zone, float("-inf"), self.last_checked, 1)
            added = self.last_added.get(entry.key)
            rows.append({
                "entry": entry.source,
                "key": entry.key,
                "schedule": entry.schedule,
                "queue": entry.queue,
                "body": entry.body,
                "next_run": iso(next_fire_time(entry.expression, self.zone, self.last_checked), self.zone),
                "last_run": iso(previous[0] if previous else None, self.zone),
                "last_added": iso(added.time, self.zone) if added else None,
                "last_job_id": added.job_id if added else None,
            })
        return rows

    # -- the work ----------------------------------------------------------

    def run_due(self, now: Optional[float] = None) -> list[Run]:
        """Claim and add every run due since the last pass; returns the runs
        handled. Raises BrokerUnavailable / BrokerError (then ``last_checked``
        stays, so the next pass sees the same runs again)."""
        now = self.clock.now() if now is None else now
        due = [
            (entry, run_time)
            for entry in self.entries
            for run_time in due_runs(entry, self.last_checked, now, self.settings, self.zone)
        ]
        if not due:
            self.last_checked = now
            return []
        with ExitStack() as connections:
            broker = _connect(self.broker, connections)
            claims = None if self.claims is None else _connect(self.claims, connections)
            ids = self._add_claimed(broker, claims, due)
        runs = [Run(entry, run_time, job_id) for (entry, run_time), job_id in zip(due, ids)]
        for run in runs:
            if run.job_id is not None:
                self.last_added[run.entry.key] = run
                log_event(
                    logger, "schedule_added", job=run.job_id, queue=run.entry.queue,
                    run=iso(run.time), entry=run.entry.source, late=round(now - run.time, 3),
                )
            else:
                log_event(logger, "schedule_already_claimed", logging.DEBUG,
                          queue=run.entry.queue, run=iso(run.time), entry=run.entry.source)
        self.last_checked = now
        return runs

    def _add_claimed(
        self, broker: Broker, claims: Optional[Broker], due: list[tuple[CrontabEntry, float]]
    ) -> list[Optional[str]]:
        """Claim each run and add the jobs of those won: one round trip, one
        transaction where the broker has ``atomic_claims``. With a separate
        claim store (or a broker without atomic claims) a failure between the
        claims and the add loses the claimed runs: each is logged, then raised."""
        lookback = max(self.settings.missed_window, ON_TIME_GRACE)
        ttl = self.clock.real_duration(lookback + CLAIM_MARGIN)
        pairs = [(claim_key(entry, run_time), self._new_job(entry, run_time)) for entry, run_time in due]
        try:
            if claims is None:
                return broker.add_claimed(pairs, ttl)
            return claim_then_add(claims, broker, pairs, ttl)
        except NotImplementedError as error:
            holder = claims if claims is not None else broker
            raise ConfigError(
                f"disqontrol.broker: the scheduler needs Broker.claim() to add each run once, "
                f"and {type(holder).__name__} refuses it ({error}); use a sqlite or redis broker, "
                "or put the claims in one: disqontrol.scheduler.claim_store: redis://... or sqlite://..."
            ) from None
        except ClaimedNotAdded as error:
            lost = set(error.keys)
            for (entry, run_time), (key, _) in zip(due, pairs):
                if key in lost:
                    log_event(logger, "schedule_lost", logging.ERROR, queue=entry.queue,
                              run=iso(run_time), entry=entry.source, error=error.__cause__ or error)
            raise

    def _new_job(self, entry: CrontabEntry, run_time: float) -> NewJob:
        """The job of one run: the producers' envelope and limits for its queue
        (``submit.new_job_for``), plus the run it stands for."""
        queue = self.config.queue(entry.queue) if self.config is not None else None
        job = Job(entry.body, entry.queue, metadata={SCHEDULED_TIME: int(run_time)})
        return new_job_for(job, queue)


def attach_to_master(master: Any) -> None:
    """The daemon's plug-in entry point (disqontrold.cli.PLUGINS): run the
    built-in scheduler from the master's loop."""
    from disqontrold.scheduler_master import attach  # noqa: PLC0415 (master-only)

    attach(master)
