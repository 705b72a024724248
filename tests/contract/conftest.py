"""The contract suite's engines: those of tests/conftest.py plus
``sqlite-sharded`` (``?shards=2``). Every contract test applies to it: each
adds its jobs from one process, whose order the sharded engine keeps (it
loses only the order across producers; see test_per_producer_order)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ENGINES, empty_store_url

SHARDED = "sqlite-sharded"
CONTRACT_ENGINES = (*ENGINES, SHARDED)


@pytest.fixture(params=CONTRACT_ENGINES)
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store of each engine in turn."""
    if request.param == SHARDED:
        return f"sqlite://{tmp_path}/jobs.db?shards=2"
    return empty_store_url(request, request.param, tmp_path)
