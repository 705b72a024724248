"""`disqontrolctl metrics`: the status of the master and the queues in the
Prometheus text format (version 0.0.4), for node_exporter's textfile
collector or any scraper that reads a file.

Why a file and not an HTTP port in the master: the master serves nothing
on the network (its control socket is a unix socket), and a scrape must not
cost the master a broker round trip in its loop. ``disqontrolctl metrics
--output /var/lib/node_exporter/textfile_collector/disqontrol.prom``, run
by a timer (systemd/disqontrol-metrics.timer), writes the file atomically.

The job counters are the master's per-group totals, and per queue its
totals of jobs done, retried and parked and of their durations (a
histogram; see queue_tally.py): they start at 0 with the master and do not
go down while it runs (a retired or crashed consumer's jobs stay in them);
Prometheus takes the drop at a master restart for a reset. The per-queue
counters have a 0 for every queue the broker or the config knows, so the
first parked job is an increase an alert sees; the histogram appears with
its queue's first job.
"""
from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

PREFIX = "disqontrol_"
MIB = 1024 * 1024
FILE_MODE = 0o644  # node_exporter runs as another user

Sample = tuple[Mapping[str, str], float]
HISTOGRAM = "histogram"  # its samples are (suffix, labels, value): _bucket, _sum, _count
INF = "+Inf"

#: name -> (type, help); the order of the exposition.
METRICS: dict[str, tuple[str, str]] = {
    "master_up": ("gauge", "1 if the master answered on its control socket"),
    "broker_up": ("gauge", "1 if the broker answered the queue statistics"),
    "master_uptime_seconds": ("gauge", "Seconds since the master started"),
    "master_generation": ("gauge", "Config generation (1 + reloads taken)"),
    "consumer_processes": ("gauge", "Consumer processes running, per group"),
    "consumer_busy_processes": ("gauge", "Consumer processes running a job, per group"),
    "consumer_target_processes": ("gauge", "Consumer processes wanted, per group"),
    "consumer_rss_bytes": ("gauge", "Resident memory of the group's consumer processes, summed"),
    "consumer_restarts_total": ("counter", "Consumer processes replaced (crashed, recycled, killed as hung), per group"),
    "jobs_done_total": ("counter", "Jobs that succeeded, per group"),
    "jobs_failed_total": ("counter", "Jobs that failed (retried later or parked; a delivery lost with its "
                                     "consumer counts when the job runs again), per group"),
    "job_processes": ("gauge", "Command and isolated job processes running, per group"),
    "oldest_job_seconds": ("gauge", "Seconds the longest-running job of the group has run (0: none runs); "
                                    "near job_process_timeout, a job is stuck: `disqontrolctl status` names it"),
    "queue_ready_jobs": ("gauge", "Jobs ready to run, per queue"),
    "queue_delayed_jobs": ("gauge", "Jobs waiting for their time (delay or retry backoff), per queue"),
    "queue_in_flight_jobs": ("gauge", "Jobs leased by a consumer, per queue"),
    "queue_latency_seconds": ("gauge", "Seconds the oldest ready job of the queue has waited since it became "
                                       "ready (added, its delay or retry backoff ended, its lease ran out, "
                                       "given back); 0: none waits. Growing: the consumers do not keep up"),
    "queue_held": ("gauge", "1 while a consumer holds the queue (its worker's setup raises: its jobs wait); "
                            "`disqontrolctl status` shows the error and the next try"),
    "queue_paused": ("gauge", "1 while a consumer pauses the queue (its jobs cannot start: no process, memory "
                              "or descriptor left, or the program missing; given back); `disqontrolctl status` "
                              "shows the errno and the pause"),
    "failure_queue_jobs": ("gauge", "Jobs parked in a failure queue, per failure queue"),
    "queue_jobs_done_total": ("counter", "Jobs of the queue that succeeded"),
    "queue_jobs_retried_total": ("counter", "Jobs of the queue that failed and will run again (a retry, a "
                                            "failure the broker did not take, or a job run again after its consumer "
                                            "died under it)"),
    "queue_jobs_parked_total": ("counter", "Jobs of the queue that failed for good: moved to its failure queue "
                                           "(max_retries or job_lifetime reached)"),
    "queue_job_duration_seconds": (HISTOGRAM, "Seconds the jobs of the queue ran, done or failed"),
}
OUTCOME_METRICS = {"done": "queue_jobs_done_total", "retried": "queue_jobs_retried_total",
                   "parked": "queue_jobs_parked_total"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, labels: Mapping[str, str], value: float) -> str:
    text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
    return f"{PREFIX}{name}{{{text}}} {number}" if text else f"{PREFIX}{name} {number}"


