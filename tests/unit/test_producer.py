"""Producer: adds through a real sqlite file, refuses bad jobs before adding
anything, and keeps ``import disqontrol_client`` free of daemon modules."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from disqontrol_client import Job, Producer
from disqontrol_client.brokers import open_broker
from disqontrol_client.config import parse_config
from disqontrol_client.errors import ConfigError, UsageError
from disqontrol_client.job import decode_payload
from tests.support.procs import wait_for

FORBIDDEN = ("disqontrold", "psutil", "setproctitle", "daemon", "croniter")


def test_importing_the_client_never_imports_the_daemon_or_its_dependencies():
    # Given a fresh interpreter, When the client and its producer path are imported
    code = (
        "import sys, json, disqontrol_client\n"
        "from disqontrol_client import Producer, Job\n"
        "import disqontrol_client.cli, disqontrol_client.config, disqontrol_client.submit\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (FORBIDDEN,)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    # Then none of the daemon's modules was loaded
    assert json.loads(out.stdout) == []


@pytest.fixture
def sqlite_url(tmp_path):
    pytest.importorskip("disqontrol_client.brokers.sqlite", reason="the sqlite engine has not landed yet")
    return f"sqlite://{tmp_path}/jobs.db"


@pytest.fixture
def config(tmp_path, sqlite_url):
    section = {
        "broker": sqlite_url,
        "queues": {"mail": {"worker": {"type": "command", "command": "true"},
                            "job_process_timeout": 30, "job_lifetime": 1000}},
    }
    return parse_config({"disqontrol": section}, base_dir=tmp_path)


def stored(url: str, queue: str) -> list:
    with Producer(url) as producer:
        return producer.broker.peek(queue, 100)


def test_add_without_config_takes_any_queue_with_default_limits(sqlite_url):
    with Producer(sqlite_url) as producer:
        job = Job({"id": 5}, "anything")
        job_id = producer.add(job)
    assert job.id == job_id
    (delivery,) = stored(sqlite_url, "anything")
    body, metadata = decode_payload(delivery.payload)
    assert (delivery.id, body, metadata["job-lifetime"], metadata["process-timeout"]) == (job_id, {"id": 5}, 2592000, 600)


def test_add_with_config_uses_the_queue_limits(config):
    with Producer(config.broker, config) as producer:
        producer.add(Job("x", "mail"), delay=5)
    with Producer(config.broker) as producer:
        (delivery,) = producer.broker.peek("mail", 10)
        shown = producer.broker.show(delivery.id)
    _, metadata = decode_payload(delivery.payload)
    assert (metadata["job-lifetime"], metadata["process-timeout"]) == (1000, 30)
    assert shown["state"] == "delayed"


def test_add_many_returns_ids_in_order(config):
    with Producer(config.broker, config) as producer:
        jobs = [Job(i, "mail") for i in range(5)]
        ids = producer.add_many(jobs)
    assert ids == [job.id for job in jobs] and len(set(ids)) == 5
    bodies = {d.id: decode_payload(d.payload)[0] for d in stored(config.broker, "mail")}
    assert bodies == {job_id: i for i, job_id in enumerate(ids)}


@pytest.mark.parametrize("job, delay, error, message", [
    (Job("x", "nope"), 0, ConfigError, r"^unknown queue 'nope'; configured queues: mail$"),
    (Job("x", "mail"), -1, UsageError, r"^delay must be a number of seconds, 0 or more; got -1$"),
    (Job("x", "mail"), math.nan, UsageError, r"^delay must be a number of seconds, 0 or more; got nan$"),
    (Job("x", "mail"), "5", UsageError, r"^delay must be a number of seconds, 0 or more; got '5'$"),
    (Job({1, 2}, "mail"), 0, UsageError, r"^the body of a job for queue 'mail' is not JSON-serializable"),
    # Python would store NaN / Infinity, which PHP and jq cannot read
    (Job({"ratio": math.nan}, "mail"), 0, UsageError,
     r"^the body of a job for queue 'mail' is not JSON-serializable: Out of range float values"),
    (Job([math.inf], "mail"), 0, UsageError, r"^the body of a job for queue 'mail' is not JSON-serializable"),
    # a job carrying metadata the retry path cannot count with (it raised
    # ValueError / TypeError from add)
    (Job("x", "mail", {"creation-time": "2026-11-28"}), 0, UsageError,
     r"^metadata 'creation-time' of a job for queue 'mail' is '2026-11-28'; allowed: a count >= 0 \(retries\)"),
    (Job("x", "mail", {"job-lifetime": None}), 0, UsageError, r"^metadata 'job-lifetime' of a job for queue 'mail' is None"),
    (Job("x", "two words"), 0, UsageError, r"^a queue name is one non-empty word; got 'two words'$"),
])
def test_bad_job_is_refused_and_nothing_is_added(config, job, delay, error, message):
    with Producer(config.broker, config) as producer:
        with pytest.raises(error, match=message):
            producer.add(job, delay=delay)
        # a batch with one bad job adds none of the good ones
        with pytest.raises(error, match=message):
            producer.add_many([Job("good", "mail"), job], delay=delay)
        assert producer.broker.queues() == []


def test_synchronous_mode_needs_a_config(sqlite_url):
    with pytest.raises(UsageError, match="^synchronous mode needs a config"):
        Producer(sqlite_url, synchronous=True)


def test_a_long_lived_producer_follows_a_database_file_deleted_under_it(tmp_path):
    # Given an app's producer that has added a job to a sqlite file
    db = tmp_path / "jobs.db"
    producer = Producer(f"sqlite://{db}")
    producer.add(Job(0, "q"))

    # When the file is deleted (an operator starting afresh)
    for path in tmp_path.glob("jobs.db*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    # Then within about a second its adds land in the new file, where the daemon reads
    def in_new_file() -> int:
        producer.add(Job(1, "q"))
        with open_broker(f"sqlite://{db}") as fresh:
            return fresh.length("q")
    wait_for(in_new_file, timeout=10, interval=0.1, message="a job in the new file")
    producer.close()


# An app whose request threads share one Producer while an operator deletes
# the database (each second, so that each deletion is one reopen): it prints
# how many adds raised and why. Run in a process of its own: it crashed.
SHARED_PRODUCER_APP = """
import glob, os, shutil, sys, threading, time
from disqontrol_client import Job, Producer

