"""Redis going away: clear errors for producers, patience for consumers, and
no job lost when the server is killed and restarted (AOF, fsync always)."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from disqontrol_client.brokers.redis import RedisBroker
from disqontrol_client.errors import BrokerUnavailable
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import stop_process, wait_for
from tests.support.redis_server import RedisServer

JOBS = 2000
CONSUMERS = 2
REPO = Path(__file__).resolve().parents[2]
FLOW = [sys.executable, "-m", "tests.support.redis_flow"]
OUTAGE_SECONDS = 3.0  # s of asking a dead server
OUTAGE_RESERVE_TIMEOUT = 0.2  # s: each reserve returns after about this


@pytest.fixture
def own_server(tmp_path, redis_server):  # redis_server: skips when redis-server is missing
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


def test_a_producer_that_cannot_reach_redis_gets_broker_unavailable(refused_port):
    port = refused_port
    with RedisBroker.from_url(f"redis://:secret@127.0.0.1:{port}/0") as broker:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{port}") as error:
            broker.add("q", b"x")
    assert "secret" not in str(error.value)
    assert time.monotonic() - started < 10
    assert error.value.exit_code == 3


SHORT_SOCKET_TIMEOUT = 1.0  # s: what a web app sets so that a request never waits long


def test_a_producer_whose_server_hangs_gets_broker_unavailable_after_its_socket_timeout(own_server):
    # Given a producer with a short socket_timeout, connected
    with RedisBroker.from_url(f"{own_server.url}?socket_timeout={SHORT_SOCKET_TIMEOUT:g}") as broker:
        broker.add("q", b"before")
        # When the server hangs (stopped: it accepts nothing and answers nothing)
        os.killpg(own_server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="Timeout"):
                broker.add("q", b"during")
            waited = time.monotonic() - started
        finally:
            os.killpg(own_server.proc.pid, signal.SIGCONT)
        # Then the call gave up after its socket_timeout, not after four of them
        # (redis-py's retries of a silent server held an HTTP request 40 s by default)
        assert SHORT_SOCKET_TIMEOUT * 0.9 <= waited < SHORT_SOCKET_TIMEOUT * 2.5, waited
        # and the next call works once the server answers again
        broker.add("q", b"after")


def test_an_idle_reserve_under_a_short_socket_timeout_is_not_an_outage(own_server, caplog):
    # Given a consumer's broker with a socket_timeout shorter than its blocking wait
    caplog.set_level(logging.INFO, logger="disqontrol_client.brokers.redis")
    with RedisBroker.from_url(f"{own_server.url}?socket_timeout={SHORT_SOCKET_TIMEOUT:g}") as broker:
        # When it waits on an empty queue for longer than the socket timeout
        started = time.monotonic()
        assert broker.reserve(["q"], timeout=3 * SHORT_SOCKET_TIMEOUT) == []
        # Then it waited its timeout and logged no outage (its BLPOPs are cut to fit the socket timeout)
        assert time.monotonic() - started >= 3 * SHORT_SOCKET_TIMEOUT * 0.9
        assert not [r.getMessage() for r in caplog.records if "broker_unreachable" in r.getMessage()]
        # and a job added meanwhile is still taken at once
        broker.add("q", b"x")
        assert len(broker.reserve(["q"], timeout=3 * SHORT_SOCKET_TIMEOUT)) == 1


def test_a_reserve_with_acks_it_could_not_send_raises_and_one_without_returns_empty(refused_port):
    port = refused_port
    with RedisBroker.from_url(f"redis://127.0.0.1:{port}/0") as broker:
        # A consumer must keep acks that never reached the server (to send them again) ...
        with pytest.raises(BrokerUnavailable, match="to ack 1 job"):
            broker.reserve(["q"], timeout=0, ack=["R-00ff00ff00ff00ff-q"])
        # ... while an empty-handed reserve just waits the outage out.
        assert broker.reserve(["q"], timeout=0) == []


def test_a_blocked_consumer_survives_a_restart(own_server):
    # Given a consumer blocked in reserve
    broker = RedisBroker.from_url(own_server.url)
    results: list = []
    errors: list = []

    def consume() -> None:
        try:
            results.append(broker.reserve(["q"], timeout=30))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    wait_for(lambda: any(c["cmd"] == "blpop" for c in _clients(own_server)), timeout=10, message="a BLPOP")
    # When the server is killed under it
    own_server.kill()
    consumer.join(30)
    # Then reserve returned [] instead of raising, and works again after a restart
    assert (errors, results) == ([], [[]])
    own_server.start()
    with RedisBroker.from_url(own_server.url) as producer:
        producer.add("q", b"after")
    assert [d.payload for d in wait_for(lambda: broker.reserve(["q"], timeout=1), timeout=30,
                                        message="a delivery after the restart")] == [b"after"]
    broker.close()


def _clients(server: RedisServer) -> list:
    import redis  # noqa: PLC0415

    with redis.Redis(host="127.0.0.1", port=server.port) as client:
        return client.client_list()


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _producer(server: RedisServer, progress: Path) -> subprocess.Popen:
    return subprocess.Popen(FLOW + ["produce", server.url, "q", str(JOBS), str(progress)], cwd=REPO,
                            start_new_session=True)


def _crash_mid_flow(server: RedisServer, progress: Path, consumed: Callable[[], set]) -> int:
    """Kill redis-server once jobs flow, restart it once the producer has hit
    the dead server; returns how many jobs the producer had added by then."""
    def produced() -> list[str]:
        return _lines(progress)[-2:]  # "<added> <failed calls>" of the last call

    wait_for(lambda: len(consumed()) >= JOBS // 10, timeout=60, message="jobs flowing")
    server.kill()
    at_kill = int(produced()[0])
    wait_for(lambda: produced() and int(produced()[1]) > 0, timeout=30, message="the producer to hit the dead server")
    server.start()
    assert at_kill < JOBS, "the producer had finished before the kill: the test proved nothing"
    return at_kill


@pytest.mark.timeout(180)
def test_no_job_is_lost_when_redis_is_killed_mid_flow(own_server, tmp_path):
    # Given a producer process and two consumer processes on one queue
    progress = tmp_path / "produced"
    done = [tmp_path / f"done-{i}" for i in range(CONSUMERS)]
    procs = [subprocess.Popen(FLOW + ["consume", own_server.url, "q", str(d)], cwd=REPO, start_new_session=True)
             for d in done]
    procs.append(_producer(own_server, progress))
    try:
        def consumed() -> set[int]:
            return {int(x) for d in done for x in _lines(d)}

        # When redis-server is killed mid-flow and restarted
        _crash_mid_flow(own_server, progress, consumed)
        # Then every job is processed: none is lost
        wait_for(lambda: len(consumed()) == JOBS, timeout=90, message=f"all {JOBS} jobs consumed")
        assert procs[-1].wait(30) == 0
        assert consumed() == set(range(JOBS))
    finally:
        for proc in procs:
            stop_process(proc)


@pytest.mark.timeout(240)
def test_the_daemon_loses_no_job_when_redis_is_killed_mid_flow(own_server, tmp_path):
    # Given a daemon with two consumers on a redis queue, and a producer process
    (tmp_path / "daemon").mkdir()
    daemon = Daemon(tmp_path / "daemon", own_server.url, {"q": {"worker": python_worker()}},
                    consumer_defaults={"min_processes": 2, "job_batch": 10})
    daemon.start(consumers=2)
    producer = _producer(own_server, tmp_path / "produced")
    try:
        def consumed() -> set[int]:
            return {int(body) for body, _ in daemon.runs()}

        # When redis-server is killed mid-flow and restarted
        _crash_mid_flow(own_server, tmp_path / "produced", consumed)
        # Then every job is run (at least once), and the daemon kept running
        wait_for(lambda: len(consumed()) == JOBS, timeout=150, interval=0.1, message=f"all {JOBS} jobs run")
        assert producer.wait(30) == 0
        assert consumed() == set(range(JOBS))
        assert daemon.proc.poll() is None and len(daemon.consumer_pids()) == 2
    finally:
        stop_process(producer)
        daemon.stop()


# A body with "hold" runs until ./release exists; every job records "<body> <time>".
HOLD_SH = """
body="${2#--body=}"
case "$body" in
  *hold*) while [ ! -e release ]; do sleep 0.05; done ;;
