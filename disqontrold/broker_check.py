"""The broker's data checked once at start, before any consumer is forked.

Why: a release rolled back over data a newer one wrote must not start
consumers that misread it (or crash-loop on it one by one); and an older
layout is upgraded here, once, rather than by the first consumers racing
for it. An unreachable broker does not stop the start: the consumers wait
for it (and check its data when they reach it). A reload that names
another broker is checked the same way, in a child."""
from __future__ import annotations

import logging
from typing import Optional

from disqontrol_client.brokers import engine_class, open_broker
from disqontrol_client.errors import BrokerDataError, BrokerError, BrokerUnavailable
from disqontrol_client.logfmt import log_event, redact_url
from disqontrold.forkcall import NoAnswer, call_in_child

logger = logging.getLogger(__name__)
#: s the reload's check may take (an upgrade of older data included) before it is given up
CHECK_TIMEOUT = 60.0


def check_broker_data(url: str) -> None:
    """Raise ``BrokerDataError`` (logged) when this release cannot read the
    broker's data; engines with nothing to version (Disque) are not opened."""
    if not engine_class(url).versioned_data:
        return
    try:
        with open_broker(url) as broker:
            broker.check_data()
    except BrokerDataError as exc:
        log_event(logger, "broker_data_refused", logging.ERROR, broker=redact_url(url), error=str(exc))
        raise
    except (BrokerUnavailable, BrokerError) as exc:
        log_event(logger, "broker_unreachable", logging.WARNING, operation="start", broker=redact_url(url),
                  error=str(exc))


def refusal_in_child(url: str) -> Optional[str]:
    """Why a reload onto the broker at ``url`` must be refused (its data is
    of a newer release), else None. Checked in a forked child, as the
    config is: the master's loop never waits on a broker's socket nor runs
    an upgrade itself. A check that cannot finish is logged and does not
    refuse: the new consumers check when they open it."""
    try:
        return call_in_child(lambda: _refusal(url), CHECK_TIMEOUT, "checking the new broker's data")
    except NoAnswer as exc:
        log_event(logger, "broker_check_failed", logging.WARNING, broker=redact_url(url), error=str(exc))
        return None


def _refusal(url: str) -> Optional[str]:
    try:
        check_broker_data(url)
    except BrokerDataError as exc:
        return str(exc)
    return None
