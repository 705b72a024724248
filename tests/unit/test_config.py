"""Config loading: the example loads, each class of bad config is refused
with its exact one-line message, lookup order, relative path resolution."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from disqontrol_client import config as config_module
from disqontrol_client.config import Config, ConfigError, ConsumerConfig, find_config_path, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"queues": {"mail": {"worker": {"type": "command", "command": "true"}}}}


def write(tmp_path: Path, text: str, name: str = "disqontrol.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def refused(section: dict, tmp_path: Path) -> str:
    """The message of the ConfigError the ``disqontrol:`` section raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"disqontrol": section}, base_dir=tmp_path)
    return str(caught.value)


def with_queue(**queue) -> dict:
    return {"queues": {"q": {"worker": {"type": "command", "command": "true"}, **queue}}}


# --- the example and the defaults --------------------------------------------

def test_example_config_loads_with_its_queues_and_paths_under_var():
    # Given the shipped example, When it is loaded from any cwd
    config = load_config(REPO / "etc" / "disqontrol.yml")
    # Then its queues are there and its state lands in var/ beside the checkout
    assert set(config.queues) == {"resize-pic", "greet", "count-words"}
    assert config.broker == f"sqlite://{REPO}/var/disqontrol.db"
    assert config.log_dir == REPO / "var" / "log"
    assert config.run_dir == REPO / "var" / "run"
    assert config.scheduler is not None and config.scheduler.crontab == REPO / "etc" / "crontab"
    assert config.queues["resize-pic"].max_retries == 5
    assert config.queues["greet"].max_retries == 37  # from queue_defaults


def test_defaults_of_spec_section_3(tmp_path):
    config = parse_config({"disqontrol": MINIMAL}, base_dir=tmp_path)
    queue = config.queue("mail")
    assert (queue.job_process_timeout, queue.job_lifetime, queue.failure_strategy) == (600, 2592000, "retry")
    assert (queue.max_retries, queue.failure_queue, queue.backoff_scale) == (37, "failed-jobs", 1.0)
    assert config.broker == f"sqlite://{tmp_path}/disqontrol.db"
    assert (config.log_dir, config.run_dir) == (tmp_path / "log", tmp_path / "run")
    (group,) = config.consumers
    assert (group.queues, group.min_processes, group.max_processes, group.autoscale, group.job_batch) == (
        ("mail",), 1, 5, True, 10)
    assert config.scheduler is None


def test_unlisted_queues_get_a_default_group_each_and_failure_queues_none(tmp_path):
    section = {
        "queues": {name: {"worker": {"type": "command", "command": "true"}} for name in ("a", "b", "c")},
        "consumer_defaults": {"max_processes": 7},
        "consumers": [{"queues": ["a", "b"], "max_processes": 2}],
    }
    config = parse_config({"disqontrol": section}, base_dir=tmp_path)
    assert [(c.queues, c.max_processes) for c in config.consumers] == [(("a", "b"), 2), (("c",), 7)]
    assert "failed-jobs" not in {q for c in config.consumers for q in c.queues}


def test_queue_overrides_queue_defaults_which_override_builtins(tmp_path):
    section = {**with_queue(max_retries=3), "queue_defaults": {"max_retries": 9, "job_process_timeout": 5}}
    queue = parse_config({"disqontrol": section}, base_dir=tmp_path).queue("q")
    assert (queue.max_retries, queue.job_process_timeout) == (3, 5)


def test_config_is_frozen_hashable_and_keeps_raw(tmp_path):
    data = {"disqontrol": {**MINIMAL, "queues": {"mail": {"worker": {
        "type": "http", "address": "http://127.0.0.1:1/", "headers": {"X-A": "b"}, "method": "GET"}}}}}
    config = parse_config(data, base_dir=tmp_path)
    assert config == parse_config(data, base_dir=tmp_path)
    assert hash(config) == hash(parse_config(data, base_dir=tmp_path))
    assert config.raw == data
    assert config.queue("mail").worker.method == "get"
    with pytest.raises(TypeError):
        config.queue("mail").worker.headers["X-A"] = "c"  # type: ignore[index]


