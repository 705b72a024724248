"""The autoscaling plug-in's measure and wiring against a stand-in master:
a real sqlite broker for the backlog, real scoreboards for busy processes.
The real master runs it in tests/integration/test_autoscale.py."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.config import Config, parse_config
from disqontrol_client.errors import ConfigError
from disqontrold.autoscale_master import SAMPLE_INTERVAL, GroupMeter, MasterAutoscaler, attach_to_master
from disqontrold.scoreboard import BUSY, IDLE, Scoreboard

MAX = 4
JOB_AGE = 10.0  # s: how long the stand-in busy jobs seem to have run


@dataclass(eq=False)
class StandInSlot:
    group: Any
    pid: Optional[int]
    scoreboard: Optional[Scoreboard]


class StandInMaster:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping: Optional[str] = None
        self.timers: list[Any] = []
        self.targets = {g.name: g.min_processes for g in config.consumers}
        self.slots: list[StandInSlot] = []
        self.calls: list[tuple[str, int, str]] = []

    def add_timer(self, callback: Any) -> None:
        self.timers.append(callback)

    def set_processes(self, group: str, wanted: int, reason: str) -> bool:
        self.calls.append((group, wanted, reason))
        self.targets[group] = wanted
        return True

    def add_slot(self, group_name: str, state: int) -> Scoreboard:
        board = Scoreboard()
        board.set_state(state, "job-1" if state == BUSY else "")
        group = next(g for g in self.config.consumers if g.name == group_name)
        self.slots.append(StandInSlot(group, pid=1000 + len(self.slots), scoreboard=board))
        return board


def config_for(tmp_path: Path, broker: str) -> Config:
    return parse_config({"disqontrol": {
        "broker": broker,
        "queues": {name: {"worker": {"type": "command", "command": "true"}} for name in ("work", "fixed")},
        "consumer_defaults": {"min_processes": 1, "max_processes": MAX},
        "consumers": [{"queues": ["fixed"], "autoscale": False}],
    }}, base_dir=tmp_path)


def test_a_backlog_behind_a_busy_process_scales_the_autoscaled_group_only(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # Given 30 ready jobs on each queue and each group's one process busy
    url = f"sqlite://{tmp_path}/jobs.db"
    broker = open_broker(url)
    for queue in ("work", "fixed"):
        for n in range(30):
            broker.add(queue, b'{"body": %d}' % n)
    broker.close()
    master = StandInMaster(config_for(tmp_path, url))
    master.add_slot("work", BUSY)
    master.add_slot("fixed", BUSY)
    plug = attach_to_master(master)
    assert master.timers == [plug.timer]
    plug.clock = lambda: time.monotonic() + JOB_AGE  # the busy jobs have run for JOB_AGE

    # When the timer runs
    deadline = plug.timer()

    # Then the autoscaled group goes to max at once (30 jobs of at least JOB_AGE s are
    # far past the drain target), the fixed group is left alone, and the next look is
    # a sample interval away
    assert [(group, wanted) for group, wanted, _ in master.calls] == [("work", MAX)]
    assert master.calls[0][2].startswith("autoscale: backlog=30 busy=1/1 job_s=")
    assert "event=autoscale group=work from=1 to=4" in caplog.text
    assert 0 < deadline - time.monotonic() <= SAMPLE_INTERVAL


def test_an_unreachable_broker_pauses_autoscaling_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    master = StandInMaster(config_for(tmp_path, f"sqlite://{blocker}/jobs.db"))
    master.add_slot("work", BUSY)
    plug = MasterAutoscaler(master)
    for _ in range(3):
        plug.timer()
    assert master.calls == []
    assert caplog.text.count("event=autoscale_paused") == 1


def test_after_a_reload_the_autoscaler_starts_from_the_count_the_master_kept(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # Given a group the master runs at 3 processes, idle, nothing waiting
    master = StandInMaster(config_for(tmp_path, f"sqlite://{tmp_path}/jobs.db"))
    plug = MasterAutoscaler(master)
    plug.timer()
    # When a reload (a new config object) keeps its count
    master.config = config_for(tmp_path, f"sqlite://{tmp_path}/jobs.db")
    master.targets["work"] = 3
    plug.timer()
    # Then the new decider takes 3 as its own target: no "outside change" hold, no change
    assert plug.deciders["work"].target == 3
    assert "event=autoscale_held" not in caplog.text and master.calls == []


def test_the_timer_ends_when_the_master_stops(tmp_path):
    master = StandInMaster(config_for(tmp_path, f"sqlite://{tmp_path}/jobs.db"))
    plug = MasterAutoscaler(master)
    master.stopping = "graceful"
    assert plug.timer() is None


def test_the_meter_counts_busy_processes_and_estimates_job_duration(tmp_path):
    master = StandInMaster(config_for(tmp_path, f"sqlite://{tmp_path}/jobs.db"))
    busy_board = master.add_slot("work", BUSY)
    master.add_slot("work", IDLE)
    meter = GroupMeter()
    # First look: one busy process; only its running job hints at a duration
    busy, seconds = meter.measure(master.slots, now=time.monotonic() + 2.0)
    assert busy == 1 and seconds is not None and seconds >= 2.0
    # Two seconds later it finished 4 jobs and is idle: 1 busy process-second (averaged), 0.25 s a job
    busy_board.count(done=4)
    busy_board.set_state(IDLE)
    busy, seconds = meter.measure(master.slots, now=meter.at + 2.0)
    assert busy == 0 and seconds is not None and 0.2 <= seconds <= 0.5


def test_autoscale_idle_seconds_is_read_and_must_be_positive(tmp_path):
    base = {"broker": f"sqlite://{tmp_path}/jobs.db",
            "queues": {"work": {"worker": {"type": "command", "command": "true"}}}}
    config = parse_config({"disqontrol": {**base, "consumer_defaults": {"autoscale_idle_seconds": 2.5}}},
                          base_dir=tmp_path)
    assert config.consumers[0].autoscale_idle_seconds == 2.5
    with pytest.raises(ConfigError, match=r"autoscale_idle_seconds: 0 is less than or equal to the minimum of 0"):
        parse_config({"disqontrol": {**base, "consumer_defaults": {"autoscale_idle_seconds": 0}}}, base_dir=tmp_path)
