"""Exactly once across crashes: a scheduler SIGKILLed at a random point of
its passes leaves no claim without its job (the claim and the job commit
together), and a restarted scheduler adds every remaining run once."""
from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.brokers.sqlite import path_from_url
from disqontrold.crontab import load_crontab
from disqontrold.scheduler import SCHEDULED_TIME, claim_key
from tests.integration.scheduler_crasher import passes
from tests.integration.test_scheduler_race import broker_url_for
from tests.support.procs import stop_process

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 1, 12, 0, 7, tzinfo=timezone.utc).timestamp()
STEP = 600.0  # s of scheduler time per pass: 10 new runs of an every-minute entry
PASSES = 80  # a crasher that is not killed stops after these (keeps queues < 1000 jobs)
ROUNDS = 5
KILL_AFTER = (1, 25)  # the kill comes after a random pass in this range...
KILL_JITTER = 0.01  # s: ...plus up to this, to land anywhere inside a pass
CRONTAB = '* * * * * a\n* * * * * b {"n": 2}\n*/2 * * * * c\n* * * * * d some text\n'
QUEUES = ("a", "b", "c", "d")
REDIS_CLAIMS = "dq:claim:"  # RedisBroker's default prefix + ":claim:"


def claims_in(url: str) -> set[str]:
    """The scheduler's claims as the store holds them (engine internals;
    sharded sqlite keeps them in shard 0, the file of the URL's path)."""
    if url.startswith("sqlite://"):
        with sqlite3.connect(path_from_url(url)) as db:
            keys = {row[0] for row in db.execute("SELECT key FROM claims")}
        db.close()
        return keys
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    try:
        return {k.decode()[len(REDIS_CLAIMS):] for k in client.scan_iter(f"{REDIS_CLAIMS}sched:*", count=1000)}
    finally:
        client.close()


def stored_runs(url: str, crontab: Path) -> Counter:
    """The claim key of the run each stored job stands for, counted."""
    entries = {entry.queue: entry for entry in load_crontab(crontab)}
    with open_broker(url) as broker:
        return Counter(
            claim_key(entries[queue], json.loads(d.payload)["metadata"][SCHEDULED_TIME])
            for queue in QUEUES
            for d in broker.peek(queue, 1000)
        )


def crash_once(url: str, crontab: Path) -> bool:
    """Start a crasher, SIGKILL it at a random point; True if it was killed
    before it finished its passes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.scheduler_crasher", url, str(crontab),
         str(START), str(STEP), str(PASSES)],
        stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )
    try:
        target = random.randint(*KILL_AFTER)
        for line in proc.stdout:
            if int(line) >= target:
                # Not a wait for a condition: a random point inside the next pass.
                time.sleep(random.uniform(0, KILL_JITTER))
                proc.send_signal(signal.SIGKILL)
                break
        proc.stdout.read()
        return proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        stop_process(proc)
        proc.stdout.close()


@pytest.mark.parametrize("engine", ["sqlite", "sqlite-sharded", "redis"])
def test_a_scheduler_killed_mid_pass_leaves_every_claim_with_exactly_one_job(engine, tmp_path, request):
    url = broker_url_for(engine, tmp_path, request)
    crontab = tmp_path / "crontab"
    crontab.write_text(CRONTAB)
    killed = 0
    for _ in range(ROUNDS):
        # When a scheduler is killed somewhere in its passes
        killed += crash_once(url, crontab)
        # Then every claim it left has its job, every job its claim, no job twice
        stored = stored_runs(url, crontab)
        assert max(stored.values()) == 1, [run for run, n in stored.items() if n > 1]
        claims = claims_in(url)
        assert claims - set(stored) == set(), "claimed runs without their job (lost runs)"
        assert set(stored) - claims == set(), "jobs without their claim"
    assert killed >= 1, "no round killed the scheduler before it finished"
    # And a scheduler that runs to the end afterwards completes every run once:
    # the same runs as one uninterrupted scheduler adds to an empty store
    with open_broker(url) as broker:
        passes(broker, str(crontab), START, STEP, PASSES)
    reference_url = f"sqlite://{tmp_path}/reference.db"
    with open_broker(reference_url) as reference:
        passes(reference, str(crontab), START, STEP, PASSES)
    assert stored_runs(url, crontab) == stored_runs(reference_url, crontab)
    assert sum(stored_runs(url, crontab).values()) == len(claims_in(url))
