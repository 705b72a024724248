"""The bootstrap file of etc/disqontrol.yml's Python workers (SPEC §5).

disqontrold imports it in each consumer process (never in the master):
``setup_environment()`` is called once per process that needs it, and
``WORKERS[name](environment, name)`` builds the worker a queue names.
A worker is a callable ``worker(job)`` or an object with ``process(job)``;
returning normally is success, returning False or raising is failure.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from disqontrol_client import Job
from disqontrol_client.logfmt import log_event

logger = logging.getLogger("examples.bootstrap")


def setup_environment() -> dict[str, Any]:
    """What your workers share: connections, settings, caches. Built lazily,
    once per process, so the master never opens your database."""
    return {"greeting": "Hello"}


def make_greeter(environment: dict[str, Any], name: str) -> Callable[[Job], str]:
    """Worker of the `greet` queue: a plain function."""

    def greet(job: Job) -> str:
        who = job.body.get("name", "world") if isinstance(job.body, dict) else str(job.body)
        text = f"{environment['greeting']}, {who}!"
        log_event(logger, "greeted", job=job.id, queue=job.queue, text=text)
        return text

    return greet


class WordCounter:
    """Worker of the `count-words` queue: an object with process(job).
    A non-string body fails the job, to show retries and the failure queue."""

    def __init__(self, environment: dict[str, Any]) -> None:
        self.environment = environment

    def process(self, job: Job) -> int:
        if not isinstance(job.body, str):
            raise TypeError(f"count-words wants a string body, got {type(job.body).__name__}")
        count = len(job.body.split())
        log_event(logger, "words_counted", job=job.id, queue=job.queue, count=count)
        return count


WORKERS = {
    "greet": make_greeter,
    "count_words": lambda environment, name: WordCounter(environment),
}
