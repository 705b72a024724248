"""disqontrolctl failed on a failure queue of production size: paged list,
bounded memory, a bulk retry that skips (and names) what it cannot replay,
and a bulk retry killed half-way that neither loses nor duplicates a job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from disqontrol_client.brokers import Broker, NewJob, open_broker
from disqontrol_client.job import (
    LAST_ERROR, ORIGINAL_ID, ORIGINAL_QUEUE, decode_payload, encode_envelope, fresh_metadata,
)
from tests.integration.ctl_support import CTL, CTL_TIMEOUT
from tests.support.procs import wait_for

FAILURE_QUEUE = "failed-jobs"
BIG_BODY_CHARS = 256 * 1024
BIG_JOBS = 160  # 40 MiB of payloads: the old CLI held them all, and their decoded bodies
RSS_BOUND_KIB = 24 * 1024  # over an empty failure queue's peak: a few pages, not the queue
BULK_JOBS = 1500
TIME = "/usr/bin/time"  # GNU time: %M is the peak RSS of the command, in KiB


def write_config(directory: Path, broker_url: str, queues: tuple[str, ...] = ("q",)) -> Path:
    path = directory / "disqontrol.yml"
    path.write_text(yaml.safe_dump({"disqontrol": {
        "broker": broker_url, "log_dir": "log", "run_dir": "run",
        "queues": {q: {"worker": {"type": "command", "command": "/bin/true"}} for q in queues},
    }}))
    return path


def park(broker: Broker, queues: list[str], body: Any = "x") -> list[str]:
    """Failed jobs as the daemon parks them, one per entry of ``queues`` (the
    queue each failed on), in that order; their failure-queue ids."""
    jobs = []
    for original_queue in queues:
        metadata = {**fresh_metadata(), ORIGINAL_QUEUE: original_queue, LAST_ERROR: {"message": "exit code 3"}}
        jobs.append(NewJob(FAILURE_QUEUE, encode_envelope(body, metadata)))
    return broker.add_many(jobs)


def run_ctl(config: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """`disqontrolctl failed ARGS` as a process, and its peak RSS in KiB.
    GNU time measures it: a child forked from this (large) test process
    would start with the test's RSS as its peak, so rusage here would not do."""
    with tempfile.NamedTemporaryFile("r") as peak:
        result = subprocess.run([TIME, "-f", "%M", "-o", peak.name, *CTL, "--config", str(config), "failed", *args],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CTL_TIMEOUT)
        return result, int(peak.read().split()[-1])


@pytest.fixture
def sqlite_config(tmp_path: Path) -> tuple[Path, Broker]:
    config = write_config(tmp_path, f"sqlite://{tmp_path}/jobs.db")
    broker = open_broker(f"sqlite://{tmp_path}/jobs.db")
    yield config, broker
    broker.close()


def test_every_failed_command_holds_a_page_not_the_whole_failure_queue(sqlite_config, tmp_path):
    config, broker = sqlite_config
    # Given the CLI's peak memory over an empty failure queue
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    _, baseline = run_ctl(write_config(empty_dir, f"sqlite://{empty_dir}/jobs.db"), "list")
    # And a failure queue of large jobs (40 MiB of payloads)
    park(broker, ["q"] * BIG_JOBS, body="b" * BIG_BODY_CHARS)

    # When every subcommand that walks the queue runs over it
    for args in (["list"], ["list", "--json", "--limit", "0"], ["retry", "--all"]):
        result, peak = run_ctl(config, *args)
        # Then each works and stays within a few pages of the empty queue's peak
        assert result.returncode == 0, (args, result.stderr)
        assert peak - baseline < RSS_BOUND_KIB, f"{args}: peak RSS {peak} KiB vs {baseline} KiB empty"
    assert broker.length(FAILURE_QUEUE) == 0 and broker.length("q") == BIG_JOBS
    park(broker, ["q"] * BIG_JOBS, body="b" * BIG_BODY_CHARS)
    result, peak = run_ctl(config, "purge", "--yes")
    assert result.returncode == 0 and result.stdout.strip() == f"{BIG_JOBS} job(s) purged", result.stderr
    assert peak - baseline < RSS_BOUND_KIB, f"purge: peak RSS {peak} KiB vs {baseline} KiB empty"
    assert broker.length(FAILURE_QUEUE) == 0


