"""`disqontrol addjob|processjob`: the producer from a shell (SPEC §2).

Exit codes: 0 ok, 1 the job failed (processjob), 2 usage or config error
(bad JSON, unknown queue, negative delay), 3 the broker cannot be reached.
Errors are one line on stderr; the job id or result goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
from typing import Any, Callable, Optional, Sequence

from disqontrol_client import exitcodes
from disqontrol_client.errors import DisqontrolError, UsageError
from disqontrol_client.job import Job, loads_json

PROG = "disqontrol"
STDIN_BODY = "-"
BODY_SNIPPET_CHARS = 80
EXIT_INTERRUPTED = 128 + signal.SIGINT  # the shell's code for a Ctrl-C


def _global_options(parser: argparse.ArgumentParser, config: Any, verbose: Any) -> None:
    """--config and -v, accepted before the command and after it
    (`disqontrol --config P addjob ...`, as `disqontrolctl --config P status`)."""
    parser.add_argument("--config", metavar="P", default=config,
                        help="config file (default: $DISQONTROL_CONFIG, ./disqontrol.yml, /etc/disqontrol/disqontrol.yml)")
    parser.add_argument("-v", "--verbose", action="store_true", default=verbose, help="log at INFO level to stderr")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS, argparse.SUPPRESS)  # unset after the command: the value before stands
    parser = argparse.ArgumentParser(prog=PROG, description="Add jobs to disqontrol queues, or run one now.",
                                     epilog=exitcodes.HELP)
    _global_options(parser, None, False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = commands.add_parser("addjob", parents=[common], help="add a job; prints its id")
    add.add_argument("queue", metavar="QUEUE")
    add.add_argument("body", metavar="BODY", help="the job body as JSON ('\"pic.png\"', '{\"id\": 5}'); - reads it from stdin")
    add.add_argument("--delay", type=float, default=0, metavar="S", help="seconds before the job may run (default 0)")

    process = commands.add_parser("processjob", parents=[common], help="run a job now through its worker, no broker, no retry")
    process.add_argument("queue", metavar="QUEUE")
    process.add_argument("body", metavar="BODY", help="the job body as JSON; - reads it from stdin")
    process.add_argument("--bootstrap", metavar="P", help="bootstrap file of the Python workers (default ./disqontrol_bootstrap.py)")
    return parser


def parse_body(text: str) -> Any:
    """The JSON body of the command line (or of stdin for ``-``)."""
    if text == STDIN_BODY:
        try:  # the bytes, decoded strictly: a C locale's text stdin turns bad bytes into surrogates
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"BODY on stdin is not UTF-8 text ({exc}); JSON must be UTF-8") from None
    try:
        return loads_json(text)
    except ValueError as exc:
        snippet = text if len(text) <= BODY_SNIPPET_CHARS else text[:BODY_SNIPPET_CHARS] + "..."
        raise UsageError(
            f"BODY is not valid JSON ({exc}): {snippet!r}; quote a string body as JSON, e.g. '\"pic.png\"'"
        ) from None


def addjob(args: argparse.Namespace) -> int:
    from disqontrol_client.producer import Producer  # noqa: PLC0415 (keeps --help fast)

    job = Job(parse_body(args.body), args.queue)
    with Producer.from_config(args.config) as producer:
        print(producer.add(job, delay=args.delay))
    return exitcodes.OK


def processjob(args: argparse.Namespace) -> int:
    from disqontrol_client.producer import Producer  # noqa: PLC0415

    job = Job(parse_body(args.body), args.queue)
    with Producer.from_config(args.config, synchronous=True, bootstrap=args.bootstrap) as producer:
        result = producer.add(job)
    if result is not None:
        print(json.dumps(result, default=repr))
    return exitcodes.OK


COMMANDS = {"addjob": addjob, "processjob": processjob}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    return guarded(PROG, lambda: COMMANDS[args.command](args))  # JobFailed: its exit code is 1


def guarded(prog: str, command: Callable[[], int]) -> int:
    """Run a command-line tool's body so that the user never sees a traceback
    for what is not a bug: a DisqontrolError is one line on stderr and its
    exit code, Ctrl-C exits 130, and a reader that closed our stdout
    (``| head``) ends the command quietly."""
    try:
        return command()
    except DisqontrolError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a pipe of ours, not the reader of stdout: a bug to see
        return exitcodes.FAILED


def _stdout_closed() -> bool:
    """True if stdout's reader is gone (a pipe's write end then polls as an
    error); stdout then points to /dev/null so the interpreter's last flush
    does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced or closed stdout
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True
