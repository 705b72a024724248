"""Which runs are due, with the clock passed in by hand: no sleeping."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from disqontrol_client.errors import ConfigError
from disqontrold.cron_due import (
    DEFAULT_SETTINGS,
    check_settings,
    due_runs,
    fire_times,
    resolve_timezone,
)
from disqontrold.crontab import CrontabEntry, parse_line

UTC = timezone.utc
HOUR = 3600


def entry(line: str) -> CrontabEntry:
    parsed = parse_line(line, "c:1")
    assert parsed is not None
    return parsed


def at(hour: int, minute: int, second: float = 0, day: int = 1) -> float:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC).timestamp() + second


def hm(runs: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in runs]


EVERY_MINUTE = entry("* * * * * q")
HOURLY = entry("@hourly q")
ONCE = DEFAULT_SETTINGS
SKIP = replace(DEFAULT_SETTINGS, missed_runs="skip")
CATCH_UP = replace(DEFAULT_SETTINGS, missed_runs="catch_up", catch_up_limit=3)


def test_the_current_minute_is_due_once_and_not_at_the_next_pass():
    # Given a pass at 12:00:00.4 that added 12:00
    assert hm(due_runs(EVERY_MINUTE, at(11, 59, 59.5), at(12, 0, 0.4))) == ["12:00"]
    # Then a pass later in the same minute adds nothing
    assert due_runs(EVERY_MINUTE, at(12, 0, 0.4), at(12, 0, 59.9)) == []
    # And the next minute is due at the next pass
    assert hm(due_runs(EVERY_MINUTE, at(12, 0, 59.9), at(12, 1, 0.1))) == ["12:01"]


def test_an_entry_that_is_not_due_adds_nothing():
    assert due_runs(HOURLY, at(12, 29), at(12, 30, 1)) == []
    assert due_runs(entry("0 3 * * * q"), at(12, 0), at(12, 59, 59)) == []


def test_a_run_less_than_a_minute_late_counts_as_on_time_even_under_skip():
    # Given the master was busy and passes at 13:00:40 for the 13:00 run
    assert hm(due_runs(HOURLY, at(12, 59, 50), at(13, 0, 40), SKIP)) == ["13:00"]


@pytest.mark.parametrize("settings,expected", [
    (ONCE, ["12:00"]),
    (SKIP, []),
    (CATCH_UP, ["10:00", "11:00", "12:00"]),
])
def test_missed_runs_follow_the_policy(settings, expected):
    # Given an hourly entry and a scheduler that was down from 08:30 to 12:30
    settings = replace(settings, missed_window=5 * HOUR)
    # When it passes again at 12:30
    runs = due_runs(HOURLY, at(8, 30), at(12, 30), settings)
    # Then once adds the latest missed run, skip none, catch_up the latest 3
    assert hm(runs) == expected


def test_missed_runs_older_than_the_window_are_dropped():
    # Given a window of an hour and a gap of four hours
    runs = due_runs(HOURLY, at(8, 30), at(12, 30), replace(CATCH_UP, catch_up_limit=10))
    # Then only the run inside the window is caught up
    assert hm(runs) == ["12:00"]


def test_once_adds_the_latest_missed_run_plus_the_current_one():
    runs = due_runs(EVERY_MINUTE, at(11, 0), at(12, 0, 5))
    assert hm(runs) == ["11:59", "12:00"]


def test_catch_up_of_every_minute_adds_each_missed_minute_up_to_the_limit():
    # Given an hour's gap: 59 missed minutes (11:01..11:59) and the on-time 12:00
    runs = due_runs(EVERY_MINUTE, at(11, 0), at(12, 0, 5), replace(CATCH_UP, catch_up_limit=60))
    assert hm(runs)[0] == "11:01" and hm(runs)[-1] == "12:00" and len(runs) == 60
    assert len(set(runs)) == len(runs) and runs == sorted(runs)
    # With a limit of 10, the latest 10 missed minutes
    capped = due_runs(EVERY_MINUTE, at(11, 0), at(12, 0, 5), replace(CATCH_UP, catch_up_limit=10))
    assert hm(capped)[0] == "11:50" and len(capped) == 11


def test_fire_times_bounds_are_exclusive_then_inclusive():
    assert hm(fire_times("* * * * *", UTC, at(12, 0), at(12, 2), 10)) == ["12:01", "12:02"]
    assert fire_times("* * * * *", UTC, at(12, 2), at(12, 2), 10) == []


def test_schedule_is_read_in_the_configured_time_zone():
    # Given 09:00 in Prague (UTC+1 in January)
    prague = ZoneInfo("Europe/Prague")
    runs = due_runs(entry("0 9 * * * q"), at(7, 30), at(8, 0, 10), zone=prague)
    # Then it is due at 08:00 UTC
    assert hm(runs) == ["08:00"]


def test_dst_follows_croniter_forward_gap_fires_after_it_fall_back_fires_twice():
    prague = ZoneInfo("Europe/Prague")
    daily_0230 = "30 2 * * *"
    # Spring: 2026-03-29 02:00 -> 03:00, 02:30 does not exist: runs at 03:00 local
    spring = fire_times(daily_0230, prague, datetime(2026, 3, 28, 12, tzinfo=prague).timestamp(),
                        datetime(2026, 3, 29, 12, tzinfo=prague).timestamp(), 5)
    assert [datetime.fromtimestamp(t, prague).strftime("%H:%M") for t in spring] == ["03:00"]
    # Autumn: 2026-10-25 03:00 -> 02:00, 02:30 happens twice: two runs an hour apart
    autumn = fire_times(daily_0230, prague, datetime(2026, 10, 24, 12, tzinfo=prague).timestamp(),
                        datetime(2026, 10, 25, 12, tzinfo=prague).timestamp(), 5)
    assert len(autumn) == 2 and autumn[1] - autumn[0] == HOUR


def test_unknown_time_zone_and_bad_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"scheduler.timezone: 'Mars/Base' is not a known time zone"):
        resolve_timezone("Mars/Base")
    with pytest.raises(ConfigError, match=r"scheduler.missed_runs: 'always' is not one of once, skip"):
        check_settings(replace(DEFAULT_SETTINGS, missed_runs="always"))
    with pytest.raises(ConfigError, match=r"scheduler.catch_up_limit: -1 is not a whole number"):
        check_settings(replace(DEFAULT_SETTINGS, catch_up_limit=-1))


def test_system_zone_comes_from_tz_when_set(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    assert str(resolve_timezone(None)) == "America/New_York"
