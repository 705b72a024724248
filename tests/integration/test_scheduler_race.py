"""Exactly once across processes: schedulers racing on the same minutes of
one real broker (a sqlite file, a redis-server) never add a run twice."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrold.scheduler import SCHEDULED_TIME
from tests.support.procs import stop_process

RACERS = 4
REPO = Path(__file__).resolve().parents[2]
# A fixed instant, the same for every racer: they fight over the same runs.
NOW = datetime(2026, 1, 1, 12, 0, 7, tzinfo=timezone.utc).timestamp()
CRONTAB = "* * * * * every {\"n\": 1}\n*/2 * * * * two even\n@hourly hourly\n"


def broker_url_for(engine: str, tmp_path: Path, request) -> str:
    if engine == "sqlite":
        return f"sqlite://{tmp_path}/jobs.db"
    if engine == "sqlite-sharded":  # the claims and their jobs live in shard 0
        return f"sqlite://{tmp_path}/jobs.db?shards=2"
    server = request.getfixturevalue("redis_server")
    import redis  # noqa: PLC0415

    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.flushall()
    client.close()
    return server.url


def race(url: str, crontab: Path, missed_runs: str) -> list[list]:
    """Start the racers, fire the start gun when all are ready, collect wins."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.scheduler_racer", url, str(crontab), str(NOW), missed_runs],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
        )
        for _ in range(RACERS)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        wins = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            wins.extend(json.loads(out))
        return wins
    finally:
        for proc in procs:
            stop_process(proc)


def stored_runs(url: str) -> Counter:
    with open_broker(url) as broker:
        return Counter(
            (queue, json.loads(d.payload)["metadata"][SCHEDULED_TIME])
            for queue in ("every", "two", "hourly")
            for d in broker.peek(queue, 1000)
        )


@pytest.mark.parametrize("engine", ["sqlite", "sqlite-sharded", "redis"])
def test_racing_schedulers_add_every_run_exactly_once(engine, tmp_path, request):
    # Given one broker and a crontab whose catch-up covers 60 minutes
    url = broker_url_for(engine, tmp_path, request)
    crontab = tmp_path / "crontab"
    crontab.write_text(CRONTAB)
    # When four schedulers in four processes pass at the same instant
    wins = race(url, crontab, "catch_up")
    # Then each run was won by exactly one of them and stored exactly once
    stored = stored_runs(url)
    assert max(stored.values()) == 1, [run for run, n in stored.items() if n > 1]
    assert len(wins) == sum(stored.values())
    # 11:01..12:00 every minute (3600 s back, 59 missed + the on-time one),
    # 30 even minutes, 1 hour: every due run is there, none missing
    assert Counter(q for q, _ in stored) == {"every": 60, "two": 30, "hourly": 1}
    # And racing again over the same minutes adds nothing
    assert race(url, crontab, "catch_up") == []
