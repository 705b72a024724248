"""The master plug-in's bookkeeping against a stand-in master: follows
reloads, keeps old entries when a crontab breaks, stops with the master.
The real master runs it in tests/integration/test_scheduler_daemon.py."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from disqontrol_client.config import Config, QueueConfig, SchedulerConfig, WorkerConfig
from disqontrol_client.errors import BrokerUnavailable
from disqontrold import scheduler, scheduler_master
from disqontrold.scheduler_master import MasterScheduler, attach
from tests.unit.scheduler_fakes import MemoryBroker

HOUR = 3600.0


class StandInMaster:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping: Optional[str] = None
        self.timers: list[Any] = []
        self.status_hooks: dict[str, Any] = {}

    def add_timer(self, callback: Any) -> None:
        self.timers.append(callback)


def config_with(tmp_path: Path, crontab_text: Optional[str], name: str = "crontab") -> Config:
    worker = WorkerConfig(type="command", command="true")
    scheduler = None
    if crontab_text is not None:
        (tmp_path / name).write_text(crontab_text)
        scheduler = SchedulerConfig(crontab=tmp_path / name, timezone="UTC", missed_runs="skip")
    return Config(
        path=None, broker="memory://", log_dir=tmp_path, run_dir=tmp_path,
        queues={"q": QueueConfig("q", worker), "r": QueueConfig("r", worker)},
        consumers=(), scheduler=scheduler,
    )


def plugged(
    tmp_path: Path, crontab_text: Optional[str], monkeypatch
) -> tuple[StandInMaster, MasterScheduler, MemoryBroker]:
    broker = MemoryBroker()
    monkeypatch.setattr(MasterScheduler, "_connect", lambda self: broker)
    master = StandInMaster(config_with(tmp_path, crontab_text))
    return master, attach(master), broker


def test_attach_adds_a_timer_and_a_status_part(tmp_path, monkeypatch):
    master, plug, _ = plugged(tmp_path, "* * * * * q\n", monkeypatch)
    assert master.timers == [plug.timer]
    deadline = plug.timer()
    # the next look is at most POLL seconds away on the monotonic clock
    assert 0 <= deadline - time.monotonic() <= scheduler_master.POLL
    status = master.status_hooks["scheduler"]()
    assert status["missed_runs"] == "skip" and status["timezone"] == "UTC"
    assert [e["queue"] for e in status["entries"]] == ["q"]


def test_the_current_minute_is_added_by_the_first_timer_call(tmp_path, monkeypatch):
    _, plug, broker = plugged(tmp_path, "* * * * * q\n", monkeypatch)
    plug.timer()
    plug.timer()
    # unless the call straddled a minute boundary, one job; never more than two
    assert 1 <= len(broker.jobs) <= 2
    assert len(broker.claims) == len(broker.jobs)


def test_a_reload_swaps_entries_and_a_broken_crontab_keeps_the_old(tmp_path, monkeypatch):
    master, plug, _ = plugged(tmp_path, "* * * * * q\n", monkeypatch)
    plug.timer()
    # When the master takes a config with another crontab
    master.config = config_with(tmp_path, "@hourly r\n", name="crontab2")
    plug.timer()
    assert [e.queue for e in plug.scheduler.entries] == ["r"]
    # When a later config's crontab is broken (changed after the check)
    master.config = config_with(tmp_path, "0 0 * * mon-xyz r\n", name="crontab3")
    plug.timer()
    # Then the previous entries keep running
    assert [e.queue for e in plug.scheduler.entries] == ["r"]


def test_a_config_without_scheduler_stops_it_and_a_stopping_master_ends_the_timer(tmp_path, monkeypatch):
    master, plug, _ = plugged(tmp_path, "* * * * * q\n", monkeypatch)
    plug.timer()
    master.config = config_with(tmp_path, None)
    assert plug.timer() is not None
    assert plug.scheduler is None and master.status_hooks["scheduler"]() is None
    master.stopping = "graceful"
    assert plug.timer() is None


def test_a_broker_without_claim_disables_the_scheduler_until_a_reload(tmp_path, monkeypatch, caplog):
    class NoClaim(MemoryBroker):
        def claim(self, key: str, ttl: float) -> bool:
            raise NotImplementedError("no claim here")

    monkeypatch.setattr(MasterScheduler, "_connect", lambda self: NoClaim())
    master = StandInMaster(config_with(tmp_path, "* * * * * q\n"))
    plug = attach(master)
    # When the first tick finds the broker cannot claim
    assert plug.timer() is not None
    # Then the scheduler is off, said once, and the master's loop goes on
    assert plug.scheduler is None
    assert caplog.text.count("event=scheduler_disabled") == 1 and "no claim here" in caplog.text
    plug.timer()
    assert caplog.text.count("event=scheduler_disabled") == 1


def test_an_unreachable_broker_is_retried_after_a_pause_not_in_a_tight_loop(tmp_path, monkeypatch, caplog):
    attempts: list[str] = []

    class Down(MemoryBroker):
        def claim(self, key: str, ttl: float) -> bool:
            attempts.append(key)
            raise BrokerUnavailable("connection refused (test)")

    monkeypatch.setattr(MasterScheduler, "_connect", lambda self: Down())
    master = StandInMaster(config_with(tmp_path, "* * * * * q\n"))
    plug = attach(master)
    # When the broker is down at the first tick
    plug.timer()
    # Then the error is logged with the pause, the next attempt waits for it
    assert len(attempts) == 1 and "event=scheduler_broker_error" in caplog.text
    assert plug.deadline >= time.time() + scheduler_master.BROKER_RETRY - 1
    plug.timer()
    assert len(attempts) == 1
    # and the scheduler is still there to retry
    assert plug.scheduler is not None


def test_a_wall_clock_stepped_back_is_noticed_at_the_next_look(tmp_path, monkeypatch):
    # Given a scheduler that has ticked, its next deadline at most MAX_SLEEP away
    _, plug, broker = plugged(tmp_path, "* * * * * q\n", monkeypatch)
    plug.timer()
    real_time = time.time

    # When the wall clock is stepped back an hour (NTP, a wrong date set by hand)
    monkeypatch.setattr(time, "time", lambda: real_time() - HOUR)
    plug.timer()

    # Then the scheduler ticked at the new time: its next deadline is within
    # MAX_SLEEP of the new clock, not an hour away (it ran nothing meanwhile)
    assert plug.deadline - time.time() <= scheduler.MAX_SLEEP
    assert plug.scheduler.last_checked <= time.time()