esac
printf '%s %s\\n' "$body" "$(date +%s.%N)" >> "$DQ_OUT"
"""


def test_a_consumer_with_jobs_running_backs_off_while_redis_is_down(own_server, tmp_path):
    # Given a consumer running a long command job, a quick job's ack waiting for the next reserve
    (tmp_path / "hold.sh").write_text(HOLD_SH)
    daemon = Daemon(tmp_path, own_server.url,
                    {"work": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'hold.sh'}"}}},
                    consumer_defaults={"min_processes": 1, "max_processes": 1, "job_batch": 4}).start()
    try:
        daemon.add("work", ["hold", 1])
        daemon.wait_runs(1, timeout=30)

        # When redis-server goes away
        own_server.kill()

        # Then the window's reserves back off as a blocking one does (0.5 s, doubling), not every refill
        lines = daemon.wait_event("broker_unreachable", count=3, timeout=30)
        assert [float(re.search(r" retry_in=([0-9.]+)", line).group(1)) for line in lines[:3]] == [0.5, 1.0, 2.0]

        # And once it is back, both jobs end acked, each run once
        own_server.start()
        (tmp_path / "release").touch()
        def left() -> int:
            [stats] = daemon.broker.stats(["work"])
            return stats.ready + stats.delayed + stats.in_flight
        wait_for(lambda: left() == 0, timeout=60, message="both jobs acked")
        assert sorted(body for body, _ in daemon.runs()) == ['"hold"', "1"]
        # and the consumer said once that the outage it logged is over
        back = [line for line in daemon.wait_event("broker_reachable") if " group=work " in line + " "]
        assert len(back) == 1 and re.search(r" down_for=[0-9.]+", back[0]), daemon.log()[-3000:]
    finally:
        (tmp_path / "release").touch()
        daemon.stop()


def test_an_outage_is_logged_at_growing_intervals_and_its_end_once(own_server, caplog):
    # Given a consumer's connection, and the server gone
    broker = RedisBroker.from_url(own_server.url)
    assert broker.reserve(["q"], timeout=0) == []
    own_server.kill()
    caplog.set_level(logging.INFO, logger="disqontrol_client.brokers.redis")

    # When the consumer keeps asking for about three seconds, as it does (each reserve returns)
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < OUTAGE_SECONDS:
        assert broker.reserve(["q"], timeout=OUTAGE_RESERVE_TIMEOUT) == []
        calls += 1

    # Then the outage was logged at its start and then at growing intervals, not once a try
    lines = [r.getMessage() for r in caplog.records if "event=broker_unreachable" in r.getMessage()]
    assert calls >= 2 * len(lines), (calls, lines)
    assert 1 <= len(lines) <= 3, lines
    assert "tries=1 " in lines[0] and "queues=q " in lines[0]
    # and once the server is back, the next reserve says so in one line
    own_server.start()
    assert wait_for(lambda: broker.reserve(["q"], timeout=0) == [] and _reachable(caplog), timeout=30,
                    message="a reserve that reached the restarted server")
    [back] = [r.getMessage() for r in caplog.records if "event=broker_reachable" in r.getMessage()]
    assert " down_for=" in back and int(re.search(r" tries=(\d+)", back).group(1)) >= calls
    broker.close()


def _reachable(caplog) -> bool:
    return any("event=broker_reachable" in r.getMessage() for r in caplog.records)
