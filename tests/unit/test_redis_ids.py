"""Pure logic of the redis engine: ids, URLs, argument checks."""
from __future__ import annotations

import pytest

from disqontrol_client.brokers.redis import RedisBroker, queue_of
from disqontrol_client.logfmt import redact_url
from disqontrol_client.errors import ConfigError


def test_queue_is_read_back_from_an_id_even_with_dashes_in_its_name():
    assert queue_of("R-0123abcd-my-queue") == "my-queue"


@pytest.mark.parametrize("foreign", ["D-abc-123", "R-abc", "R-abc-", "", "whatever"])
def test_a_foreign_id_names_no_queue(foreign):
    assert queue_of(foreign) is None


def test_the_password_never_reaches_a_message():
    assert redact_url("redis://:s3cret@db.example:6380/2") == "redis://:***@db.example:6380/2"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0?prefix=", "redis://127.0.0.1/0?prefix=a{b}"])
def test_a_bad_prefix_is_refused_with_its_value(url):
    with pytest.raises(ConfigError, match="prefix"):
        RedisBroker.from_url(url)


@pytest.mark.parametrize("option", ["decode_responses=true", "decode_responses=1"])
def test_an_option_that_makes_replies_text_is_refused(option):
    # with decode_responses=true (a habit of redis-py users) every add
    # worked and every reserve raised AttributeError in the consumer,
    # after leasing the jobs: they cycled unrun
    url = f"redis://:pw@127.0.0.1:1/0?{option}"
    with pytest.raises(ConfigError) as caught:
        RedisBroker.from_url(url)
    assert str(caught.value) == (
        f"disqontrol.broker: option {option.replace('=', '=' + chr(39))}' in 'redis://:***@127.0.0.1:1/0?{option}'"
        " is not allowed: job payloads are bytes and the broker decodes what it needs; remove it")


@pytest.mark.parametrize("option, problem", [
    ("socket_timout=5", "unexpected keyword argument 'socket_timout'"),
    ("ssl_cert_reqs=sometimes", "sometimes"),
])
def test_an_unknown_or_bad_option_is_a_config_error_not_a_traceback(option, problem):
    # redis-py kept it until the first command, then raised TypeError:
    # addjob printed a traceback
    scheme = "rediss" if option.startswith("ssl") else "redis"
    with pytest.raises(ConfigError) as caught:
        RedisBroker.from_url(f"{scheme}://:pw@127.0.0.1:1/0?{option}")
    message = str(caught.value)
    assert message.startswith(f"disqontrol.broker: '{scheme}://:***@127.0.0.1:1/0?{option}' is not a valid redis URL: ")
    assert problem in message and message.endswith("allowed options: prefix and redis-py's connection "
                                                   "options (socket_timeout, ssl_ca_certs, ...)")


def test_decode_responses_false_is_harmless_and_taken():
    RedisBroker.from_url("redis://127.0.0.1:1/0?decode_responses=false").close()


def test_the_prefix_is_taken_out_of_the_url_before_redis_py_sees_it():
    # Given a URL with our option and one of redis-py's
    broker = RedisBroker.from_url("redis://127.0.0.1:1/3?prefix=app1&socket_keepalive=true")
    # Then the keys use the prefix and redis-py got the rest (no connection is made yet)
    assert broker._keys("q")[0] == "app1:{q}:ready"
    assert broker._client.connection_pool.connection_kwargs["db"] == 3
    broker.close()


def test_rediss_hands_the_tls_options_to_redis_py():
    # Given a rediss:// URL with redis-py's ssl options (no connection is made yet)
    broker = RedisBroker.from_url("rediss://:pw@127.0.0.1:1/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem")
    pool = broker._client.connection_pool
    # Then the connections are TLS ones with those options
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert "pw" not in broker._where
    broker.close()
