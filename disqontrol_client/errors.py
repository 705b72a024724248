"""The project's exceptions: each carries a message a user can act on."""
from __future__ import annotations

from typing import Sequence


class DisqontrolError(Exception):
    """Base of every error disqontrol raises on purpose."""

    exit_code = 1


class ConfigError(DisqontrolError):
    """The configuration (or a value given on the command line) is invalid.

    The message names the key path and what is allowed, e.g.
    ``disqontrol.queues.pic-resize.worker.type: 'inline_php' is not one of [...]``.
    """

    exit_code = 2


class UsageError(DisqontrolError):
    """A command was called with a bad argument (exit code 2)."""

    exit_code = 2


class BrokerUnavailable(DisqontrolError):
    """The broker cannot be reached (exit code 3)."""

    exit_code = 3


class BrokerError(DisqontrolError):
    """The broker answered, but refused or failed the operation."""

    exit_code = 3


class BrokerDataError(BrokerError):
    """The broker's stored data cannot be used by this release: written by a
    newer disqontrol (a rollback), or not a disqontrol store at all. Exit
    code 2, as a config error: retrying cannot help (systemd's unit does not
    restart after it); the operator must upgrade or change ``broker``."""

    exit_code = 2


class ClaimedNotAdded(BrokerError):
    """Claims were taken but their jobs could not be added (a broker that
    cannot do both in one transaction lost the store in between). ``keys``
    names the claims whose runs are lost; the cause is chained."""

    def __init__(self, message: str, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.keys = list(keys)


class WorkerLoadError(DisqontrolError):
    """A configured worker cannot be loaded (missing binary, bad import path)."""

    exit_code = 2


class JobFailed(DisqontrolError):
    """A job run in synchronous mode failed (exit code 1).

    ``outcome`` is the worker's ``disqontrold.workers.base.Outcome``: its
    ``error`` line is the message, its ``details`` say more.
    """

    exit_code = 1

    def __init__(self, message: str, outcome: object = None) -> None:
        super().__init__(message)
        self.outcome = outcome
