"""Loading a config the master may run: read, validate, and check that every
worker can be built (missing binary, unloadable module) before any consumer
is forked, and that the crontab parses. Used at start, by --check and by
every reload.

The work runs in a short-lived forked child that sends the validated Config
back (pickled): yaml, jsonschema and croniter (~15 MiB resident) are never
imported by the master, so the consumers it forks stay small, and each fork
of an isolated job copies fewer page tables.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from disqontrol_client.config import Config
from disqontrol_client.errors import ConfigError, WorkerLoadError
from disqontrol_client.logfmt import log_event
from disqontrold.forkcall import NoAnswer, call_in_child

DEFAULT_BOOTSTRAP = Path("disqontrol_bootstrap.py")
#: Seconds the loader child may take: its Python-worker checker has 60 s.
LOAD_TIMEOUT = 90.0
#: What the loader child does, as its failure messages say.
LOADING = "validating the config (schema, workers, crontab)"

logger = logging.getLogger(__name__)


def bootstrap_path(explicit: Optional[str]) -> Optional[Path]:
    """--bootstrap, else ./disqontrol_bootstrap.py if present; absolute (from
    ``working_dir()``) so a later chdir (daemonize) does not change its
    meaning, but with its symlinks kept: a deploy that swaps ``current ->
    releases/N`` and reloads must load the new release's file (resolved once
    at start, every reload read the old one)."""
    if explicit:
        return Path(os.path.abspath(os.path.join(working_dir(), explicit)))
    default = Path(working_dir()) / DEFAULT_BOOTSTRAP  # the named directory's, as for an explicit one
    return default if default.exists() else None


def working_dir() -> str:
    """The directory the daemon was started in, as it was named: $PWD when
    it is the current directory (a shell sets it; under systemd, set
    ``Environment=PWD=`` to the ``WorkingDirectory=``), else the kernel's,
    symlinks resolved. gunicorn's arbiter takes it the same way."""
    here = os.getcwd()
    named = os.environ.get("PWD")
    if not named:
        return here
    try:
        same = os.path.samefile(named, here)
    except OSError:
        return here
    return named if same else here


def reenter(directory: str) -> None:
    """chdir to ``directory`` again before a reload: a symlink in it
    (``current -> releases/N``) is followed anew, so the loader child and
    the new consumers work in the release deployed now. A process's working
    directory is resolved once: the consumers of every later generation ran
    in the release of the start (a command's relative paths, ``php
    console``, ran the old code, and failed once its directory was cleaned
    up). A directory gone is logged; the old one stays."""
    try:
        os.chdir(directory)
    except OSError as exc:
        log_event(logger, "working_dir_unusable", logging.WARNING, path=directory, error=exc,
                  keeping=_current_dir())


def _current_dir() -> str:
    try:
        return os.getcwd()
    except OSError as exc:  # removed under us
        return f"({exc.strerror})"


def load_checked(config_path: Optional[str | Path], bootstrap: Optional[Path]) -> Config:
    """The config at ``config_path`` (SPEC §2 lookup when None), workers checked.

    Raises ConfigError or WorkerLoadError with a message naming the key; an
    unexpected error in the loader is a ConfigError naming it (its traceback
    is logged)."""
    try:
        result = call_in_child(lambda: _load_reported(config_path, bootstrap), LOAD_TIMEOUT, LOADING)
    except NoAnswer as exc:
        if exc.traceback:
            log_event(logger, "config_check_crashed", logging.ERROR, config=str(config_path or "the config"),
                      error=str(exc), traceback=exc.traceback)
        raise ConfigError(f"{config_path or 'the config'}: could not be checked: {exc}") from None
    if isinstance(result, (ConfigError, WorkerLoadError)):
        raise result
    return result


def _load_reported(config_path: Optional[str | Path], bootstrap: Optional[Path]) -> Config | Exception:
    """In the loader child: the checked Config, or the error refusing it."""
    from disqontrol_client.config import load_config  # noqa: PLC0415
    from disqontrold.workers import check_workers  # noqa: PLC0415 (heavy, daemon-only)

    try:
        config = load_config(config_path)
        check_workers(config, bootstrap)
        check_crontab(config)
    except (ConfigError, WorkerLoadError) as exc:
        return exc
    return config


def check_crontab(config: Config) -> None:
    """A broken crontab refuses the start, --check and a reload like a broken
    config: ConfigError naming the file and line."""
    if config.scheduler is not None:
        from disqontrold.scheduler import load_entries  # noqa: PLC0415 (croniter: daemon-only)

        load_entries(config)
