"""The HTTP worker against a real HTTP server on 127.0.0.1 (stdlib, in a
thread): success, error statuses, a hang past the timeout, connection
refused, a 5 MiB body, form encoding, GET, keep-alive reuse, parallel batch."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from disqontrol_client.errors import WorkerLoadError
from disqontrol_client.job import Job, fresh_metadata
from disqontrold.workers.http import HttpWorker

#: How long the /hang endpoint holds a request: far past the test timeouts.
HANG_SECONDS = 30
DRIBBLE_BYTES = 100
DRIBBLE_PAUSE = 0.3  # s between two bytes of /dribble


class Recorder(BaseHTTPRequestHandler):
    """Records every request; the path picks the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    disable_nagle_algorithm = True  # headers and body are two writes

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        self.server.requests.append({  # type: ignore[attr-defined]
            "method": self.command, "path": url.path, "query": parse_qs(url.query), "body": body,
            "headers": dict(self.headers), "peer": self.client_address,
        })
        if url.path == "/hang":
            self.server.release.wait(HANG_SECONDS)  # type: ignore[attr-defined]
        if url.path == "/slow":
            time.sleep(1)
        if url.path == "/dribble":  # each byte well within the timeout, the whole far past it
            self.send_response(200)
            self.send_header("Content-Length", str(DRIBBLE_BYTES))
            self.end_headers()
            for _ in range(DRIBBLE_BYTES):
                self.wfile.write(b"x")
                self.wfile.flush()
                if self.server.release.wait(DRIBBLE_PAUSE):  # type: ignore[attr-defined]
                    return
            return
        status = 500 if url.path == "/fail" else 200
        reply = b"database is down" if status == 500 else b'{"done": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        if url.path == "/idle-close":  # as a server whose keep-alive timer ran out
            self.close_connection = True

    do_POST = do_GET = _answer

    def log_message(self, format, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def job(body, job_id="j1") -> Job:
    return Job(body, "profile-update", fresh_metadata(now=1000), id=job_id)


def test_post_json_success(server):
    worker = HttpWorker(server.url + "/work", headers={"Authorization": "Bearer t0k"})
    outcome = worker.run(job({"user": 5}), 30)
    assert outcome.ok and outcome.details["http_status"] == 200
    [request] = server.requests
    assert request["method"] == "POST" and request["path"] == "/work"
    assert request["headers"]["Authorization"] == "Bearer t0k"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {"queue": "profile-update", "body": {"user": 5},
                                           "metadata": fresh_metadata(now=1000)}
    worker.close()


def test_status_500_is_failure_with_a_snippet(server):
    worker = HttpWorker(server.url + "/fail")
    outcome = worker.run(job(1), 30)
    assert not outcome.ok
    assert outcome.error == "HTTP 500: database is down"
    assert outcome.details == {"http_status": 500, "body_snippet": "database is down"}
    worker.close()


def test_a_hang_past_the_timeout_is_failure(server):
    worker = HttpWorker(server.url + "/hang")
    started = time.monotonic()
    outcome = worker.run(job(1), 0.5)
    assert not outcome.ok and "no answer after 0.5s timeout" in outcome.error
    assert time.monotonic() - started < 10
    worker.close()


def test_an_answer_dribbling_past_the_timeout_is_failure(server):
    worker = HttpWorker(server.url + "/dribble")
    started = time.monotonic()
    outcome = worker.run(job(1), 1)
    assert not outcome.ok and outcome.error.startswith("no answer after 1s timeout")
    assert time.monotonic() - started < 1 + 2 * DRIBBLE_PAUSE  # not 100 x 0.3 s


def test_connection_refused_is_failure(refused_port):
    worker = HttpWorker(f"http://127.0.0.1:{refused_port}/work")
    outcome = worker.run(job(1), 5)
    assert not outcome.ok
    assert "cannot reach" in outcome.error and "ConnectionRefusedError" in outcome.error
    worker.close()


def test_a_5_mib_body_arrives_intact(server):
    body = {"blob": "z" * (5 * 1024 * 1024)}
    worker = HttpWorker(server.url + "/work")
    assert worker.run(job(body), 60).ok
    assert json.loads(server.requests[0]["body"])["body"] == body
    worker.close()


def test_form_body_is_php_compatible(server):
    worker = HttpWorker(server.url + "/work", body_format="form")
    assert worker.run(job({"a": [1, 2]}), 30).ok
    request = server.requests[0]
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(request["body"].decode())
    assert json.loads(fields["body"][0]) == {"a": [1, 2]}
    assert json.loads(fields["metadata"][0]) == fresh_metadata(now=1000)
    worker.close()


def test_get_sends_query_parameters(server):
    worker = HttpWorker(server.url + "/work?token=abc", method="get")
    assert worker.run(job({"a": 1}), 30).ok
    request = server.requests[0]
    assert request["method"] == "GET" and request["body"] == b""
    assert request["query"]["token"] == ["abc"]
    assert request["query"]["queue"] == ["profile-update"]
    assert json.loads(request["query"]["body"][0]) == {"a": 1}
    worker.close()


def test_connection_is_kept_alive_across_jobs(server):
    worker = HttpWorker(server.url + "/work")
    for i in range(5):
        assert worker.run(job(i), 30).ok
    # All five requests came over one TCP connection (one client port)
    assert len({r["peer"] for r in server.requests}) == 1
    worker.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(server):
    # Given a server that drops each connection after answering, unannounced
    worker = HttpWorker(server.url + "/idle-close")
    # When jobs reuse the kept-alive (now dead) connection
    outcomes = [worker.run(job(i), 30) for i in range(3)]
    # Then each is sent again on a fresh connection and succeeds
    assert all(o.ok for o in outcomes), outcomes
    assert len(server.requests) == 3
    worker.close()


def test_batch_is_sent_in_parallel(server):
    worker = HttpWorker(server.url + "/slow")
    started = time.monotonic()
    outcomes = worker.run_many([job(i, str(i)) for i in range(6)], 30)
    assert all(o.ok for o in outcomes)
    assert time.monotonic() - started < 4.5  # six 1 s requests, overlapped
    worker.close()


def test_bad_settings_are_refused_naming_the_key():
    with pytest.raises(WorkerLoadError, match=r"^w.address: 'ftp://x' is not an http"):
        HttpWorker("ftp://x", key="w")
    with pytest.raises(WorkerLoadError, match=r"^w.method: 'put' is not one of post, get"):
        HttpWorker("http://127.0.0.1/", method="put", key="w")
