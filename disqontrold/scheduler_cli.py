"""``disqontrold scheduler --crontab P``: one pass of the crontab, for the
system cron to run every minute.

Silent when all went well (cron mails whatever a job prints); errors go to
stderr with the exit codes of SPEC §2: 2 for a bad crontab or config, 3 when
the broker cannot be reached. ``--verbose`` prints one line per job added.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from disqontrol_client import exitcodes
from disqontrol_client.brokers import open_broker
from disqontrol_client.config import SchedulerConfig, load_config
from disqontrol_client.errors import BrokerError, BrokerUnavailable, ConfigError, UsageError
from disqontrol_client.logfmt import log_event
from disqontrold.log import EventFormatter, setup_logging
from disqontrold.scheduler import Clock, Scheduler, iso, load_entries

logger = logging.getLogger("disqontrold.scheduler")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns the exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="disqontrold scheduler",
        description="Add the crontab jobs due now (and missed ones, per "
        "disqontrol.scheduler.missed_runs), each run once across all schedulers.",
        epilog=exitcodes.HELP,
    )
    parser.add_argument("--crontab", help="the crontab file (default: disqontrol.scheduler.crontab)")
    parser.add_argument("--config", help="disqontrol.yml (default: $DISQONTROL_CONFIG, ./disqontrol.yml, "
                        "/etc/disqontrol/disqontrol.yml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each job added")
    return parser


def run_once(config_path: Optional[str], crontab: Optional[str], verbose: bool = False) -> int:
    """Load, validate, pass once; the exceptions are main()'s to map."""
    config = load_config(config_path)
    log_to_file(config.log_dir)
    if crontab:
        settings = replace(config.scheduler, crontab=Path(crontab)) if config.scheduler \
            else SchedulerConfig(crontab=Path(crontab))
    elif config.scheduler:
        settings = config.scheduler
    else:
        raise UsageError(
            f"no crontab: give --crontab PATH, or set disqontrol.scheduler.crontab in {config.path}"
        )
    entries = load_entries(config, settings.crontab)
    broker = open_broker(config.broker)
    try:
        scheduler = Scheduler(entries, broker, settings, config=config, clock=Clock.from_env())
        runs = scheduler.run_due()
    finally:
        broker.close()
    if verbose:
        for run in runs:
            state = run.job_id or "already-added"
            print(f"{run.entry.queue}\t{iso(run.time, scheduler.zone)}\t{state}")
    return exitcodes.OK


def log_to_file(log_dir: Path) -> None:
    """Events at INFO to the daemon's log file (what cron added is seen with
    the rest), warnings and errors to stderr too (cron mails them). A log dir
    this user cannot write leaves stderr only, with a warning."""
    try:
        setup_logging(log_dir, logging.INFO, stderr=False)
    except (ConfigError, OSError) as error:
        setup_logging(None, logging.INFO, stderr=False)
        _stderr_handler()
        log_event(logger, "scheduler_log_file_unusable", logging.WARNING, log_dir=log_dir, error=error)
        return
    _stderr_handler()


def _stderr_handler() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(EventFormatter())
    logging.getLogger().addHandler(handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    try:
        args = build_parser().parse_args(argv)
        return run_once(args.config, args.crontab, args.verbose)
    except (ConfigError, UsageError) as error:
        print(f"disqontrold scheduler: {error}", file=sys.stderr)
        return exitcodes.USAGE
    except (BrokerUnavailable, BrokerError) as error:
        print(f"disqontrold scheduler: broker: {error}", file=sys.stderr)
        return error.exit_code  # 3; 2 for data of a newer release (BrokerDataError): retrying cannot help


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
