"""The broker's data checked once at start, before any consumer is forked.

Why: a release rolled back over data a newer one wrote must not start
consumers that misread it (or crash-loop on it one by one); and an older
layout is upgraded here, once, rather than by the first consumers racing
for it. An unreachable broker does not stop the start: the consumers wait
for it (and check its data when they reach it)."""
from __future__ import annotations

import logging

from disqontrol_client.brokers import engine_class, open_broker
from disqontrol_client.errors import BrokerDataError, BrokerError, BrokerUnavailable
from disqontrol_client.logfmt import log_event, redact_url

logger = logging.getLogger(__name__)


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
