"""The real `disqontrol` console script against a real sqlite file: what it
prints, what lands in the broker, and the exit code of each error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from disqontrol_client.brokers import open_broker
from disqontrol_client.job import decode_payload

CLI = str(Path(sys.executable).parent / "disqontrol")
RUN_TIMEOUT = 60  # s: generous, the machine is shared


@pytest.fixture
def setup(tmp_path):
    """A config with a sqlite broker and two queues; returns (config path, broker URL)."""
    pytest.importorskip("disqontrol_client.brokers.sqlite", reason="the sqlite engine has not landed yet")
    path = tmp_path / "disqontrol.yml"
    path.write_text(textwrap.dedent("""\
        disqontrol:
          broker: sqlite:jobs.db
          queues:
            resize-pic: {worker: {type: command, command: "true"}, job_lifetime: 1000}
            mail: {worker: {type: command, command: "true"}}
        """))
    return path, f"sqlite://{tmp_path}/jobs.db"


def run(*args: str, stdin: str = "", cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, cwd=cwd, env=env)


@pytest.mark.parametrize("stdin", [b'"caf\xe9"', b'{"name": "\xff"}'])
def test_addjob_refuses_a_body_on_stdin_that_is_not_utf8(setup, stdin):
    # Python's stdin in a C locale (cron, systemd) turns bad bytes into
    # surrogates: the user was told the body was "not JSON-serializable"
    config, url = setup
    done = subprocess.run([CLI, "addjob", "mail", "-", "--config", str(config)], input=stdin,
                          capture_output=True, timeout=RUN_TIMEOUT, env={**os.environ, "LC_ALL": "C"})
    assert done.returncode == 2
    assert done.stderr.decode().startswith("disqontrol: BODY on stdin is not UTF-8 text ("), done.stderr
    assert done.stderr.decode().endswith("); JSON must be UTF-8\n")
    assert jobs_in(url, "mail") == []


def jobs_in(url: str, queue: str) -> list:
    with open_broker(url) as broker:
        return broker.peek(queue, 100)


def test_addjob_prints_the_id_and_the_job_is_in_the_broker(setup):
    config, url = setup
    done = run("addjob", "resize-pic", '"example-pic.png"', "--config", str(config))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    (job,) = jobs_in(url, "resize-pic")
    body, metadata = decode_payload(job.payload)
    assert (job.id, body, metadata["job-lifetime"], metadata["retries"]) == (job_id, "example-pic.png", 1000, 0)
    assert done.stderr == ""


def test_config_may_come_before_the_command_as_disqontrolctl_takes_it(setup):
    # Given the habit of `disqontrolctl --config P status`
    config, url = setup
    # When addjob is given its --config (and -v) before the command
    done = run("--config", str(config), "-v", "addjob", "mail", '"x"')
    # Then the job is added (it was refused: "invalid choice: '<config path>'")
    assert done.returncode == 0, done.stderr
    assert [j.id for j in jobs_in(url, "mail")] == [done.stdout.strip()]
    # and a --config after the command still wins over one before it
    other = run("--config", "/nonexistent.yml", "addjob", "mail", '"y"', "--config", str(config))
    assert other.returncode == 0, other.stderr


def test_addjob_reads_the_body_from_stdin(setup):
    config, url = setup
    done = run("addjob", "mail", "-", "--config", str(config), stdin='{"id": 5, "to": ["a@b.c"]}\n')
    assert done.returncode == 0, done.stderr
    (job,) = jobs_in(url, "mail")
    assert (job.id, decode_payload(job.payload)[0]) == (done.stdout.strip(), {"id": 5, "to": ["a@b.c"]})


def test_addjob_with_delay_stores_a_delayed_job(setup):
    config, url = setup
    done = run("addjob", "mail", "1", "--delay", "3600", "--config", str(config))
    assert done.returncode == 0, done.stderr
    with open_broker(url) as broker:
        assert broker.show(done.stdout.strip())["state"] == "delayed"


def test_config_found_through_the_environment(setup, tmp_path):
    config, url = setup
    env = {"PATH": "/usr/bin:/bin", "DISQONTROL_CONFIG": str(config)}
    done = run("addjob", "mail", '"x"', cwd=tmp_path.parent, env=env)
    assert done.returncode == 0, done.stderr
    assert [j.id for j in jobs_in(url, "mail")] == [done.stdout.strip()]


@pytest.mark.parametrize("args, message", [
    (("mail", "pic.png"), "disqontrol: BODY is not valid JSON (Expecting value: line 1 column 1 (char 0)): "
                          "'pic.png'; quote a string body as JSON, e.g. '\"pic.png\"'"),
    (("mail", '{"ratio": NaN}'), "disqontrol: BODY is not valid JSON (NaN is not JSON): '{\"ratio\": NaN}'; "
                                 "quote a string body as JSON, e.g. '\"pic.png\"'"),
    (("mail", "[Infinity]"), "disqontrol: BODY is not valid JSON (Infinity is not JSON): '[Infinity]'; "
                             "quote a string body as JSON, e.g. '\"pic.png\"'"),
    (("nope", '"x"'), "disqontrol: unknown queue 'nope'; configured queues: mail, resize-pic"),
    (("mail", '"x"', "--delay", "-5"), "disqontrol: delay must be a number of seconds, 0 or more; got -5.0"),
])
def test_addjob_error_exits_2_with_one_line_and_adds_nothing(setup, args, message):
    config, url = setup
    done = run("addjob", *args, "--config", str(config))
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")
    with open_broker(url) as broker:
        assert broker.queues() == []


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "disqontrol.yml"
    config.write_text("disqontrol:\n  queues:\n    q: {worker: {type: inline_php, name: x}}\n")
    done = run("addjob", "q", '"x"', "--config", str(config))
    assert done.returncode == 2
    assert done.stderr == ("disqontrol: disqontrol.queues.q.worker.type: 'inline_php' is not one of "
                           "['command', 'inline_python_worker', 'isolated_python_worker', 'http']\n")


def test_no_config_anywhere_exits_2(tmp_path):
    done = run("addjob", "q", '"x"', cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.startswith("disqontrol: no config file found; looked at --config (not given)")


def test_unreachable_broker_exits_3(tmp_path, refused_port):
    pytest.importorskip("disqontrol_client.brokers.redis", reason="the redis engine has not landed yet")
    config = tmp_path / "disqontrol.yml"
    config.write_text(textwrap.dedent(f"""\
        disqontrol:
          broker: redis://127.0.0.1:{refused_port}/0
          queues: {{mail: {{worker: {{type: command, command: "true"}}}}}}
        """))
    done = run("addjob", "mail", '"x"', "--config", str(config))
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr.startswith("disqontrol: ") and len(done.stderr.splitlines()) == 1


def test_usage_error_of_argparse_exits_2():
    done = run("addjob")
    assert done.returncode == 2 and "usage: disqontrol addjob" in done.stderr


# --- processjob: the synchronous run ---------------------------------------------

@pytest.fixture
def python_queue(tmp_path):
    pytest.importorskip("disqontrold.sync", reason="the synchronous runner has not landed yet")
    (tmp_path / "bootstrap.py").write_text(textwrap.dedent("""\
        def double(job):
            if job.body < 0:
                raise ValueError(f"negative: {job.body}")
            return job.body * 2

        WORKERS = {"double": lambda environment, name: double}
        """))
    config = tmp_path / "disqontrol.yml"
    config.write_text(textwrap.dedent("""\
        disqontrol:
          broker: sqlite:jobs.db
          queues:
            double: {worker: {type: inline_python_worker, name: double}}
        """))
    return config, tmp_path / "bootstrap.py"


def test_processjob_runs_the_job_now_and_prints_its_result(python_queue):
    config, bootstrap = python_queue
    done = run("processjob", "double", "21", "--config", str(config), "--bootstrap", str(bootstrap))
    assert (done.returncode, json.loads(done.stdout)) == (0, 42), done.stderr
    assert not (config.parent / "jobs.db").exists() or jobs_in(f"sqlite://{config.parent}/jobs.db", "double") == []


def test_processjob_failure_exits_1_with_the_error(python_queue):
    config, bootstrap = python_queue
    done = run("processjob", "double", "-1", "--config", str(config), "--bootstrap", str(bootstrap))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "disqontrol: job on queue 'double' failed: ValueError: negative: -1"
    # the worker's log line carries the local id of the synchronous job
    assert "job=sync-" in done.stderr


# --- the shipped example: etc/disqontrol.yml and its workers really run ----------

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = ("--config", str(REPO / "etc" / "disqontrol.yml"), "--bootstrap", str(REPO / "etc" / "disqontrol_bootstrap.py"))


@pytest.mark.parametrize("queue, body, code, out", [
    ("greet", '{"name": "Ann"}', 0, '"Hello, Ann!"\n'),  # inline worker from the bootstrap
    ("count-words", '"a b c"', 0, "3\n"),  # isolated worker from the bootstrap
    ("count-words", "5", 1, ""),  # ... refusing a non-string body
    ("resize-pic", '"p.png"', 0, ""),  # the command worker examples/resize_pic.py
    ("resize-pic", '{"fail": true}', 1, ""),
    # above 64 KiB of JSON the body comes on stdin (--body=-), and the example reads it there
    pytest.param("resize-pic", '{"pic": "%s"}' % ("x" * 100_000), 0, "", id="resize-pic-large-body"),
])
def test_example_config_workers_run_from_any_cwd(queue, body, code, out, tmp_path):
    pytest.importorskip("disqontrold.sync", reason="the synchronous runner has not landed yet")
    # from an unrelated cwd: the example's relative paths are relative to etc/
    done = run("processjob", queue, body, *EXAMPLE, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (code, out), done.stderr
