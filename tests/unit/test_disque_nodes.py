"""Pure logic of the Disque engine: URL parsing, job-id prefixes and the
best-node choice (no server needed)."""
from __future__ import annotations

import pytest

from disqontrol_client.brokers.disque import (
    choose_node,
    disque_ids,
    node_weight,
    parse_url,
    producer_prefix,
    seconds,
)
from disqontrol_client.brokers.disque_client import ClusterNode
from disqontrol_client.errors import ConfigError

A = ClusterNode("aaaaaaaa" + "0" * 32, "127.0.0.1", 7711, 1)
B = ClusterNode("bbbbbbbb" + "0" * 32, "127.0.0.1", 7712, 1)
B_FAILING = ClusterNode(B.id, B.host, B.port, 10)
JOB_OF_B = "D-bbbbbbbb-0123456789abcdefghijklmn-05a1"


def test_url_names_nodes_password_and_options():
    nodes, password, options = parse_url("disque://:s%40cret@10.0.0.1:7711,10.0.0.2?replicate=3&async=1")
    assert nodes == ["10.0.0.1:7711", "10.0.0.2:7711"]
    assert password == "s@cret"
    assert options == {"replicate": 3, "asynchronous": 1}


def test_url_with_ipv6_and_default_port():
    assert parse_url("disque://[::1]:7712,[fe80::1]")[0] == ["::1:7712", "fe80::1:7711"]


@pytest.mark.parametrize("url", ["disque://", "disque://h:port", "disque://h:1?replicate=0", "disque://h:1?x=1"])
def test_bad_url_is_refused_with_its_value(url):
    with pytest.raises(ConfigError, match="disqontrol.broker"):
        parse_url(url)


def test_job_id_names_its_producer_and_other_ids_are_not_disque_ids():
    assert producer_prefix(JOB_OF_B) == "bbbbbbbb"
    assert producer_prefix("42") is None
    assert disque_ids([JOB_OF_B, "42", "D-short"]) == [JOB_OF_B]


def test_seconds_round_up():
    assert (seconds(0.2), seconds(1), seconds(1.01)) == (1, 1, 2)


def test_the_node_producing_most_jobs_wins():
    assert choose_node({"bbbbbbbb": 10, "aaaaaaaa": 2}, [A, B], A.address) == B.address


def test_a_small_lead_is_not_worth_a_move():
    assert choose_node({"bbbbbbbb": 102, "aaaaaaaa": 100}, [A, B], A.address) is None


def test_a_failing_node_is_never_chosen():
    assert node_weight(10) == 0 and node_weight(1) == 1 and 0 < node_weight(5) < 1
    assert choose_node({"bbbbbbbb": 100}, [A, B_FAILING], A.address) is None


def test_no_jobs_no_move():
    assert choose_node({}, [A, B], A.address) is None
