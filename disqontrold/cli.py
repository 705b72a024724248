"""``disqontrold``: run the master in the foreground (systemd style), check a
config, or (``disqontrold scheduler ...``) make one pass of a crontab."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Any, Optional, Sequence

from disqontrol_client import exitcodes
from disqontrol_client.errors import DisqontrolError

SCHEDULER_COMMAND = "scheduler"
# Modules that extend the master without editing its loop: each may define
# ``attach_to_master(master)`` (register files, add timers, on_ready/on_stop hooks).

PLUGINS = ("disqontrold.systemd", "disqontrold.control", "disqontrold.scheduler_master",
           "disqontrold.autoscale_master")
ATTACH = "attach_to_master"
#: Help width when $COLUMNS is unset and stdout is no terminal (shutil's default).
DEFAULT_COLUMNS = 80
#: Columns argparse leaves free at the right edge (as it does by itself).
RIGHT_MARGIN = 2


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized to the terminal without ``import shutil``.

    argparse builds a formatter for every add_argument, and its own imports
    shutil for the terminal width: shutil brings zlib, bz2 and lzma (six
    shared objects, ~30 mappings) into the master, so into every consumer,
    whose page tables each isolated job's fork copies (docs/workers.md)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - RIGHT_MARGIN)


def _columns() -> int:
    """What shutil.get_terminal_size() gives: $COLUMNS, the terminal's, or 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or DEFAULT_COLUMNS
    except (AttributeError, ValueError, OSError):  # no stdout, closed, or not a terminal
        return DEFAULT_COLUMNS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disqontrold",
        formatter_class=_HelpFormatter,
        description="Run the disqontrol master. `disqontrold scheduler --crontab P` runs one scheduler pass.",
        epilog=exitcodes.HELP,
    )
    parser.add_argument("--config", help="disqontrol.yml (default: $DISQONTROL_CONFIG, ./disqontrol.yml, "
                                         "/etc/disqontrol/disqontrol.yml)")
    parser.add_argument("--bootstrap", help="bootstrap file defining WORKERS (default: ./disqontrol_bootstrap.py)")
    parser.add_argument("--daemonize", action="store_true", help="detach from the terminal")
    parser.add_argument("--pidfile", help="write the master's pid here")
    parser.add_argument("--check", action="store_true", help="validate the config and workers, then exit 0 or 2")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--no-stderr-log", action="store_true", help="log to the log file only")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == SCHEDULER_COMMAND:
        from disqontrold.scheduler_cli import main as scheduler_main  # noqa: PLC0415

        return scheduler_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except DisqontrolError as exc:
        print(f"disqontrold: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from disqontrold import reload as reloading  # noqa: PLC0415
    from disqontrold.broker_check import check_broker_data  # noqa: PLC0415
    from disqontrold.log import setup_logging  # noqa: PLC0415
    from disqontrold.master import Master  # noqa: PLC0415
    from disqontrold.systemd import start_extended  # noqa: PLC0415

    bootstrap = reloading.bootstrap_path(args.bootstrap)
    config = reloading.load_checked(args.config, bootstrap)
    if args.check:
        print(f"disqontrold: {config.path}: OK ({len(config.queues)} queues, {len(config.consumers)} consumer groups)")
        return exitcodes.OK
    if args.daemonize:  # in the foreground, as the config's: the shell sees a refusal's exit 2
        setup_logging(None, args.log_level, stderr=not args.no_stderr_log)
        check_broker_data(config.broker)
    pidfile = detach(args, config)  # always: the pidfile keeps a second master off this run_dir
    setup_logging(config.log_dir, args.log_level, stderr=not args.no_stderr_log)
    with start_extended("checking the broker's data: an upgrade of older data may take minutes"):
        check_broker_data(config.broker)  # a rollback over newer data stops here, before any fork
    master = Master(config, bootstrap)
    master.add_timer(pidfile.keep)  # made again if run_dir is removed under us
    attach_plugins(master)
    return master.run()


def detach(args: argparse.Namespace, config: object) -> Any:
    """The pidfile (``--pidfile`` or run_dir/disqontrold.pid; a second master
    exits 2) and ``--daemonize`` (python-daemon): ``disqontrold.pidfile.prepare``."""
    if importlib.util.find_spec("disqontrold.pidfile") is None:
        raise DisqontrolError("--daemonize/--pidfile are not available in this build")
    return importlib.import_module("disqontrold.pidfile").prepare(args, config)


def attach_plugins(master: object) -> None:
    """Let the control socket, sd_notify and the built-in scheduler plug in."""
    for name in PLUGINS:
        if importlib.util.find_spec(name) is None:
            continue
        attach = getattr(importlib.import_module(name), ATTACH, None)
        if attach is not None:
            attach(master)


if __name__ == "__main__":
    sys.exit(main())
