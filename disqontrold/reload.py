"""Loading a config the master may run: read, validate, and check that every
worker can be built (missing binary, unloadable module) before any consumer
is forked, and that the crontab parses. Used at start, by --check and by
every reload."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from disqontrol_client.config import Config, load_config

DEFAULT_BOOTSTRAP = Path("disqontrol_bootstrap.py")


def bootstrap_path(explicit: Optional[str]) -> Optional[Path]:
    """--bootstrap, else ./disqontrol_bootstrap.py if present; absolute so a
    later chdir (daemonize) does not change its meaning."""
    if explicit:
        return Path(explicit).resolve()
    return DEFAULT_BOOTSTRAP.resolve() if DEFAULT_BOOTSTRAP.exists() else None


def load_checked(config_path: Optional[str | Path], bootstrap: Optional[Path]) -> Config:
    """The config at ``config_path`` (SPEC §2 lookup when None), workers checked.

    Raises ConfigError or WorkerLoadError with a message naming the key."""
    from disqontrold.workers import check_workers  # noqa: PLC0415 (heavy, daemon-only)

    config = load_config(config_path)
    check_workers(config, bootstrap)
    check_crontab(config)
    return config


def check_crontab(config: Config) -> None:
    """A broken crontab refuses the start, --check and a reload like a broken
    config: ConfigError naming the file and line."""
    if config.scheduler is not None:
        from disqontrold.scheduler import load_entries  # noqa: PLC0415 (croniter: daemon-only)

        load_entries(config)
