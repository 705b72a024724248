"""The data version of a redis key prefix (redis_version): stamped at the
first call, data of the release before versions taken as version 1, a
prefix of a newer release refused by every call, by `disqontrol addjob` and
at the daemon's start (exit code 2)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from disqontrol_client.brokers import NewJob, open_broker
from disqontrol_client.brokers import redis_version
from disqontrol_client.errors import BrokerDataError
from tests.conftest import _flushed_redis_url
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

ADDJOB = [str(Path(sys.executable).parent / "disqontrol"), "addjob"]
EXIT_CONFIG = 2
PREFIX = "dq"


@pytest.fixture
def redis_url(redis_server) -> str:
    return _flushed_redis_url(redis_server)


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def test_a_new_prefix_is_stamped_at_the_first_call(redis_url: str) -> None:
    with open_broker(redis_url) as broker:
        assert raw(redis_url).get(redis_version.version_key(PREFIX)) is None  # opening alone calls nothing
        broker.add("q", b"x")
    assert raw(redis_url).get(redis_version.version_key(PREFIX)) == str(redis_version.VERSION).encode()


def test_data_of_the_release_before_versions_is_stamped_and_served(redis_url: str) -> None:
    # Given jobs a release before versions added (no version key)
    with open_broker(redis_url) as broker:
        job = broker.add("q", b"old")
    raw(redis_url).delete(redis_version.version_key(PREFIX))
    # When this release opens the prefix, Then it takes the jobs as version 1 and serves them
    with open_broker(redis_url) as broker:
        assert [d.id for d in broker.reserve(["q"], timeout=0)] == [job]
    assert raw(redis_url).get(redis_version.version_key(PREFIX)) == str(redis_version.UNVERSIONED).encode()


def test_a_prefix_of_a_newer_release_is_refused_by_every_call(redis_url: str) -> None:
    # Given a prefix a newer release stamped, with a job in it
    with open_broker(redis_url) as broker:
        broker.add("q", b"x")
    raw(redis_url).set(redis_version.version_key(PREFIX), redis_version.VERSION + 1)
    # When this release adds, reserves or claims, Then each refuses, naming the prefix and the versions
    for call in (lambda b: b.add("q", b"y"), lambda b: b.reserve(["q"], timeout=0), lambda b: b.claim("k", 5),
                 lambda b: b.check_data()):
        with open_broker(redis_url) as broker, pytest.raises(BrokerDataError) as refused:
            call(broker)
        message = str(refused.value)
        assert f"prefix '{PREFIX}' holds data version {redis_version.VERSION + 1}" in message
        assert "newer disqontrol" in message and "upgrade disqontrol" in message
    # And the data is as it was
    assert raw(redis_url).llen(f"{PREFIX}:{{q}}:ready") == 1


def test_an_open_broker_stops_once_a_newer_release_upgrades_its_prefix(redis_url: str) -> None:
    with open_broker(redis_url) as broker:
        broker.add("q", b"x")
        raw(redis_url).set(redis_version.version_key(PREFIX), redis_version.VERSION + 1)

        def refused() -> bool:
            try:
                broker.reserve(["q"], timeout=0)
            except BrokerDataError:
                return True
            return False

        wait_for(refused, timeout=10, interval=0.05, message="the reserve refused")
        with pytest.raises(BrokerDataError):
            broker.add("q", b"y")


def test_addjob_and_the_daemon_refuse_a_prefix_of_a_newer_release(redis_url: str, tmp_path: Path) -> None:
    raw(redis_url).set(redis_version.version_key(PREFIX), redis_version.VERSION + 1)
    daemon = Daemon(tmp_path, redis_url, {"work": {"worker": python_worker()}})
    done = subprocess.run([*ADDJOB, "work", "1", "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG and "written by a newer disqontrol" in done.stderr, done.stderr
    daemon.start(consumers=0)
    try:
        assert daemon.wait_exit() == EXIT_CONFIG
    finally:
        daemon.stop()
    assert daemon.events("broker_data_refused") and not daemon.events("consumer_started")


@pytest.mark.parametrize("value", ["1.4.2", "2.5", "v2"])
def test_a_version_key_another_program_wrote_is_refused_with_its_value(redis_url: str, value: str) -> None:
    # Given a prefix whose version key holds what no disqontrol writes (another application on the same
    # prefix), When this release uses it, Then every call refuses it as data it cannot read, naming the
    # key and its value (not a TypeError from a nil reply, nor "2.5" read as version 2)
    raw(redis_url).set(redis_version.version_key(PREFIX), value)
    for call in (lambda b: b.add("q", b"y"), lambda b: b.reserve(["q"], timeout=0), lambda b: b.check_data()):
        with open_broker(redis_url) as broker, pytest.raises(BrokerDataError) as refused:
            call(broker)
        message = str(refused.value)
        assert f"{redis_version.version_key(PREFIX)!r} holds {value!r}" in message, message
        assert "not a data version" in message and "another prefix" in message
    assert raw(redis_url).get(redis_version.version_key(PREFIX)) == value.encode()


HOT_CALLS = 300  # reserve-with-ack calls of the loop below


def test_the_version_check_adds_no_round_trip_to_a_reserve_ack_loop(redis_url: str) -> None:
    # Given an open broker with jobs waiting, and the server's command counts reset
    with open_broker(redis_url) as broker:
        broker.add_many([NewJob("q", b"x") for _ in range(HOT_CALLS)])
        server = raw(redis_url)
        server.config_resetstat()
        # When a consumer reserves one job at a time, acking the last one with it
        started = time.monotonic()
        ack: list[str] = []
        for _ in range(HOT_CALLS):
            ack = [d.id for d in broker.reserve(["q"], count=1, timeout=0, ack=ack)]
        elapsed = time.monotonic() - started
    # Then each call is one script, and the version script runs once a second at most
    scripts = server.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert HOT_CALLS <= scripts <= HOT_CALLS + elapsed + 1, (scripts, elapsed)