def test_unknown_queue_lookup_names_the_configured_ones(tmp_path):
    config = parse_config({"disqontrol": MINIMAL}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^unknown queue 'nope'; configured queues: mail$"):
        config.queue("nope")


# --- one test per class of bad config ------------------------------------------

def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    assert refused({**MINIMAL, "queue_defaults": {"max_retry": 3}}, tmp_path) == (
        "disqontrol.queue_defaults.max_retry: unknown key; allowed: backoff_scale, failure_queue, "
        "failure_strategy, job_lifetime, job_process_timeout, max_retries")


def test_unknown_worker_key_lists_the_keys_of_that_worker_type(tmp_path):
    section = {"queues": {"q": {"worker": {"type": "command", "command": "true", "adress": "x"}}}}
    assert refused(section, tmp_path) == "disqontrol.queues.q.worker.adress: unknown key; allowed: command, type"


def test_key_of_another_worker_type_is_refused(tmp_path):
    section = {"queues": {"q": {"worker": {"type": "command", "command": "true", "address": "http://x"}}}}
    assert refused(section, tmp_path) == (
        "disqontrol.queues.q.worker.address: not a key of a command worker; allowed: command, type")


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config({"disqontrol": MINIMAL, "extra": 1}, base_dir=tmp_path)
    assert str(caught.value) == "extra: unknown key; allowed: disqontrol"


def test_wrong_type(tmp_path):
    assert refused(with_queue(max_retries="ten"), tmp_path) == (
        "disqontrol.queues.q.max_retries: 'ten' is not of type 'integer'")


def test_boolean_is_not_an_integer(tmp_path):
    assert refused(with_queue(max_retries=True), tmp_path) == (
        "disqontrol.queues.q.max_retries: True is not of type 'integer'")


def test_unknown_worker_type(tmp_path):
    section = {"queues": {"pic-resize": {"worker": {"type": "inline_php", "name": "x"}}}}
    assert refused(section, tmp_path) == (
        "disqontrol.queues.pic-resize.worker.type: 'inline_php' is not one of "
        "['command', 'inline_python_worker', 'isolated_python_worker', 'http']")


@pytest.mark.parametrize("worker, missing", [
    ({"type": "command"}, "command"),
    ({"type": "inline_python_worker"}, "name"),
    ({"type": "isolated_python_worker"}, "name"),
    ({"type": "http"}, "address"),
])
def test_worker_type_needs_its_key(tmp_path, worker, missing):
    assert refused({"queues": {"q": {"worker": worker}}}, tmp_path) == (
        f"disqontrol.queues.q.worker: '{missing}' is a required property")


def test_queue_without_worker(tmp_path):
    assert refused({"queues": {"q": {"max_retries": 1}}}, tmp_path) == (
        "disqontrol.queues.q: 'worker' is a required property")


def test_consumer_naming_an_undefined_queue(tmp_path):
    section = {**MINIMAL, "consumers": [{"queues": ["mail", "nope"]}]}
    assert refused(section, tmp_path) == (
        "disqontrol.consumers[0].queues[1]: 'nope' is not a configured queue; configured: mail")


def test_failure_queue_is_not_consumed_unless_configured(tmp_path):
    section = {**MINIMAL, "consumers": [{"queues": ["failed-jobs"]}]}
    assert refused(section, tmp_path) == (
        "disqontrol.consumers[0].queues[0]: 'failed-jobs' is not a configured queue; configured: mail")


def test_queue_in_two_consumer_groups(tmp_path):
    section = {**MINIMAL, "consumers": [{"queues": ["mail"]}, {"queues": ["mail"]}]}
    assert refused(section, tmp_path) == (
        "disqontrol.consumers[1].queues[0]: 'mail' is already consumed by disqontrol.consumers[0]; "
        "a queue belongs to one consumer group")


def test_job_lifetime_above_disque_maximum(tmp_path):
    assert refused(with_queue(job_lifetime=3932101), tmp_path) == (
        "disqontrol.queues.q.job_lifetime: 3932101 is greater than the maximum of 3932100")


@pytest.mark.parametrize("batch, message", [
    (0, "0 is less than the minimum of 1"),
    (100, "100 is greater than the maximum of 99"),
])
def test_job_batch_outside_1_to_99(tmp_path, batch, message):
    section = {**MINIMAL, "consumer_defaults": {"job_batch": batch}}
    assert refused(section, tmp_path) == f"disqontrol.consumer_defaults.job_batch: {message}"


def test_min_processes_above_max_processes(tmp_path):
    section = {**MINIMAL, "consumers": [{"queues": ["mail"], "min_processes": 6}]}
    assert refused(section, tmp_path) == (
        "disqontrol.consumers[0]: min_processes (6) is greater than max_processes (5)")


def test_broker_and_disque_together(tmp_path):
    section = {**MINIMAL, "broker": "redis://127.0.0.1:6379/0", "disque": [{"host": "127.0.0.1"}]}
    assert refused(section, tmp_path) == "disqontrol.disque: give either broker or disque, not both"


def test_unknown_broker_scheme(tmp_path):
    assert refused({**MINIMAL, "broker": "amqp://x"}, tmp_path) == (
        "disqontrol.broker: 'amqp://x' has an unknown scheme 'amqp'; allowed: disque, redis, rediss, sqlite")


@pytest.mark.parametrize("key, url, message", [
    ("broker", "redis://127.0.0.1:6379/0?prefix={x}",
     "prefix '{x}' is invalid: a non-empty name without braces is required"),
    ("broker", "redis://:pw@127.0.0.1:6379/0?decode_responses=true",
     "option decode_responses='true' in 'redis://:***@127.0.0.1:6379/0?decode_responses=true' is not allowed"),
    ("broker", "disque://127.0.0.1:7711?replicate=0", "option replicate='0' in 'disque://127.0.0.1:7711?replicate=0'"),
    # the path as written: resolved against "/", it named another file (/jobs.db)
    ("broker", "sqlite:jobs.db?shards=17",
     "'sqlite://jobs.db?shards=17' has shards='17'; allowed: a whole number from 1 to 16"),
    ("broker", "sqlite:///var/lib/q.db?mode=ro",
     "'sqlite:///var/lib/q.db?mode=ro' has an unknown option 'mode'; a sqlite URL takes only shards=N"),
    ("scheduler.claim_store", "redis://127.0.0.1:6379/1?socket_timout=5",
     "'redis://127.0.0.1:6379/1?socket_timout=5' is not a valid redis URL: "),
])
def test_a_broker_url_its_engine_refuses_is_refused_by_validation(tmp_path, key, url, message):
    # --check said OK and the daemon started; each consumer then raised the
    # engine's ConfigError at start, crash-looping (a reload did the same)
    section = ({**MINIMAL, "broker": url} if key == "broker"
               else {**MINIMAL, "scheduler": {"crontab": "crontab", "claim_store": url}})
    assert refused(section, tmp_path).startswith(f"disqontrol.{key}: {message}")


def test_failure_queue_that_is_the_queue_itself(tmp_path):
    assert refused(with_queue(failure_queue="q"), tmp_path) == (
        "disqontrol.queues.q.failure_queue: 'q' is the queue itself; name another queue")


def test_queue_name_with_blanks(tmp_path):
    section = {"queues": {"two words": {"worker": {"type": "command", "command": "true"}}}}
    assert refused(section, tmp_path) == (
        "disqontrol.queues: 'two words' is not a valid queue name (one word, no blanks)")


def test_unknown_timezone(tmp_path):
    section = {**MINIMAL, "scheduler": {"crontab": "crontab", "timezone": "Mars/Olympus"}}
    assert refused(section, tmp_path) == (
        "disqontrol.scheduler.timezone: 'Mars/Olympus' is not a known time zone (e.g. 'Europe/Prague', 'UTC')")


def test_every_problem_is_reported_one_per_line(tmp_path):
    section = {"queues": {"q": {"worker": {"type": "command"}, "max_retries": -1}}}
    assert refused(section, tmp_path).splitlines() == [
        "disqontrol.queues.q.max_retries: -1 is less than the minimum of 0",
        "disqontrol.queues.q.worker: 'command' is a required property",
    ]


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "disqontrol: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML"):
        load_config(path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=rf"^{path}: is empty; expected a 'disqontrol:' mapping$"):
        load_config(path)


