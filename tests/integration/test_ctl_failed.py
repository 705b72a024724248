"""disqontrolctl failed list / show / retry / purge on real failed jobs, and
exit 3 when the broker does not answer."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from disqontrol_client.job import LAST_ERROR, ORIGINAL_QUEUE, RETRIES, decode_payload
from tests.integration.ctl_support import CTL, ctl, ctl_json
from tests.support.daemon import Daemon, python_worker
from tests.support.procs import wait_for

FAILURE_QUEUE = "failed-jobs"


def test_failed_jobs_are_listed_shown_retried_and_purged(broker_url, tmp_path):
    # Given three jobs that failed for good on two queues (no retries allowed)
    daemon = Daemon(tmp_path, broker_url, {
        "a": {"worker": python_worker(), "max_retries": 0},
        "b": {"worker": python_worker(), "max_retries": 0},
    }).start(consumers=2)
    try:
        daemon.add("a", [{"n": 1, "fail": True}, {"n": 2, "fail": True}])
        daemon.add("b", [{"n": 3, "fail": True}])
        wait_for(lambda: daemon.broker.length(FAILURE_QUEUE) == 3, timeout=60, message="3 parked jobs")
    finally:
        daemon.stop()  # the failed commands need no master: the broker is enough

    # When they are listed
    listed = ctl_json(daemon, "failed", "list")
    # Then each shows its queue, retries and last error
    assert sorted(j["queue"] for j in listed) == ["a", "a", "b"]
    assert all(j["failure_queue"] == FAILURE_QUEUE and "asked to fail" in j["last_error"] for j in listed)
    by_n = {j["body"]["n"]: j for j in listed}
    table = ctl(daemon, "failed", "list", "b")
    assert table.returncode == 0 and by_n[3]["id"] in table.stdout and by_n[1]["id"] not in table.stdout
    assert [j["body"]["n"] for j in ctl_json(daemon, "failed", "list", "a")] in ([1, 2], [2, 1])

    # When one is shown
    shown = ctl(daemon, "failed", "show", by_n[3]["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["body"] == {"n": 3, "fail": True}

    # When one is retried
    retried = ctl(daemon, "failed", "retry", by_n[1]["id"])
    assert retried.returncode == 0, retried.stderr
    # Then it is back on its queue with retries reset and no failure marks
    [(body, metadata)] = [decode_payload(d.payload) for d in daemon.broker.peek("a", 10)]
    assert body == {"n": 1, "fail": True} and metadata[RETRIES] == 0
    assert LAST_ERROR not in metadata and ORIGINAL_QUEUE not in metadata
    assert daemon.broker.show(by_n[1]["id"]) is None

    # When b's failed jobs are purged and the rest retried with --all
    purged = ctl(daemon, "failed", "purge", "b", "--yes")
    assert purged.returncode == 0 and purged.stdout.strip() == "1 job(s) purged"
    again = ctl(daemon, "failed", "retry", "--all")
    assert again.returncode == 0 and again.stdout.strip().endswith("1 job(s) retried")
    # Then the failure queue is empty, "a" holds both jobs, "b" none
    assert daemon.broker.length(FAILURE_QUEUE) == 0
    assert sorted(decode_payload(d.payload)[0]["n"] for d in daemon.broker.peek("a", 10)) == [1, 2]
    assert daemon.broker.length("b") == 0

    # And an unknown id is a usage error naming it
    unknown = ctl(daemon, "failed", "show", by_n[3]["id"])
    assert unknown.returncode == 2 and by_n[3]["id"] in unknown.stderr
    assert ctl(daemon, "failed", "retry").returncode == 2


def test_a_failed_job_is_found_by_the_id_it_was_added_with(broker_url, tmp_path):
    # Given a job that was retried twice and then parked: its id changed with each copy
    daemon = Daemon(tmp_path, broker_url, {
        "a": {"worker": python_worker(), "max_retries": 2, "failure_strategy": "retry_immediately"},
    }).start()
    try:
        [added_id] = daemon.add("a", [{"fail": True}])
        wait_for(lambda: daemon.broker.length(FAILURE_QUEUE) == 1, timeout=60, message="the parked job")
    finally:
        daemon.stop()
    [parked] = ctl_json(daemon, "failed", "list")
    assert parked["id"] != added_id

    # When the operator looks it up by the id the producer printed
    shown = ctl(daemon, "failed", "show", added_id)
    listed = ctl(daemon, "failed", "list")
    # Then show finds the parked copy, and the list names the first id beside it
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == parked["id"]
    assert "FIRST ID" in listed.stdout and added_id in listed.stdout

    # When it is retried by that id, the parked copy goes back to its queue
    retried = ctl(daemon, "failed", "retry", added_id)
    assert retried.returncode == 0, retried.stderr
    assert parked["id"] in retried.stdout and daemon.broker.length(FAILURE_QUEUE) == 0
    # And once it is gone, the id is one clear usage error
    gone = ctl(daemon, "failed", "show", added_id)
    assert gone.returncode == 2 and added_id in gone.stderr and "Traceback" not in gone.stderr


def test_a_shared_failure_queue_is_not_counted_against_every_queue(tmp_path):
    # Given two queues sharing the failure queue, and one job parked from "a" only
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "a": {"worker": python_worker(), "max_retries": 0},
        "b": {"worker": python_worker(), "max_retries": 0},
    }).start(consumers=2)
    try:
        daemon.add("a", [{"fail": True}])
        wait_for(lambda: daemon.broker.length(FAILURE_QUEUE) == 1, timeout=60, message="the parked job")
        # When the operator reads the status and the queues
        outputs = [ctl(daemon, "status"), ctl(daemon, "queues")]
    finally:
        daemon.stop()
    for result in outputs:
        assert result.returncode == 0, result.stderr
        rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
        # Then no queue's row carries the failure count ("b" showed 1 failed job: a's)
        assert rows["a"][1:] == rows["b"][1:] == ["0", "0", "0", "-", FAILURE_QUEUE], result.stdout  # "-": no latency
        # and the failure queue's own line does
        assert rows[FAILURE_QUEUE] == [FAILURE_QUEUE, "1"], result.stdout


def test_no_broker_answering_exits_3(tmp_path, refused_port):
    config = tmp_path / "disqontrol.yml"
    config.write_text(yaml.safe_dump({"disqontrol": {
        "broker": f"redis://127.0.0.1:{refused_port}/0", "log_dir": "log", "run_dir": "run",
        "queues": {"q": {"worker": {"type": "command", "command": "/bin/true"}}},
    }}))
    for args in (["queues"], ["failed", "list"]):
        result = subprocess.run(CTL + ["--config", str(config), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 3, (args, result.stderr)
        assert "127.0.0.1" in result.stderr
