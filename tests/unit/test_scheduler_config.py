"""The scheduler's keys of disqontrol.yml as the loader reads them."""
from __future__ import annotations

import pytest

from disqontrol_client.config import load_config
from disqontrol_client.errors import ConfigError

BASE = """disqontrol:
  broker: sqlite://jobs.db
  queues:
    q: {worker: {type: command, command: 'true'}}
  scheduler:
    crontab: crontab
"""


def test_claim_store_is_resolved_like_the_broker(tmp_path):
    config_path = tmp_path / "disqontrol.yml"
    config_path.write_text(BASE + "    claim_store: sqlite://claims.db\n")
    config = load_config(config_path)
    assert config.scheduler is not None
    assert config.scheduler.claim_store == f"sqlite://{tmp_path}/claims.db"
    assert config.scheduler.crontab == tmp_path / "crontab"


def test_claim_store_with_an_unknown_scheme_is_refused_naming_the_key(tmp_path):
    config_path = tmp_path / "disqontrol.yml"
    config_path.write_text(BASE + "    claim_store: memcached://x\n")
    with pytest.raises(ConfigError, match=r"disqontrol.scheduler.claim_store: 'memcached://x' has an unknown scheme"):
        load_config(config_path)


def test_without_claim_store_the_broker_holds_the_claims(tmp_path):
    config_path = tmp_path / "disqontrol.yml"
    config_path.write_text(BASE)
    config = load_config(config_path)
    assert config.scheduler is not None and config.scheduler.claim_store is None
