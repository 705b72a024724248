"""Broker engines, chosen by URL scheme. Engines are imported lazily so that
a sqlite user never imports redis-py or pydisque."""
from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from disqontrol_client.brokers.broker import (  # noqa: F401 (re-exported)
    Broker,
    Delivery,
    NewJob,
    QueueStats,
)
from disqontrol_client.errors import ConfigError

# scheme -> "module:Class"
ENGINES: dict[str, str] = {
    "sqlite": "disqontrol_client.brokers.sqlite_shards:ShardedSqliteBroker",  # one file or several
    "redis": "disqontrol_client.brokers.redis:RedisBroker",
    "rediss": "disqontrol_client.brokers.redis:RedisBroker",
    "disque": "disqontrol_client.brokers.disque:DisqueBroker",
}


def engine_class(url: str) -> type[Broker]:
    """The Broker class serving ``url``'s scheme."""
    scheme = urlsplit(url).scheme
    if scheme not in ENGINES:
        raise ConfigError(
            f"disqontrol.broker: {url!r} has an unknown scheme {scheme!r}; "
            f"allowed: {', '.join(sorted(ENGINES))}"
        )
    module_name, class_name = ENGINES[scheme].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def open_broker(url: str, **options: Any) -> Broker:
    """Connect to the broker named by ``url`` (sqlite:///path, redis://..., disque://...)."""
    return engine_class(url).from_url(url, **options)  # type: ignore[attr-defined]
