"""Throughput of the HTTP worker against a local server (bounded run).

Starts a stdlib HTTP/1.1 server on 127.0.0.1 in a thread, then sends
batches of jobs through HttpWorker.run_many (kept-alive connections, a
thread pool per batch) and prints jobs/s. The server shares our process and
the GIL, so this measures the worker's overhead, not a real endpoint.

    .venv/bin/python bench/http_worker.py [--jobs N] [--batch B]
"""
from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from disqontrol_client.job import Job, fresh_metadata
from disqontrold.workers.http import HttpWorker

DEFAULT_JOBS = 3000
DEFAULT_BATCH = 10
#: Stop early after this many seconds so a slow machine still finishes.
MAX_SECONDS = 30.0
REPLY = b'{"ok":true}'


class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = HttpWorker(f"http://127.0.0.1:{server.server_address[1]}/job")
    metadata = fresh_metadata()
    done = failed = 0
    started = time.monotonic()
    while done < args.jobs and time.monotonic() - started < MAX_SECONDS:
        jobs = [Job({"n": done + i}, "bench", metadata, id=str(done + i)) for i in range(args.batch)]
        outcomes = worker.run_many(jobs, 30)
        failed += sum(not o.ok for o in outcomes)
        done += len(jobs)
    elapsed = time.monotonic() - started
    worker.close()
    server.shutdown()
    print(f"http worker: {done} jobs in {elapsed:.2f}s = {done / elapsed:.0f} jobs/s "
          f"(batch {args.batch}, {failed} failed)")


if __name__ == "__main__":
    main()
