"""Autoscaling inside the master's loop: measure, decide, apply.

A master timer, once every ``SAMPLE_INTERVAL``: one ``Broker.backlog`` call
(ready jobs, counted up to ``BACKLOG_CAP``) for the queues of every group with
``autoscale: true``, the
consumers' scoreboards (busy processes, jobs finished, the longest running
job), then ``disqontrold.autoscale.Autoscaler`` per group decides and
``Master.set_processes`` applies (new slots spawn, removed ones retire after
their job). Each pass opens and closes its own broker connection, like the
scheduler, so a forking master holds no connection its children inherit.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from disqontrol_client.brokers import open_broker
from disqontrol_client.config import Config, ConsumerConfig
from disqontrol_client.errors import BrokerError, BrokerUnavailable
from disqontrol_client.logfmt import log_event
from disqontrold.autoscale import MANUAL, Autoscaler, Decision, DurationEstimate, Sample
from disqontrold.held_status import held_by_group

logger = logging.getLogger("disqontrold.autoscale")

SAMPLE_INTERVAL = 1.0  # s between measures (one broker round trip each)
# Ready jobs counted per queue at most: the count runs in the master's loop
# every second, so it must not grow with the queue (sqlite counts index
# entries). Past it the decision no longer changes: 50,000 jobs of 1 ms drain
# in 5 s (DRAIN_SECONDS) only with 10 processes, so more means max_processes.
BACKLOG_CAP = 50000
BUSY = "busy"


class GroupMeter:
    """The scoreboard side of one group's measure: busy processes, and the
    job-duration estimate from jobs finished between two samples."""

    def __init__(self) -> None:
        self.finished: dict[int, int] = {}  # pid -> jobs done + failed at the last sample
        self.busy = 0
        self.at: Optional[float] = None
        self.duration = DurationEstimate()

    def measure(self, slots: list[Any], now: float) -> tuple[int, Optional[float]]:
        """(busy processes, estimated job seconds) of the group's live processes."""
        busy, finished, longest = 0, 0, 0.0
        counts: dict[int, int] = {}
        for slot in slots:
            if slot.pid is None or slot.scoreboard is None:
                continue
            snap = slot.scoreboard.read()
            counts[slot.pid] = snap.done + snap.failed
            finished += counts[slot.pid] - self.finished.get(slot.pid, 0)
            if snap.state == BUSY:
                busy += 1
                longest = max(longest, now - snap.since)
        busy_seconds = 0.0 if self.at is None else (self.busy + busy) / 2 * (now - self.at)
        job_seconds = self.duration.update(busy_seconds, max(finished, 0), longest)
        self.finished, self.busy, self.at = counts, busy, now
        return busy, job_seconds


class MasterAutoscaler:
    """Keeps one ``Autoscaler`` per autoscaled group of the master's current config."""

    def __init__(self, master: Any, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: time.monotonic, or an offset of it (the scoreboards stamp with it)."""
        self.master = master
        self.clock = clock
        self.config: Optional[Config] = None
        self.deciders: dict[str, Autoscaler] = {}
        self.meters: dict[str, GroupMeter] = {}
        self.broker_failing = False

    def _follow(self, config: Config) -> None:
        """New deciders for a new config, starting from the count the master
        runs (a reload keeps an unchanged group's count, not an outside change)."""
        self.config = config
        self.deciders = {
            g.name: Autoscaler(g.min_processes, g.max_processes, g.autoscale_idle_seconds)
            for g in config.consumers if g.autoscale and g.max_processes > g.min_processes
        }
        for name, decider in self.deciders.items():
            decider.target = self.master.targets.get(name, decider.low)
        self.meters = {name: GroupMeter() for name in self.deciders}

    def timer(self) -> Optional[float]:
        """The master's timer callback: one measure and decision per group."""
        if self.master.stopping:
            return None
        now = self.clock()
        if self.master.config is not self.config:
            self._follow(self.master.config)
        groups = [g for g in self.master.config.consumers if g.name in self.deciders]
        backlog = self._backlog(groups) if groups else None
        if backlog is not None:
            for group in groups:
                self._step(group, backlog, now)
        return time.monotonic() + SAMPLE_INTERVAL  # the master's clock, whatever ours is

    def _backlog(self, groups: list[ConsumerConfig]) -> Optional[dict[str, int]]:
        """Ready jobs per queue, in one broker call; None (logged once) while it fails."""
        queues = sorted({q for group in groups for q in group.queues})
        try:
            broker = open_broker(self.master.config.broker)
            try:
                backlog = broker.backlog(queues, BACKLOG_CAP)
            finally:
                broker.close()
        except (BrokerUnavailable, BrokerError) as exc:
            if not self.broker_failing:
                log_event(logger, "autoscale_paused", logging.WARNING, reason="broker unreachable", error=exc)
            self.broker_failing = True
            return None
        if self.broker_failing:
            log_event(logger, "autoscale_resumed")
        self.broker_failing = False
        return backlog

    def _step(self, group: ConsumerConfig, backlog: dict[str, int], now: float) -> None:
        decider = self.deciders[group.name]
        slots = [slot for slot in self.master.slots if slot.group.name == group.name]
        busy, job_seconds = self.meters[group.name].measure(slots, now)
        # A held queue's jobs wait for its setup, not for processes: each new one would fail it too;
        # a paused queue's wait for the machine's processes, memory or descriptors, or a deploy:
        # each new consumer (at TasksMax) would take more of what is short.
        held = held_by_group(slot.scoreboard for slot in slots if slot.pid is not None and slot.scoreboard)
        sample = Sample(backlog=sum(backlog.get(q, 0) for q in group.queues if q not in held),
                        processes=self.master.targets[group.name], busy=busy, job_seconds=job_seconds)
        before = decider.last
        target = decider.decide(sample, now)
        decision: Optional[Decision] = decider.last
        if decision is before or decision is None:
            return
        if decision.direction == MANUAL:
            log_event(logger, "autoscale_held", group=group.name, processes=target,
                      hold_s=decider.idle_seconds, reason=decision.reason)
            return
        log_event(logger, "autoscale", group=group.name, **{"from": decision.old, "to": decision.new},
                  reason=decision.reason)
        self.master.set_processes(group.name, target, f"autoscale: {decision.reason}")


def attach_to_master(master: Any) -> MasterAutoscaler:
    """Plug-in hook (disqontrold.cli.PLUGINS): autoscale from the master's loop."""
    plugged = MasterAutoscaler(master)
    master.add_timer(plugged.timer)
    return plugged