def test_retry_all_replays_what_it_can_and_names_what_it_skipped(sqlite_config):
    config, broker = sqlite_config
    # Given failed jobs of "q" around two of "gone", a queue a deploy removed
    ids = park(broker, ["q", "gone", "q", "gone", "q"])

    # When every failed job is retried
    result, _ = run_ctl(config, "retry", "--all")

    # Then the three of "q" are back on it, the jobs after the first "gone" too
    assert broker.length("q") == 3, (result.stdout, result.stderr)
    # And the two of "gone" stay in the failure queue, named with the reason, exit 1
    assert sorted(d.id for d in broker.peek(FAILURE_QUEUE, 10)) == sorted([ids[1], ids[3]])
    assert result.returncode == 1, result.stderr
    assert "3 job(s) retried, 2 skipped" in result.stdout
    skipped_line = next(line for line in result.stderr.splitlines() if ids[1] in line)
    assert ids[3] in skipped_line and "'gone'" in skipped_line and "not configured" in skipped_line


def test_failed_list_is_paged_oldest_first_and_says_how_many_more(sqlite_config):
    config, broker = sqlite_config
    # Given 120 failed jobs of "q" and 5 of "other"
    ids = park(broker, ["q"] * 60 + ["other"] * 5 + ["q"] * 60)
    config.write_text(config.read_text().replace("queues:\n", "queues:\n    other: {worker: {type: command, command: /bin/true}}\n"))

    # When the list is asked for without a limit
    result, _ = run_ctl(config, "list")
    # Then the 50 oldest are shown, and the rest is counted
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ids[:50]
    assert "75 more" in result.stderr and "--limit" in result.stderr

    # When a page further on is asked for, as JSON
    page = json.loads(run_ctl(config, "list", "--json", "--offset", "120", "--limit", "10")[0].stdout)
    assert [j["id"] for j in page] == ids[120:]
    # And when filtered by the queue the jobs failed on
    other = run_ctl(config, "list", "other", "--json", "--limit", "3")[0]
    assert [j["id"] for j in json.loads(other.stdout)] == ids[60:63] and "2 more" in other.stderr
    # And all of them at once
    assert len(json.loads(run_ctl(config, "list", "--json", "--limit", "0")[0].stdout)) == 125


def test_retry_and_purge_filtered_by_the_queue_the_jobs_failed_on(sqlite_config):
    config, broker = sqlite_config
    config.write_text(config.read_text().replace("queues:\n", "queues:\n    other: {worker: {type: command, command: /bin/true}}\n"))
    ids = park(broker, ["q", "other", "q", "other"])

    # When only "other"'s failed jobs are retried, then "q"'s purged
    retried, _ = run_ctl(config, "retry", "--all", "other")
    assert retried.returncode == 0 and "2 job(s) retried" in retried.stdout, retried.stderr
    assert broker.length("other") == 2 and broker.length("q") == 0
    purged, _ = run_ctl(config, "purge", "q", "--yes")
    # Then each touched only its own
    assert purged.returncode == 0 and purged.stdout.strip() == "2 job(s) purged", purged.stderr
    assert broker.length(FAILURE_QUEUE) == 0 and broker.length("other") == 2
    assert broker.show(ids[0]) is None


def test_a_bulk_retry_killed_half_way_loses_and_duplicates_nothing(broker_url, tmp_path):
    # Given many failed jobs of "q"
    config = write_config(tmp_path, broker_url)
    broker = open_broker(broker_url)
    try:
        park(broker, ["q"] * BULK_JOBS)
        first_ids = {decode_payload(d.payload)[1][ORIGINAL_ID] or d.id for d in broker.scan(FAILURE_QUEUE)}
        assert len(first_ids) == BULK_JOBS

        # When `failed retry --all` is killed (SIGKILL) part-way
        proc = subprocess.Popen(CTL + ["--config", str(config), "failed", "retry", "--all"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: broker.length("q") >= 20, timeout=CTL_TIMEOUT, message="the retry under way")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

        # Then it stopped part-way (or this test proves nothing)
        left, moved = broker.length(FAILURE_QUEUE), broker.length("q")
        assert left > 0 and moved > 0, (left, moved)
        # And every job is in one place or the other: none lost, none twice
        in_q = [decode_payload(d.payload)[1][ORIGINAL_ID] for d in broker.scan("q")]
        in_failed = [decode_payload(d.payload)[1][ORIGINAL_ID] or d.id for d in broker.scan(FAILURE_QUEUE)]
        assert set(in_q) | set(in_failed) == first_ids
        if not broker_url.startswith("disque"):  # disque adds, then acks: a crash between may duplicate
            assert len(in_q) + len(in_failed) == BULK_JOBS
    finally:
        broker.close()