db_dir = sys.argv[1]
producer = Producer(f"sqlite://{db_dir}/jobs.db")
producer.add(Job(0, "q"))
errors = []
stop = time.monotonic() + float(sys.argv[2]) * (float(sys.argv[3]) + 0.5)

def requests():
    while time.monotonic() < stop:
        try:
            producer.add(Job(1, "q"))
        except Exception as exc:
            errors.append(repr(exc))

threads = [threading.Thread(target=requests) for _ in range(int(sys.argv[4]))]
for thread in threads:
    thread.start()
for _ in range(int(sys.argv[2])):
    time.sleep(float(sys.argv[3]))
    for path in glob.glob(f"{db_dir}/jobs.db*"):
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
for thread in threads:
    thread.join()
producer.close()
print(len(errors), sorted(set(errors))[:3])
"""
DELETIONS = 3
DELETION_INTERVAL = 1.1  # s: past Broker.MOVED_CHECK_INTERVAL, so each deletion is seen
APP_THREADS = 8


def test_threads_sharing_a_producer_survive_its_reopen_after_the_database_is_deleted(tmp_path):
    # Given an app's threads adding through one Producer
    # When its database is deleted under it, again and again
    app = subprocess.run([sys.executable, "-c", SHARED_PRODUCER_APP, str(tmp_path), str(DELETIONS),
                          str(DELETION_INTERVAL), str(APP_THREADS)],
                         capture_output=True, text=True, timeout=60)

    # Then the app neither crashed (a connection closed under a thread) nor saw an add fail
    assert app.returncode == 0, app.stderr[-2000:]
    assert app.stdout.split()[:1] == ["0"], app.stdout
