"""`disqontrolctl failed ...`: the arguments and the output of the
failure-queue commands; ctl_failed does the work on the broker."""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

from disqontrol_client import exitcodes
from disqontrol_client.brokers import Broker
from disqontrol_client.config import Config
from disqontrol_client.errors import UsageError
from disqontrol_client.job import ORIGINAL_ID
from disqontrold import ctl_failed
from disqontrold.ctl_text import table

LAST_ERROR_CHARS = 60  # of the last error in `failed list`; `failed show` has it all


def add_parser(commands: Any, after: argparse.ArgumentParser) -> None:
    """`failed list / show / retry / purge` under ``commands`` (the
    subparsers of disqontrolctl); ``after`` carries the global options."""
    failed = commands.add_parser("failed", parents=[after], help="inspect and replay the failure queue")
    actions = failed.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[after], epilog=ctl_failed.LIST_EPILOG,
                                 help="failed jobs, oldest first, a page at a time")
    listing.add_argument("queue", nargs="?", help="a failure queue, or a queue the jobs failed on")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=_count, default=ctl_failed.DEFAULT_LIMIT,
                         help=f"show at most N jobs (default {ctl_failed.DEFAULT_LIMIT}; 0: all)")
    listing.add_argument("--offset", type=_count, default=0, help="skip the first N jobs (the next page)")
    actions.add_parser("show", parents=[after], epilog=exitcodes.HELP).add_argument("id")
    retry = actions.add_parser("retry", parents=[after], epilog=ctl_failed.RETRY_EPILOG,
                               help="put failed jobs back on their queue")
    retry.add_argument("target", nargs="?", metavar="ID|QUEUE", help="a job id; with --all, an optional queue")
    retry.add_argument("--all", action="store_true", help="every failed job (of QUEUE if given)")
    purge = actions.add_parser("purge", parents=[after], epilog=ctl_failed.PURGE_EPILOG,
                               help="delete failed jobs for good (asks first; --yes in scripts)")
    purge.add_argument("queue", nargs="?", help="a failure queue, or a queue the jobs failed on")
    purge.add_argument("--yes", "-y", action="store_true",
                       help="delete without asking (required when stdin is not a terminal)")


def _count(text: str) -> int:
    """A --limit / --offset: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def run(args: argparse.Namespace, broker: Broker, config: Config) -> int:
    """One `disqontrolctl failed ACTION`; its exit code."""
    action = args.action
    if action == "list":
        return _list(args, broker, config)
    if action == "show":
        print(json.dumps(ctl_failed.show_failed(broker, config, args.id).as_dict(), indent=2, default=str))
        return exitcodes.OK
    if action == "retry":
        return _retry(args, broker, config)
    targets = ctl_failed.failed_ids(broker, config, args.queue)
    if not ctl_failed.confirm_purge(targets, args.yes):
        print("disqontrolctl: purge cancelled, nothing deleted", file=sys.stderr)
        return exitcodes.FAILED
    print(f"{ctl_failed.purge_failed(broker, targets)} job(s) purged")
    return exitcodes.OK


def _list(args: argparse.Namespace, broker: Broker, config: Config) -> int:
    """One page, read a page at a time: --json streams its items, the
    table holds one short row per job; how many more goes to stderr."""
    offset, limit, queue = args.offset, args.limit, args.queue
    jobs = ctl_failed.iter_failed(broker, config, queue)
    page = itertools.islice(jobs, offset, offset + limit if limit else None)
    if args.json:
        shown = 0
        for shown, failed in enumerate(page, 1):
            print("[" if shown == 1 else ",", json.dumps(failed.as_dict(), default=str))
        print("]" if shown else "[]")
    else:
        rows = [(j.id, j.metadata.get(ORIGINAL_ID), j.original_queue, j.metadata.get("retries"),
                 j.last_error[:LAST_ERROR_CHARS]) for j in page]
        shown = len(rows)
        print(table(["ID", "FIRST ID", "QUEUE", "RETRIES", "LAST ERROR"], rows) if rows
              else "no failed jobs" if not offset else f"no failed jobs past the first {offset}")
    sys.stdout.flush()
    if limit and shown == limit:
        more = ctl_failed.count_more(jobs, broker, config, queue, offset + shown)
        if more > 0:
            print(f"disqontrolctl: {more} more failed job(s) after these {shown}: --offset {offset + shown} "
                  "for the next page, --limit 0 for all", file=sys.stderr)
    return exitcodes.OK


def _retry(args: argparse.Namespace, broker: Broker, config: Config) -> int:
    """One job by id, or --all: every one it can, naming those it skipped."""
    target = args.target
    if not args.all:
        if target is None:
            raise UsageError("failed retry: give a job ID, or --all [QUEUE]")
        failed = ctl_failed.show_failed(broker, config, target)
        print(f"retried {failed.id} as {ctl_failed.retry_failed(broker, config, failed)} on {failed.original_queue}")
        return exitcodes.OK

    def retried(failed: ctl_failed.FailedJob, new_id: str) -> None:
        print(f"retried {failed.id} as {new_id} on {failed.original_queue}", flush=True)
    count, skipped = ctl_failed.retry_all(broker, config, target, retried)
    for reason, ids in skipped.items():
        print(f"disqontrolctl: skipped {len(ids)} job(s), kept in the failure queue, as {reason}: "
              f"{', '.join(ids)}", file=sys.stderr)
    n_skipped = sum(len(ids) for ids in skipped.values())
    print(f"{count} job(s) retried" + (f", {n_skipped} skipped (kept in the failure queue)" if n_skipped else ""))
    return exitcodes.FAILED if n_skipped else exitcodes.OK
