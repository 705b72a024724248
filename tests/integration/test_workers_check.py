"""check_workers, as `disqontrold --check`, the start and a reload run it:
every unbuildable worker is named by its key path, and the checking process
itself imports no user code."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from disqontrol_client.config import Config, ConsumerConfig, QueueConfig, WorkerConfig
from disqontrol_client.errors import WorkerLoadError
from disqontrold.workers import build_worker, check_workers
from disqontrold.workers.command import CommandWorker

BOOTSTRAP = """
import myapp_check_workers
IMPORTED_IN = __import__("os").getpid()
WORKERS = {"pic_resize_worker": lambda environment, name: (lambda job: job.body)}
"""


def make_config(tmp_path: Path, **workers: WorkerConfig) -> Config:
    queues = {name: QueueConfig(name=name, worker=worker) for name, worker in workers.items()}
    return Config(path=None, broker=f"sqlite://{tmp_path}/jobs.db", log_dir=tmp_path, run_dir=tmp_path,
                  queues=queues, consumers=tuple(ConsumerConfig(queues=(q,)) for q in queues))


@pytest.fixture
def app(tmp_path: Path, monkeypatch):
    """A bootstrap file and an application package beside it."""
    (tmp_path / "myapp_check_workers.py").write_text("def rss_update(job):\n    return True\n")
    bootstrap = tmp_path / "boot.py"
    bootstrap.write_text(BOOTSTRAP)
    monkeypatch.chdir(tmp_path)
    return bootstrap


def test_a_good_config_passes_without_importing_user_code_here(tmp_path, app):
    config = make_config(
        tmp_path,
        email=WorkerConfig(type="command", command="sh -c true"),
        pics=WorkerConfig(type="inline_python_worker", name="pic_resize_worker"),
        rss=WorkerConfig(type="isolated_python_worker", name="myapp_check_workers:rss_update"),
        hook=WorkerConfig(type="http", address="http://127.0.0.1:9/"),
    )
    check_workers(config, app)
    # The check ran in a child: neither the bootstrap nor the app is imported here
    assert "disqontrol_bootstrap" not in sys.modules
    assert "myapp_check_workers" not in sys.modules


def test_every_bad_worker_is_named_by_its_key(tmp_path, app):
    config = make_config(
        tmp_path,
        email=WorkerConfig(type="command", command="php-missing-xyz console email:send"),
        local=WorkerConfig(type="command", command="./not-here.sh"),
        quote=WorkerConfig(type="command", command="sh -c 'unclosed"),
        pics=WorkerConfig(type="inline_python_worker", name="nope"),
        rss=WorkerConfig(type="isolated_python_worker", name="myapp_check_workers:nope"),
        gone=WorkerConfig(type="isolated_python_worker", name="myapp_gone_xyz:f"),
    )
    with pytest.raises(WorkerLoadError) as caught:
        check_workers(config, app)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("disqontrol.queues.email.worker.command: 'php-missing-xyz' "
                               "(from 'php-missing-xyz console email:send') is not found on PATH")
    assert lines[1] == "disqontrol.queues.local.worker.command: './not-here.sh' (from './not-here.sh') is not an executable file"
    assert lines[2].startswith("disqontrol.queues.quote.worker.command: \"sh -c 'unclosed\" cannot be split")
    assert lines[3] == ("disqontrol.queues.gone.worker.name: 'myapp_gone_xyz:f' cannot be loaded: "
                        "ModuleNotFoundError: No module named 'myapp_gone_xyz'")
    assert lines[4].startswith(f"disqontrol.queues.pics.worker.name: 'nope' cannot be loaded: it is not in WORKERS of {app}")
    assert lines[5] == ("disqontrol.queues.rss.worker.name: 'myapp_check_workers:nope' cannot be loaded: "
                        "module 'myapp_check_workers' has no attribute 'nope'")
    assert len(lines) == 6


def test_an_explicit_bootstrap_must_exist(tmp_path):
    config = make_config(tmp_path, pics=WorkerConfig(type="inline_python_worker", name="x"))
    with pytest.raises(WorkerLoadError, match=r"^--bootstrap: '.*missing.py' does not exist"):
        check_workers(config, tmp_path / "missing.py")


def test_a_missing_default_bootstrap_is_fine_for_path_names(tmp_path, app):
    config = make_config(tmp_path, rss=WorkerConfig(type="inline_python_worker", name="myapp_check_workers:rss_update"))
    # Given no ./disqontrol_bootstrap.py (the default), and a module:callable name
    app.rename(tmp_path / "elsewhere.py")
    # Then the check passes: it raises WorkerLoadError for anything it refuses
    assert check_workers(config, None) is None


def test_a_worker_name_without_a_bootstrap_file_says_where_and_how(tmp_path, monkeypatch):
    # Given a WORKERS name, run from a directory without ./disqontrol_bootstrap.py
    # (`disqontrold --config etc/disqontrol.yml` from the checkout, where it is etc/'s)
    config = make_config(tmp_path, greet=WorkerConfig(type="inline_python_worker", name="greet"))
    monkeypatch.chdir(tmp_path)
    # When the workers are checked
    with pytest.raises(WorkerLoadError) as caught:
        check_workers(config, None)
    # Then the one line says the file is missing where it was looked for, and how to name it
    message = str(caught.value)
    assert message.startswith("disqontrol.queues.greet.worker.name: 'greet' cannot be loaded: there is no bootstrap file")
    assert f"does not exist in {tmp_path}" in message and "--bootstrap PATH" in message


def test_a_bootstrap_that_fails_to_import_is_reported(tmp_path):
    bad = tmp_path / "bad_boot.py"
    bad.write_text("raise RuntimeError('no database')\n")
    config = make_config(tmp_path, pics=WorkerConfig(type="inline_python_worker", name="x"))
    with pytest.raises(WorkerLoadError, match=r"--bootstrap: '.*bad_boot.py' failed to load: RuntimeError: no database"):
        check_workers(config, bad)


def test_build_worker_picks_the_type(tmp_path):
    queue = QueueConfig(name="email", worker=WorkerConfig(type="command", command="sh -c true"))
    worker = build_worker(queue, None)
    assert isinstance(worker, CommandWorker) and worker.concurrent
    with pytest.raises(WorkerLoadError, match=r"^disqontrol.queues.email.worker.command: 'php-missing-xyz'"):
        build_worker(QueueConfig(name="email", worker=WorkerConfig(type="command", command="php-missing-xyz")), None)


def test_a_bootstrap_that_exits_is_reported_as_itself_not_as_a_status(tmp_path):
    # SystemExit escapes the bootstrap loader's `except Exception`: the checker
    # child used to die silently ("exited with status 768")
    bad = tmp_path / "exiting_boot.py"
    bad.write_text("import sys\nsys.exit(3)\n")
    config = make_config(tmp_path, pics=WorkerConfig(type="inline_python_worker", name="x"))
    with pytest.raises(WorkerLoadError, match=r"^checking the Python workers .*: the checker raised SystemExit: 3 "
                                              r"\(at File .*exiting_boot.py"):
        check_workers(config, bad)