# --- brokers and paths -----------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("sqlite:///abs/jobs.db", "sqlite:///abs/jobs.db"),
    ("sqlite:/abs/jobs.db", "sqlite:///abs/jobs.db"),
    ("sqlite://jobs.db", "sqlite://{base}/jobs.db"),
    ("sqlite:../var/jobs.db", "sqlite://{parent}/var/jobs.db"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_broker_url_resolution(tmp_path, url, expected):
    config = parse_config({"disqontrol": {**MINIMAL, "broker": url}}, base_dir=tmp_path)
    assert config.broker == expected.format(base=tmp_path, parent=tmp_path.parent)


def test_php_disque_node_list_becomes_a_disque_url(tmp_path):
    nodes = [{"host": "127.0.0.1", "port": 7711, "password": "p@ss"}, {"host": "::1", "password": "p@ss"}]
    config = parse_config({"disqontrol": {**MINIMAL, "disque": nodes}}, base_dir=tmp_path)
    assert config.broker == "disque://:p%40ss@127.0.0.1:7711,[::1]:7711"


def test_disque_nodes_must_share_a_password(tmp_path):
    nodes = [{"host": "a", "port": 7711}, {"host": "b", "port": 7712, "password": "foo"}]
    assert refused({**MINIMAL, "disque": nodes}, tmp_path) == (
        "disqontrol.disque[1].password: every node must have the same password as node 0")


def test_relative_paths_resolve_against_the_config_directory(tmp_path, monkeypatch):
    # Given a config in a subdirectory with relative paths, and another cwd
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write(conf_dir, """\
        disqontrol:
          log_dir: logs
          run_dir: ../run
          broker: sqlite:data/jobs.db
          scheduler: {crontab: crontab}
          queues: {q: {worker: {type: command, command: "true"}}}
        """)
    monkeypatch.chdir(tmp_path)
    # When it is loaded by a relative path
    config = load_config(Path("conf") / "disqontrol.yml")
    # Then every path is absolute and relative to conf/
    assert config.path == path
    assert config.log_dir == conf_dir / "logs"
    assert config.run_dir == tmp_path / "run"
    assert config.broker == f"sqlite://{conf_dir}/data/jobs.db"
    assert config.scheduler.crontab == conf_dir / "crontab"


@pytest.mark.parametrize("command, expected", [
    ("bin/worker.py --fast", "{conf}/bin/worker.py --fast"),
    ("../examples/resize_pic.py", "{root}/examples/resize_pic.py"),
    ("./w 'a b'  \"c d\"", "{conf}/w 'a b'  \"c d\""),  # arguments kept as written
    ("'my dir/w' x", "'{conf}/my dir/w' x"),  # quoted again when it needs it
    ("php console email:send", "php console email:send"),  # a bare name goes through PATH
    ("/usr/bin/env php", "/usr/bin/env php"),  # absolute: as is
    ("~/bin/w", "{home}/bin/w"),
    ("bin/w 'unbalanced", "{conf}/bin/w 'unbalanced"),  # the worker check refuses it later
])
def test_relative_command_program_resolves_against_the_config_directory(tmp_path, monkeypatch, command, expected):
    # Given a command worker whose program is a relative path, and another cwd
    conf_dir = tmp_path / "conf"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    section = {"queues": {"q": {"worker": {"type": "command", "command": command}}}}
    # When the config is parsed
    config = parse_config({"disqontrol": section}, base_dir=conf_dir)
    # Then the program (only it) is absolute, relative to the config's directory
    assert config.queue("q").worker.command == expected.format(
        conf=conf_dir, root=tmp_path, home=tmp_path / "home")


def test_example_command_worker_is_found_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = load_config(REPO / "etc" / "disqontrol.yml").queue("resize-pic").worker.command
    assert command == f"{REPO}/examples/resize_pic.py"


# --- lookup order ------------------------------------------------------------------

@pytest.fixture
def lookup(tmp_path, monkeypatch):
    """Files for each lookup step; /etc replaced by a temporary stand-in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config_module.ENV_CONFIG, raising=False)
    etc = write(tmp_path, "x", "etc.yml")
    monkeypatch.setattr(config_module, "LOOKUP_PATHS", (Path("disqontrol.yml"), etc))
    return tmp_path, etc


def test_lookup_order(lookup, monkeypatch):
    tmp_path, etc = lookup
    assert find_config_path() == etc  # only the system one exists
    cwd_file = write(tmp_path, "x")
    assert find_config_path() == cwd_file  # ./disqontrol.yml before /etc
    env_file = write(tmp_path, "x", "env.yml")
    monkeypatch.setenv(config_module.ENV_CONFIG, str(env_file))
    assert find_config_path() == env_file  # $DISQONTROL_CONFIG before ./
    explicit = write(tmp_path, "x", "explicit.yml")
    assert find_config_path(explicit) == explicit  # --config first


def test_named_file_that_does_not_exist_is_an_error_not_a_fallthrough(lookup, monkeypatch):
    tmp_path, _ = lookup
    monkeypatch.setenv(config_module.ENV_CONFIG, str(tmp_path / "missing.yml"))
    with pytest.raises(ConfigError, match=r"^\$DISQONTROL_CONFIG: '.*missing.yml' is not a readable file$"):
        find_config_path()
    with pytest.raises(ConfigError, match=r"^--config: '.*nope.yml' is not a readable file$"):
        find_config_path(tmp_path / "nope.yml")


def test_nothing_found_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config_module.ENV_CONFIG, raising=False)
    monkeypatch.setattr(config_module, "LOOKUP_PATHS", (Path("disqontrol.yml"), tmp_path / "etc.yml"))
    with pytest.raises(ConfigError) as caught:
        find_config_path()
    assert str(caught.value) == (
        "no config file found; looked at --config (not given), $DISQONTROL_CONFIG (not set), "
        f"{tmp_path}/disqontrol.yml, {tmp_path}/etc.yml; pass --config PATH")


def test_config_built_in_code_has_no_path(tmp_path):
    config = parse_config({"disqontrol": MINIMAL}, base_dir=tmp_path)
    assert isinstance(config, Config) and config.path is None


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(tmp_path, value):
    # YAML's .nan slipped past every bound of the schema and .inf past the
    # lower ones: the job was refused later by the broker, far from the config.
    assert refused(with_queue(job_process_timeout=value, backoff_scale=value), tmp_path) == "\n".join([
        f"disqontrol.queues.q.backoff_scale: {value!r} is not a finite number",
        f"disqontrol.queues.q.job_process_timeout: {value!r} is not a finite number",
    ])


def test_yaml_nan_in_a_file_is_refused(tmp_path):
    path = write(tmp_path, """\
        disqontrol:
          queue_defaults: {job_process_timeout: .nan}
          queues: {q: {worker: {type: command, command: "true"}}}
        """)
    with pytest.raises(ConfigError, match=r"^disqontrol.queue_defaults.job_process_timeout: nan is not a finite number$"):
        load_config(path)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    # PyYAML keeps the last of two equal keys: the first queue definition
    # vanished without a word and addjob then said "unknown queue 'q'".
    path = write(tmp_path, """\
        disqontrol:
          queues:
            q: {worker: {type: command, command: "true"}}
          queues: {}
        """)
    with pytest.raises(ConfigError, match=(
            rf"^{path}: not valid YAML: line 4, column 3: duplicate key 'queues' \(first at line 2\)$")):
        load_config(path)


def test_merge_keys_may_still_be_overridden(tmp_path):
    path = write(tmp_path, """\
        disqontrol:
          queue_defaults: &limits {max_retries: 3, job_lifetime: 60}
          queues:
            q: {<<: *limits, max_retries: 5, worker: {type: command, command: "true"}}
        """)
    queue = load_config(path).queue("q")
    assert (queue.max_retries, queue.job_lifetime) == (5, 60)


def test_yaml_error_is_one_line(tmp_path):
    path = write(tmp_path, "disqontrol:\n\tbroker: x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: not valid YAML: line 2, column 1: found character '\\t' that cannot start any token")


@pytest.mark.parametrize("queues, message", [
    ({"a": {"failure_queue": "b"}, "b": {"failure_queue": "a"}},
     "disqontrol.queues.a.failure_queue: failed jobs would go round in a circle (a -> b -> a)"),
    ({"a": {"failure_queue": "b"}, "b": {"failure_queue": "c"}, "c": {"failure_queue": "b"}},
     "disqontrol.queues.b.failure_queue: failed jobs would go round in a circle (b -> c -> b)"),
    # a consumed failure queue left on the built-in failure_queue: failed-jobs
    ({"a": {}, "failed-jobs": {}},
     "disqontrol.queues.failed-jobs.failure_queue: failed jobs would go round in a circle "
     "(failed-jobs -> failed-jobs)"),
])
def test_a_circle_of_failure_queues_is_refused(tmp_path, queues, message):
    worker = {"worker": {"type": "command", "command": "true"}}
    section = {"queues": {name: {**worker, **extra} for name, extra in queues.items()}}
    assert refused(section, tmp_path).startswith(message)
    assert refused(section, tmp_path).count("round in a circle") == 1


def test_a_chain_of_failure_queues_that_ends_is_taken(tmp_path):
    worker = {"worker": {"type": "command", "command": "true"}}
    section = {"queues": {"a": {**worker, "failure_queue": "b"}, "b": {**worker, "failure_queue": "parked"}}}
    assert parse_config({"disqontrol": section}, base_dir=tmp_path).queue("a").failure_queue == "b"


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_a_config_is_parsed_by_libyaml_not_pyyamls_python_scanner(tmp_path, monkeypatch):
    # Given a config of many queues (per-tenant queues run to thousands), and
    # PyYAML's pure-Python scanner counted (4x libyaml's CPU: 2.6 s for 10,000 queues)
    queues = "".join(f"    t{n}: {{worker: {{type: command, command: 'true'}}}}\n" for n in range(100))
    path = write(tmp_path, "disqontrol:\n  queues:\n" + queues)
    scanned = []
    real = yaml.scanner.Scanner.check_token
    monkeypatch.setattr(yaml.scanner.Scanner, "check_token", lambda self, *c: scanned.append(1) or real(self, *c))

    # When it is loaded
    config = load_config(path)

    # Then every queue is there and the Python scanner never ran
    assert len(config.queues) == 100 and not scanned


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_a_config_libyaml_refuses_but_pyyaml_reads_is_still_taken(tmp_path):
    # Given a config PyYAML's own parser read before libyaml did, which
    # libyaml refuses: a literal block whose first line opens with a tab
    path = write(tmp_path, (
        "disqontrol:\n"
        "  queues:\n"
        "    q:\n"
        "      worker:\n"
        "        type: command\n"
        "        command: |\n"
        "          \tprintf ok\n"
    ))

    # When it is loaded
    config = load_config(path)

    # Then it is taken, with the value PyYAML reads
    assert config.queue("q").worker.command == "\tprintf ok\n"


def test_two_groups_of_the_same_name_are_refused(tmp_path):
    # Given queue 'a+b' (its own default group, named 'a+b') beside a group of
    # queues a and b (also named 'a+b': the master scaled them as one, SIGTTIN
    # gave the second two more processes and the first none)
    queues = {name: {"worker": {"type": "command", "command": "true"}} for name in ("a+b", "a", "b")}
    section = {"queues": queues, "consumers": [{"queues": ["a", "b"]}]}

    # Then the config is refused, naming both
    assert refused(section, tmp_path) == (
        "disqontrol.queues.a+b: the group's name 'a+b' (its queues joined by '+') is also that of "
        "disqontrol.consumers[0]; a group's name must be its own: put these queues in one group, or rename "
        "a queue with a '+' in its name")
    # And so are two listed groups, while 'a+b' alone beside a and b is taken
    both = {"queues": queues, "consumers": [{"queues": ["a+b"]}, {"queues": ["a", "b"]}]}
    assert refused(both, tmp_path).startswith("disqontrol.consumers[1]: the group's name 'a+b' ")
    names = [group.name for group in parse_config({"disqontrol": {"queues": queues}}, base_dir=tmp_path).consumers]
    assert names == ["a+b", "a", "b"]


def test_a_group_of_thousands_of_queues_has_a_short_name_of_its_own():
    # Given a group of 10,000 per-tenant queues, and one whose last queue differs
    tenants = tuple(f"tenant-{n:05d}" for n in range(10_000))
    group = ConsumerConfig(queues=tenants)
    other = ConsumerConfig(queues=tenants[:-1] + ("tenant-x",))

    # Then its name (logs, process titles, status, metric labels) is short: the
    # first queues, how many more, a digest that tells it from the other
    assert len(group.name) <= 150
    assert group.name.startswith("tenant-00000+tenant-00001+") and "...9991-more-" in group.name
    assert other.name != group.name
    # And a group of a few queues keeps its queues joined by '+'
    assert ConsumerConfig(queues=("a", "b")).name == "a+b"