def exposition(samples: Mapping[str, Iterable[Sample]]) -> str:
    """The text format: HELP and TYPE, then the samples, of each metric with any."""
    lines = []
    for name, (kind, help_text) in METRICS.items():
        rows = list(samples.get(name, ()))
        if not rows:
            continue
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
        if kind == HISTOGRAM:
            lines += [_line(name + suffix, labels, value) for suffix, labels, value in rows]
        else:
            lines += [_line(name, labels, value) for labels, value in rows]
    return "\n".join(lines) + "\n"


def samples_of(status: Optional[Mapping[str, Any]], queues: Optional[list[Mapping[str, Any]]]) -> dict[str, list[Any]]:
    """Samples from a status reply (None: no master answered) and the queue
    rows of ``disqontrolctl queues`` (None: no broker answered)."""
    out: dict[str, list[Any]] = defaultdict(list)
    out["master_up"].append(({}, 1 if status is not None else 0))
    out["broker_up"].append(({}, 1 if queues is not None else 0))
    if status is not None:
        master = status.get("master", {})
        out["master_uptime_seconds"].append(({}, float(master.get("uptime") or 0)))
        out["master_generation"].append(({}, master.get("generation") or 0))
        _group_samples(status, out)
    for row in queues or ():
        label = {"queue": row["queue"]}
        out["queue_ready_jobs"].append((label, row["ready"]))
        out["queue_delayed_jobs"].append((label, row["delayed"]))
        out["queue_in_flight_jobs"].append((label, row["in_flight"]))
        out["queue_latency_seconds"].append((label, row.get("latency") or 0))
    for kind in ("held", "paused") if status is not None else ():
        marked = {row["queue"] for row in status.get(kind) or ()}
        for name in sorted(marked | {row["queue"] for row in queues or ()}):
            out[f"queue_{kind}"].append(({"queue": name}, 1 if name in marked else 0))
    parked = {row["failure_queue"]: row["failed"] for row in queues or () if row.get("failure_queue")}
    for failure_queue, length in sorted(parked.items()):
        out["failure_queue_jobs"].append(({"queue": failure_queue}, length or 0))
    if status is not None:
        _queue_job_samples(status.get("queue_jobs") or {}, [row["queue"] for row in queues or ()], out)
    return out


def _queue_job_samples(jobs: Mapping[str, Any], known: list[str], out: dict[str, list[Any]]) -> None:
    """Per queue: the outcome counters (0 for a queue without jobs yet) and
    the duration histogram (cumulative buckets, then _sum and _count)."""
    by_queue = jobs.get("queues") or {}
    bounds = [repr(float(bound)) for bound in jobs.get("buckets") or ()] + [INF]
    for queue in sorted(set(known) | set(by_queue)):
        counts = by_queue.get(queue) or {}
        label = {"queue": queue}
        for outcome, metric in OUTCOME_METRICS.items():
            out[metric].append((label, counts.get(outcome) or 0))
        durations = counts.get("durations") or []
        if len(durations) != len(bounds):
            continue  # no job yet (or a master of another version)
        running = 0
        for bound, count in zip(bounds, durations):
            running += count
            out["queue_job_duration_seconds"].append(("_bucket", {"queue": queue, "le": bound}, running))
        out["queue_job_duration_seconds"].append(("_sum", label, float(counts.get("duration_sum") or 0)))
        out["queue_job_duration_seconds"].append(("_count", label, running))


def _group_samples(status: Mapping[str, Any], out: dict[str, list[Sample]]) -> None:
    """Per group: the live processes summed from the consumers, the totals
    from the master's groups (a retired slot's counts stay in them, so the
    counters do not go down while the master runs). Every configured group
    has every sample, 0 included (a group in a crash loop has no process)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for group in status.get("groups", []):
        counts = sums[group["group"]]
        counts["consumer_processes"] = counts["consumer_busy_processes"] = 0
        counts["consumer_target_processes"] = group.get("target") or 0
        counts["consumer_rss_bytes"] = counts["job_processes"] = counts["oldest_job_seconds"] = 0
        counts["consumer_restarts_total"] = group.get("restarts") or 0
        counts["jobs_done_total"] = group.get("done") or 0
        counts["jobs_failed_total"] = group.get("failed") or 0
    for consumer in status.get("consumers", []):
        counts = sums[consumer.get("group") or ""]
        counts["consumer_processes"] += 1
        counts["consumer_busy_processes"] += 1 if consumer.get("job") else 0
        counts["consumer_rss_bytes"] += (consumer.get("rss_mib") or 0) * MIB
        counts["job_processes"] += len(consumer.get("job_pids") or ())
        counts["oldest_job_seconds"] = max(counts["oldest_job_seconds"], consumer.get("oldest_job_age") or 0)
    for name in sorted(sums):
        for metric, value in sums[name].items():
            out[metric].append(({"group": name}, round(value)))


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: a scraper never reads half a file."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
