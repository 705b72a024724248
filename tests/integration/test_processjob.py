"""Synchronous mode (`disqontrol processjob`, Producer(synchronous=True)):
run_job_now runs the job in the foreground through the queue's real worker,
with no broker and no retry."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from disqontrol_client.config import Config, ConsumerConfig, QueueConfig, WorkerConfig
from disqontrol_client.errors import ConfigError
from disqontrol_client.job import Job
from disqontrold.sync import run_job_now

BOOTSTRAP = """
import os
def setup_environment():
    return {"factor": 3}
WORKERS = {
    "triple": lambda environment, name: (lambda job: job.body * environment["factor"]),
    "refuse": lambda environment, name: (lambda job: False),
}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    out = tmp_path / "out.txt"
    workers = {
        "triple-inline": WorkerConfig(type="inline_python_worker", name="triple"),
        "triple-isolated": WorkerConfig(type="isolated_python_worker", name="triple"),
        "refuse": WorkerConfig(type="inline_python_worker", name="refuse"),
        "shell": WorkerConfig(type="command",
                              command=f"sh -c 'printf \"%s\\n\" \"$2\" \"$3\" > {out}; case \"$2\" in *fail*) exit 4;; esac' sh"),
    }
    queues = {name: QueueConfig(name=name, worker=worker, job_process_timeout=30) for name, worker in workers.items()}
    return Config(path=None, broker=f"sqlite://{tmp_path}/jobs.db", log_dir=tmp_path, run_dir=tmp_path,
                  queues=queues, consumers=tuple(ConsumerConfig(queues=(q,)) for q in queues))


@pytest.fixture
def bootstrap(tmp_path: Path):
    path = tmp_path / "boot.py"
    path.write_text(BOOTSTRAP)
    yield path
    sys.modules.pop("disqontrol_bootstrap", None)


@pytest.mark.parametrize("queue", ["triple-inline", "triple-isolated"])
def test_python_result_comes_back(config, bootstrap, queue):
    outcome = run_job_now(config, Job(14, queue), bootstrap=bootstrap)
    assert outcome.ok and outcome.result == 42


def test_python_failure(config, bootstrap):
    outcome = run_job_now(config, Job(1, "refuse"), bootstrap=bootstrap)
    assert not outcome.ok and outcome.error == "the worker returned False"


def test_command_runs_with_fresh_metadata(config, tmp_path):
    # Given a command worker that records its body and metadata arguments
    outcome = run_job_now(config, Job({"n": 1}, "shell"))
    # Then it ran once, now, with metadata of a job that never ran
    assert outcome.ok
    body, metadata = (tmp_path / "out.txt").read_text().splitlines()
    assert body == '--body={"n":1}'
    assert json.loads(metadata.removeprefix("--metadata=")) | {"creation-time": 0} == {
        "retries": 0, "original-id": None, "creation-time": 0, "job-lifetime": 2592000, "process-timeout": 30}


def test_command_failure_is_reported(config, tmp_path):
    outcome = run_job_now(config, Job("please fail", "shell"))
    assert not outcome.ok and outcome.error == "exit code 4"
    assert (tmp_path / "out.txt").read_text().splitlines()[0] == '--body="please fail"'


def test_unknown_queue_is_a_config_error(config):
    with pytest.raises(ConfigError, match=r"unknown queue 'nope'; configured queues: refuse, shell"):
        run_job_now(config, Job(1, "nope"))


def test_disqontrol_processjob_runs_a_command_worker_end_to_end(tmp_path):
    # Given a config file whose queue runs a shell-free command worker
    out = tmp_path / "got.txt"
    script = tmp_path / "worker.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$2" > {out}\ncase "$2" in *fail*) exit 4;; esac\n')
    script.chmod(0o755)
    config = tmp_path / "disqontrol.yml"
    config.write_text(f"disqontrol:\n  broker: sqlite://{tmp_path}/jobs.db\n"
                      f"  queues:\n    shell:\n      worker: {{type: command, command: '{script}'}}\n")
    cli = Path(sys.executable).parent / "disqontrol"
    # When `disqontrol processjob` runs a good job and a failing one
    good = subprocess.run([str(cli), "processjob", "shell", '{"n": 2}', "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert out.read_text() == '--body={"n":2}\n'
    bad = subprocess.run([str(cli), "processjob", "shell", '"fail"', "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    # Then the exit codes are 0 and 1, and the error names the exit code
    assert bad.returncode == 1
    assert "exit code 4" in bad.stderr
