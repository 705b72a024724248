"""Crontab parsing: a table of good lines and of bad lines with their messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from disqontrol_client.config import load_config
from disqontrol_client.errors import ConfigError
from disqontrold.crontab import load_crontab, parse_crontab, parse_line
from disqontrold.scheduler import load_entries

REPO = Path(__file__).resolve().parents[2]

GOOD = [
    # line, expression, queue, body
    ("* * * * * q", "* * * * *", "q", None),
    ("*/5 * * * * reports {\"kind\": \"daily\"}", "*/5 * * * *", "reports", {"kind": "daily"}),
    ("0 9-17 * * mon-fri q [1, 2]", "0 9-17 * * mon-fri", "q", [1, 2]),
    ("0,30 1 1 jan,jul * q 5", "0,30 1 1 jan,jul *", "q", 5),
    ("15 3 * * SUN q \"pic.png\"", "15 3 * * SUN", "q", "pic.png"),
    ("0 0 1-7/2 * 7 q hello world", "0 0 1-7/2 * 7", "q", "hello world"),
    ("  5 4 * * *   q   {not json}  ", "5 4 * * *", "q", "{not json}"),
    ("@hourly q", "0 * * * *", "q", None),
    ("@daily q true", "0 0 * * *", "q", True),
    ("@weekly q null", "0 0 * * 0", "q", None),
    ("@monthly q 1.5", "0 0 1 * *", "q", 1.5),
    ("@yearly q {\"a\": {\"b\": [1]}}", "0 0 1 1 *", "q", {"a": {"b": [1]}}),
    ("@annually q x", "0 0 1 1 *", "q", "x"),
    ("* * * * * q # not a comment here", "* * * * *", "q", "# not a comment here"),
    # lines of the PHP Disqontrol's documentation run unchanged
    ("15 5 * * * daily-cleanup 1", "15 5 * * *", "daily-cleanup", 1),
    ("34 2 * * 5 weekly-pruning all", "34 2 * * 5", "weekly-pruning", "all"),
    ("25 3 * * 6 pic-resize true", "25 3 * * 6", "pic-resize", True),
    # Python's json reads these, JSON has none: they are text, as any non-JSON body
    ("* * * * * q NaN", "* * * * *", "q", "NaN"),
    ("* * * * * q {\"x\": -Infinity}", "* * * * *", "q", "{\"x\": -Infinity}"),
]

BAD = [
    # line, words the message must contain
    ("* * * * mon-xyz q", ["crontab:1:", "'mon-xyz' is not a valid day of week", "sun-sat"]),
    ("61 * * * * q", ["'61' is not a valid minute", "0-59"]),
    ("* 24 * * * q", ["'24' is not a valid hour", "0-23"]),
    ("* * 0 * * q", ["'0' is not a valid day of month", "1-31"]),
    ("* * * 13 * q", ["'13' is not a valid month", "jan-dec"]),
    ("* * * foo * q", ["'foo' is not a valid month"]),
    ("*/0 * * * * q", ["'*/0' is not a valid minute"]),
    ("* * 31 2 * q", ["never happens"]),
    ("@reboot q", ["@reboot is not supported"]),
    ("@fortnightly q", ["'@fortnightly' is not a known schedule nickname", "@hourly"]),
    ("* * * q", ["is not a crontab line", "QUEUE"]),
    ("* * * * *", ["names no queue"]),
    ("@daily", ["names no queue"]),
]


@pytest.mark.parametrize("line,expression,queue,body", GOOD)
def test_good_line_parses_to_expression_queue_and_body(line, expression, queue, body):
    entry = parse_line(line, "crontab:1")
    assert entry is not None
    assert (entry.expression, entry.queue, entry.body) == (expression, queue, body)


@pytest.mark.parametrize("line,words", BAD)
def test_bad_line_is_refused_with_a_message_naming_it(line, words):
    with pytest.raises(ConfigError) as error:
        parse_crontab(line, "crontab")
    for word in words:
        assert word in str(error.value)


def test_comments_and_blank_lines_are_skipped_and_line_numbers_count_them():
    # Given a crontab whose third line is bad, after a comment and a blank line
    text = "# nightly jobs\n\n0 0 * * mon-xyz q\n"
    # Then the error names line 3
    with pytest.raises(ConfigError, match=r"^etc/crontab:3: 'mon-xyz'"):
        parse_crontab(text, "etc/crontab")
    assert parse_crontab("# only\n   \n\t# comments\n", "c") == []


def test_unknown_queue_is_refused_when_queues_are_known():
    with pytest.raises(ConfigError, match=r"c:2: unknown queue 'typo'; configured queues: a, b"):
        parse_crontab("* * * * * a\n* * * * * typo\n", "c", queues=["b", "a"])
    assert len(parse_crontab("* * * * * a\n", "c", queues=["a"])) == 1


def test_duplicate_entry_is_refused_naming_both_lines():
    with pytest.raises(ConfigError, match=r"c:2: same schedule, queue and body as c:1"):
        parse_crontab('* * * * * q {"a":1}\n* * * * *  q  { "a" : 1 }\n', "c")


def test_entry_key_is_stable_and_distinguishes_schedule_queue_and_body():
    def key(line: str) -> str:
        entry = parse_line(line, "c:1")
        assert entry is not None
        return entry.key

    assert key("@hourly q {\"a\": 1}") == key("0 * * * *   q {\"a\":1}")
    assert len({key("* * * * * q 1"), key("* * * * * r 1"), key("* * * * * q 2"),
                key("*/2 * * * * q 1")}) == 4


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"crontab '{missing}' cannot be read"):
        load_crontab(missing)


def test_shipped_example_crontab_parses_against_the_example_config():
    # etc/disqontrol.yml names etc/crontab; every entry's queue must exist there
    config = load_config(REPO / "etc" / "disqontrol.yml")
    assert config.scheduler is not None and config.scheduler.crontab == REPO / "etc" / "crontab"
    entries = load_entries(config)
    assert entries, "etc/crontab should show at least one entry"
    assert {e.queue for e in entries} <= set(config.queues)
