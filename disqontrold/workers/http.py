"""The HTTP worker: POSTs (or GETs) each job to a web endpoint.

Connections are kept alive and reused across jobs (one per host per thread:
``http.client`` is all we need, so no new dependency), and a batch is sent in
parallel from a small thread pool. 2xx is success; any other status, a
connection error or no answer within the job's timeout is failure.
"""
from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlencode, urlsplit

from disqontrol_client.errors import WorkerLoadError
from disqontrol_client.job import Job
from disqontrol_client.logfmt import log_event
from disqontrold.workers.base import OnStart, Outcome, Worker

logger = logging.getLogger("disqontrold.workers.http")

METHODS = ("post", "get")
BODY_FORMATS = ("json", "form")
#: Parallel requests of one batch (a consumer fetches at most 99 jobs).
POOL_THREADS = 16
#: Characters of a response body kept in an error and its details.
SNIPPET_CHARS = 500
#: Bytes of a successful response body kept as the result (synchronous mode).
MAX_RESULT_BYTES = 1024 * 1024
USER_AGENT = "disqontrol"
#: Bytes per read of a response body (each read is bounded by the time left).
READ_CHUNK = 256 * 1024
#: Errors that mean a kept-alive connection was closed by the server while
#: idle: the request is sent again once on a fresh connection.
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _NoDelay:
    """Sends small requests at once (no Nagle delay), as urllib3 does."""

    sock: socket.socket

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Connection(_NoDelay, http.client.HTTPConnection):
    pass


class _TLSConnection(_NoDelay, http.client.HTTPSConnection):
    pass


def _read_by(response: http.client.HTTPResponse, conn: http.client.HTTPConnection, deadline: float) -> bytes:
    """The response body, read by ``deadline``: the socket timeout bounds
    each read, so a server sending a byte now and then would otherwise keep
    a job running long past its timeout (until the master killed the
    consumer as hung)."""
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("the response did not end within the job's timeout")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        chunk = response.read1(READ_CHUNK)  # one recv at most: read() loops until it has them all
        if not chunk:
            chunks.append(response.read())  # b"", and marks the response done: the connection is reused
            return b"".join(chunks)
        chunks.append(chunk)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class HttpWorker(Worker):
    """Sends jobs to ``address``; see the module docstring."""

    concurrent = True

    def __init__(self, address: Optional[str], method: str = "post", headers: Optional[Mapping[str, str]] = None,
                 body_format: str = "json", key: str = "worker") -> None:
        url = urlsplit(address or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise WorkerLoadError(f"{key}.address: {address!r} is not an http:// or https:// URL")
        if method.lower() not in METHODS:
            raise WorkerLoadError(f"{key}.method: {method!r} is not one of {', '.join(METHODS)}")
        if body_format not in BODY_FORMATS:
            raise WorkerLoadError(f"{key}.body_format: {body_format!r} is not one of {', '.join(BODY_FORMATS)}")
        self.address = address
        self.method = method.upper()
        self.body_format = body_format
        self.headers = {"User-Agent": USER_AGENT, **dict(headers or {})}
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port
        self._path = url.path or "/"
        self._query = url.query
        self._local = threading.local()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- the request of one job ------------------------------------------
    def request_parts(self, job: Job) -> tuple[str, Optional[bytes], dict[str, str]]:
        """(path with query, body, headers) of the job's request."""
        if self.body_format == "form":  # the PHP Disqontrol's shape
            fields = {"body": _json(job.body), "metadata": _json(job.metadata)}
            content_type = "application/x-www-form-urlencoded"
        else:
            fields = {"queue": job.queue, "body": job.body, "metadata": job.metadata}
            content_type = "application/json"
        headers = dict(self.headers)
        if self.method == "GET":
            if self.body_format == "json":  # query values are strings: JSON-encode body and metadata
                fields = {"queue": job.queue, "body": _json(job.body), "metadata": _json(job.metadata)}
            params = urlencode(fields)
            query = f"{self._query}&{params}" if self._query else params
            return f"{self._path}?{query}", None, headers
        data = (urlencode(fields) if self.body_format == "form" else _json(fields)).encode("utf-8")
        headers.setdefault("Content-Type", content_type)
        path = f"{self._path}?{self._query}" if self._query else self._path
        return path, data, headers

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's kept-alive connection (reused=True) or a new one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, conn.sock is not None
        cls = _TLSConnection if self._https else _Connection
        conn = cls(self._host, self._port, timeout=timeout)
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn, False

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)

    def _send(self, job: Job, timeout: float) -> tuple[int, bytes]:
        path, data, headers = self.request_parts(job)
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            conn, reused = self._connection(timeout)
            try:
                conn.request(self.method, path, body=data, headers=headers)
                response = conn.getresponse()
                body = _read_by(response, conn, deadline)
            except STALE_CONNECTION_ERRORS:
                self._drop(conn)
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                self._drop(conn)
                raise
            if response.will_close:
                self._drop(conn)
            return response.status, body
        raise AssertionError("unreachable")

    def run(self, job: Job, timeout: float) -> Outcome:
        started = time.monotonic()
        try:
            status, body = self._send(job, timeout)
        except (socket.timeout, TimeoutError):
            outcome = Outcome(False, error=f"no answer after {timeout:g}s timeout from {self.address}",
                              details={"http_status": None})
        except (OSError, http.client.HTTPException) as exc:
            outcome = Outcome(False, error=f"cannot reach {self.address}: {type(exc).__name__}: {exc}",
                              details={"http_status": None})
        else:
            text = body[: MAX_RESULT_BYTES].decode("utf-8", errors="replace")
            snippet = text[:SNIPPET_CHARS]
            if 200 <= status < 300:
                outcome = Outcome(True, result=text, details={"http_status": status})
            else:
                outcome = Outcome(False, error=f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}",
                                  details={"http_status": status, "body_snippet": snippet})
        outcome.duration = time.monotonic() - started
        if not outcome.ok:
            log_event(logger, "http_job_failed", logging.WARNING, job=job.id, queue=job.queue,
                      address=self.address, status=outcome.details.get("http_status"), error=outcome.error)
        return outcome

    def run_many(self, jobs: Sequence[Job], timeout: float, on_start: OnStart = None) -> list[Outcome]:
        """Send the batch in parallel; one job is sent from this thread."""
        if len(jobs) <= 1:
            return super().run_many(jobs, timeout, on_start)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="http-worker")
        futures = []
        for job in jobs:
            if on_start is not None:
                on_start(job)
            futures.append(self._pool.submit(self.run, job, timeout))
        return [future.result() for future in futures]

    def close(self) -> None:
        """Close every kept-alive connection and stop the pool. Idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
