#!/usr/bin/env python3
"""An example command worker (the `resize-pic` queue of etc/disqontrol.yml).

disqontrol execs it, without a shell, as
    resize_pic.py --queue=Q --body=<json> --metadata=<json>
and, when the body's JSON is above 64 KiB, with --body=- and the JSON on
stdin (a single argument that long would be refused by the kernel). Exit 0 is success; any other exit code is a failure and the job is retried.
It only logs what it got; a body {"fail": true} fails on purpose, to show
retries and the failure queue. stdout and stderr tails end up in the log.
"""
import argparse
import json
import sys

FAILED = 1
STDIN_BODY = "-"  # large bodies arrive on stdin


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--metadata", default="{}")
    args = parser.parse_args()
    body = json.loads(sys.stdin.read() if args.body == STDIN_BODY else args.body)
    metadata = json.loads(args.metadata)
    sys.stdout.write(f"resize_pic: queue={args.queue} body={body!r} retries={metadata.get('retries', 0)}\n")
    if isinstance(body, dict) and body.get("fail"):
        sys.stderr.write("resize_pic: failing on purpose ({'fail': true} in the body)\n")
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
