"""The built-in scheduler inside the master's loop (never in the consumers).

Plugged in through the master's timer: the timer callback runs at the next
run of any entry, and at least every ``POLL`` seconds so that a reload
(``master.config`` replaced) takes effect at once. The crontab of a new
config is validated before the reload is taken (``disqontrold.reload``);
should it break in between, the old entries keep running and the error is
logged. The scheduler stops adding jobs as soon as the master stops.

``disqontrold.scheduler`` (croniter, ~5 MiB resident) is imported only when
a config has a scheduler: whatever the master imports, every consumer it
forks carries, and the isolated worker's forks grow slower with it.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional

from disqontrol_client.brokers import Broker, open_broker
from disqontrol_client.config import Config
from disqontrol_client.errors import BrokerError, BrokerUnavailable, ConfigError
from disqontrol_client.logfmt import log_event

if TYPE_CHECKING:
    from disqontrold.scheduler import Clock, Scheduler

logger = logging.getLogger("disqontrold.scheduler")

# s: the longest the timer waits between looks at the master's config; the
# master's own loop wakes this often anyway, so it costs nothing.
POLL = 1.0
STATUS_KEY = "scheduler"
BROKER_RETRY = 5.0  # s between two passes while the broker cannot be reached
STEP_SLACK = 1.0  # s a deadline may lie past its furthest before the clock counts as stepped back


class MasterScheduler:
    """Keeps a ``Scheduler`` in step with the master's current config."""

    def __init__(self, master: Any, clock: Optional[Clock] = None) -> None:
        self.master = master
        self.clock = clock  # None: from the environment, once a scheduler starts
        self.config: Optional[Config] = None
        self.scheduler: Optional[Scheduler] = None
        self.deadline = 0.0  # time.time() of the next tick

    def _connect(self) -> Broker:
        return open_broker(self.master.config.broker)

    def _follow(self, config: Config) -> None:
        """Start, reload or stop the scheduler for a new config."""
        self.config = config
        self.deadline = 0.0
        if config.scheduler is None:
            if self.scheduler is not None:
                log_event(logger, "scheduler_stopped", reason="no scheduler in the config")
            self.scheduler = None
            return
        try:
            if self.scheduler is None:
                from disqontrold.scheduler import Clock, Scheduler  # noqa: PLC0415 (see the docstring)

                self.clock = self.clock or Clock.from_env()
                self.scheduler = Scheduler.from_config(config, self._connect, clock=self.clock)
                log_event(logger, "scheduler_started", crontab=config.scheduler.crontab,
                          entries=len(self.scheduler.entries), missed_runs=config.scheduler.missed_runs)
            else:
                self.scheduler.reload(config)
        except ConfigError as error:
            log_event(logger, "scheduler_config_refused", logging.ERROR, reason=error,
                      keeping="old entries" if self.scheduler else "no scheduler")

    def timer(self) -> Optional[float]:
        """The master's timer callback: tick when due; the next monotonic deadline."""
        if self.master.stopping:
            return None
        if self.master.config is not self.config:
            self._follow(self.master.config)
        if self.scheduler is None:
            return time.monotonic() + POLL
        if self._due(time.time()):
            try:
                self.scheduler.run_due()
                self.deadline = self.scheduler.next_deadline()
            except (BrokerUnavailable, BrokerError) as error:
                # Runs not claimed yet are retried (per missed_runs) once the broker is back.
                log_event(logger, "scheduler_broker_error", logging.ERROR, error=error, retry_in=BROKER_RETRY)
                self.deadline = time.time() + BROKER_RETRY
            except ConfigError as error:  # e.g. a broker without claim(): never retry blindly
                self._disable(error)
            except Exception as error:  # noqa: BLE001 - a scheduler bug must not kill the master
                logger.exception("event=scheduler_failed")
                self._disable(error)
            if self.scheduler is None:
                return time.monotonic() + POLL
        return time.monotonic() + min(max(0.0, self.deadline - time.time()), POLL)

    def _due(self, now: float) -> bool:
        """Whether to tick: the deadline has passed, or it lies further ahead
        than any deadline is ever set (MAX_SLEEP, or BROKER_RETRY), so the
        wall clock was stepped back. Waiting for the old deadline, the
        scheduler added nothing for as long as the step (an hour, a day)."""
        from disqontrold.scheduler import MAX_SLEEP  # noqa: PLC0415 (croniter: only once a scheduler runs)

        if now >= self.deadline:
            return True
        ahead = self.deadline - now - max(MAX_SLEEP, BROKER_RETRY)
        if ahead <= STEP_SLACK:
            return False
        log_event(logger, "clock_stepped_back", logging.WARNING, seconds_at_least=round(ahead),
                  action="due runs are looked for from the new time")
        return True

    def _disable(self, error: Exception) -> None:
        log_event(logger, "scheduler_disabled", logging.ERROR, reason=error, until="a reload")
        self.scheduler = None

    def status(self) -> Optional[dict[str, Any]]:
        """The ``scheduler`` part of ``disqontrolctl status``: the settings and
        every entry with its next and last run; None (no part) when no
        scheduler is configured."""
        if self.scheduler is None:
            return None
        settings = self.scheduler.settings
        return {
            "crontab": str(settings.crontab),
            "timezone": str(self.scheduler.zone),
            "missed_runs": settings.missed_runs,
            "entries": self.scheduler.status(),
        }


def attach(master: Any) -> MasterScheduler:
    """Plug the scheduler into the master: a timer, and the ``scheduler`` part
    of the master's status (``master.status_hooks``)."""
    plugged = MasterScheduler(master)
    master.add_timer(plugged.timer)
    master.status_hooks[STATUS_KEY] = plugged.status
    return plugged


def attach_to_master(master: Any) -> None:
    """The daemon's plug-in entry point (disqontrold.cli.PLUGINS)."""
    attach(master)
