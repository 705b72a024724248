"""`disqontrolctl`: inspect and steer a running master, and the failure queue.

status / reload / stop talk to the master over its control socket; queues and
failed work on the broker directly (opened from the config), so they also
work while the master is down; metrics asks both, and says which answered.
Exit codes: 0 ok, 1 refused or failed, 2 usage or config error, 3 no master
or no broker answers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import psutil
import yaml

from disqontrol_client import exitcodes
from disqontrol_client.cli import guarded
from disqontrol_client.brokers import Broker, open_broker
from disqontrol_client.config import DEFAULT_RUN_DIR, Config, find_config_path, load_config
from disqontrol_client.config_checks import sqlite_path
from disqontrol_client.errors import ConfigError, DisqontrolError, UsageError
from disqontrol_client.logfmt import redact_url
from disqontrold import ctl_failed_cli, metrics
from disqontrold.broker_check import CHECK_TIMEOUT
from disqontrold.control import default_socket_path
from disqontrold.ctl_client import REPLY_TIMEOUT, MasterUnreachable, request
from disqontrold.ctl_text import table
from disqontrold.master_status import AGE_DIGITS
from disqontrold.reload import LOAD_TIMEOUT

PROG = "disqontrolctl"
STOP_POLL_INTERVAL = 0.1  # s between checks that the stopped master is gone
BYTES_PER_MIB = 1024 * 1024
# s: the master answers a reload once it has checked the new config, which
# may take LOAD_TIMEOUT (importing the Python workers), and a new broker's
# data, CHECK_TIMEOUT more (an upgrade); `systemctl reload` runs this
# command and would fail while the reload goes on.
RELOAD_REPLY_TIMEOUT = LOAD_TIMEOUT + CHECK_TIMEOUT + REPLY_TIMEOUT


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Ctl:
    """One invocation: the parsed arguments plus the lazily opened config and broker."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Optional[Config] = None
        self._broker: Optional[Broker] = None

    def config(self, path: Optional[str] = None) -> Config:
        if self._config is None:
            self._config = load_config(self.args.config or path)
        return self._config

    def socket_path(self) -> Path:
        """--socket, else run_dir/disqontrol.sock of the config. A config that
        no longer validates (just edited, before a reload) still names its
        run_dir: the master must hear the reload to refuse it with the reason."""
        if self.args.socket:
            return Path(self.args.socket)
        try:
            return default_socket_path(self.config().run_dir)
        except ConfigError:
            run_dir = _raw_run_dir(self.args.config)
            if run_dir is None:
                raise
            return default_socket_path(run_dir)

    def broker(self) -> Broker:
        if self._broker is None:
            url = self.config().broker
            database = sqlite_path(url)
            if database and not os.path.exists(database):
                # A mistyped path would otherwise show empty queues as if they were the real ones.
                print(f"disqontrolctl: note: no sqlite database at {database} yet, so no job was ever added "
                      f"with this broker; if the daemon's jobs are elsewhere, disqontrol.broker in "
                      f"{self.config().path} names another file than theirs", file=sys.stderr)
            self._broker = open_broker(url)
        return self._broker

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()

    def emit(self, data: Any, text: str) -> None:
        print(json.dumps(data, indent=2, default=str) if getattr(self.args, "json", False) else text)

    # -- master commands ----------------------------------------------------
    def _master_status(self) -> dict[str, Any]:
        """The master's status reply, with each consumer's RSS."""
        reply = request(self.socket_path(), "status")
        reply.pop("ok", None)
        master = reply.setdefault("master", {})
        for consumer in reply.get("consumers", []):
            consumer.setdefault("rss_mib", _rss_mib(consumer.get("pid")))
            consumer.setdefault("oldest_job_age", _oldest_job_age(consumer))
        if master.get("broker"):
            master["broker"] = redact_url(master["broker"])
        return reply

    def status(self) -> int:
        reply = self._master_status()
        master = reply["master"]
        code = exitcodes.OK
        try:
            reply["queues"] = self.queue_stats(master.get("config"))
        except DisqontrolError as exc:
            reply["queues_error"] = str(exc)
            code = exc.exit_code
        self.emit(reply, format_status(reply))
        if "queues_error" in reply:
            print(f"disqontrolctl: queues: {reply['queues_error']}", file=sys.stderr)
        return code

    def reload(self) -> int:
        reply = request(self.socket_path(), "reload", timeout=RELOAD_REPLY_TIMEOUT)
        verdict = "taken" if reply.get("taken") else "refused"
        reason = str(reply.get("reason", ""))
        reason = reason[len(verdict) + 1:].lstrip() if reason.startswith(f"{verdict}:") else reason
        print(f"reload {verdict}: {reason}".rstrip(": "))
        return exitcodes.OK if reply.get("taken") else exitcodes.FAILED

    def stop(self) -> int:
        path = self.socket_path()
        reply = request(path, "stop", fast=self.args.fast)
        pid = reply.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise MasterUnreachable(f"the control socket {path} answered 'stop' without the master's pid: {reply!r}")
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        while _alive(pid):
            if deadline is not None and time.monotonic() > deadline:
                print(f"disqontrolctl: master {pid} still running after {self.args.timeout:g} s", file=sys.stderr)
                return exitcodes.FAILED
            time.sleep(STOP_POLL_INTERVAL)
        print(f"master {pid} stopped")
        return exitcodes.OK

    def metrics(self) -> int:
        """The status in the Prometheus text format, to stdout or --output.
        A master or broker that does not answer is a 0 in master_up or
        broker_up (what an alert wants), not a failed run."""
        try:
            status: Optional[dict[str, Any]] = self._master_status()
        except DisqontrolError:
            status = None
        try:
            queues: Optional[list[dict[str, Any]]] = self.queue_stats(
                status["master"].get("config") if status else None)
        except DisqontrolError:
            queues = None
        text = metrics.exposition(metrics.samples_of(status, queues))
        if self.args.output:
            try:
                metrics.write_atomically(Path(self.args.output), text)
            except OSError as exc:
                raise UsageError(f"--output: cannot write {self.args.output!r}: {exc.strerror}; its directory "
                                 "must exist and be writable by this user (install -d -o USER DIR)") from exc
        else:
            sys.stdout.write(text)
        return exitcodes.OK

    # -- broker commands ----------------------------------------------------
    def queue_stats(self, config_path: Optional[str] = None) -> list[dict[str, Any]]:
        config = self.config(config_path)
        broker = self.broker()
        names = sorted(set(config.queues) | set(broker.queues()) - config.failure_queues)
        failure_length = {q: broker.length(q) for q in config.failure_queues}
        latency = broker.latency(names)
        rows = []
        for stats in broker.stats(names):
            queue_config = config.queues.get(stats.queue)
            failure_queue = queue_config.failure_queue if queue_config else None
            rows.append({
                "queue": stats.queue, "ready": stats.ready, "delayed": stats.delayed,
                "in_flight": stats.in_flight, "latency": round(latency.get(stats.queue, 0.0), AGE_DIGITS),
                "failure_queue": failure_queue,
                "failed": failure_length.get(failure_queue) if failure_queue else None,
            })
        return rows

    def queues(self) -> int:
        rows = self.queue_stats()
        # Every failure queue of the config is some configured queue's, so the
        # rows carry its length already (on disque a length scans every node).
        failure_rows = [{"queue": q, "length": n} for q, n in _failure_lengths(rows)]
        data = {"queues": rows, "failure_queues": failure_rows}
        self.emit(data, format_queues(rows))
        return exitcodes.OK

    def failed(self) -> int:
        config = self.config()
        return ctl_failed_cli.run(self.args, self.broker(), config)


def _raw_run_dir(explicit: Optional[str]) -> Optional[Path]:
    """run_dir read from the YAML without validating the rest (None if unreadable)."""
    try:
        path = find_config_path(explicit)
        section = yaml.safe_load(path.read_text(encoding="utf-8"))["disqontrol"]
        run_dir = section.get("run_dir", DEFAULT_RUN_DIR)
    except (ConfigError, OSError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(run_dir, str):
        return None
    return Path(os.path.normpath(path.parent / Path(run_dir).expanduser()))


def _alive(pid: int) -> bool:
    """A zombie is gone: it only waits for its parent to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _rss_mib(pid: Optional[int]) -> Optional[float]:
    if not pid:
        return None
    try:
        return round(psutil.Process(pid).memory_info().rss / BYTES_PER_MIB, 1)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _oldest_job_age(consumer: dict[str, Any]) -> float:
    """Seconds the consumer's oldest running job has run. ``job_age`` counts
    from its latest start only: a job window starts jobs beside one that
    runs on (and reads idle between rounds), so the job processes' own
    start times count too."""
    now = time.time()
    ages = [consumer.get("job_age") or 0.0]
    for pid in consumer.get("job_pids") or ():
        try:
            ages.append(now - psutil.Process(pid).create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # ended since the master answered
    return round(max(ages), AGE_DIGITS)


def _consumer_state(consumer: dict[str, Any]) -> str:
    processes = len(consumer.get("job_pids") or ())
    running = f" ({processes} job process{'es' if processes != 1 else ''})" if processes else ""
    if consumer.get("job"):
        # The job named is the window's oldest: its age, not the last round's start.
        age = consumer.get("oldest_job_age") or consumer.get("job_age") or 0
        return f"busy {consumer['job']} for {int(age)} s{running}"
    if consumer.get("setting_up"):
        return f"setting up {consumer['setting_up']} for {int(consumer.get('setting_up_for') or 0)} s{running}"
    return str(consumer.get("state") or "idle") + running


def format_held(rows: Sequence[dict[str, Any]]) -> str:
    """The held queues: their jobs wait while the worker's setup raises; why, and the next try."""
    def next_try(row: dict[str, Any]) -> str:
        if row.get("trying_for") is not None:
            return f"trying for {int(row['trying_for'])} s"
        return f"in {int(row.get('next_try_in') or 0)} s"
    return table(["HELD QUEUE", "GROUP", "CONSUMERS", "TRIES", "NEXT TRY", "SETUP ERROR"],
                 [(r["queue"], r.get("group"), ",".join(str(p) for p in r.get("consumers") or []),
                   r.get("tries"), next_try(r), r.get("error")) for r in rows])


def format_paused(rows: Sequence[dict[str, Any]]) -> str:
    """The paused queues: their jobs could not start (given back, not failed); why, since when, until when."""
    return table(["PAUSED QUEUE", "GROUP", "CONSUMERS", "ERRNO", "PAUSED FOR", "PAUSE", "RESUMES IN", "ERROR"],
                 [(r["queue"], r.get("group"), ",".join(str(p) for p in r.get("consumers") or []), r.get("errno"),
                   f"{int(r.get('paused_for') or 0)} s", f"{r.get('pause')} s",
                   f"{int(r.get('resumes_in') or 0)} s", r.get("error")) for r in rows])


def format_queues(rows: Sequence[dict[str, Any]]) -> str:
    """The queues, then their failure queues' lengths in a table of their own:
    queues share a failure queue, and a count beside each of them read as
    that queue's failures (`failed list QUEUE` has those)."""
    return table(
        ["QUEUE", "READY", "DELAYED", "IN FLIGHT", "LATENCY", "FAILURE QUEUE"],
        [(r["queue"], r["ready"], r["delayed"], r["in_flight"], _latency(r.get("latency")), r["failure_queue"])
         for r in rows],
    ) + "\n\n" + table(["FAILURE QUEUE", "LENGTH"], _failure_lengths(rows))


def _latency(seconds: Optional[float]) -> str:
    """How long the queue's oldest ready job has waited: '-' when none waits."""
    if not seconds:
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else _duration(seconds)


def _failure_lengths(rows: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(failure queue, length) from the queue rows, by name."""
    return sorted({r["failure_queue"]: r["failed"] for r in rows if r.get("failure_queue")}.items())


def format_groups(groups: Sequence[dict[str, Any]]) -> str:
    """Each consumer group's processes within its bounds, and its last scaling change."""
    def last(change: Optional[dict[str, Any]]) -> str:
        if not change:
            return "-"
        when = time.strftime("%H:%M:%S", time.localtime(change.get("at", 0)))
        return f"{when} {change.get('from')} -> {change.get('to')} ({change.get('reason')})"
    return table(
        ["GROUP", "PROCESSES", "MIN..MAX", "AUTOSCALE", "LAST SCALING"],
        [(g["group"], f"{g['processes']}/{g['target']}", f"{g['min']}..{g['max']}",
          "on" if g.get("autoscale") else "off", last(g.get("last_scaling"))) for g in groups],
    )


def format_status(status: dict[str, Any]) -> str:
    master = status["master"]
    stopping = f", stopping ({master['stopping']})" if master.get("stopping") else ""
    lines = [
        f"master      pid {master.get('pid')}, up {_duration(master.get('uptime'))}{stopping}",
        f"config      {master.get('config')} (generation {master.get('generation')})",
        f"broker      {master.get('broker')}",
        "",
        table(
            ["PID", "GROUP", "QUEUES", "STATE", "DONE", "FAILED", "RESTARTS", "RSS MiB"],
            [(c.get("pid"), c.get("group"), ",".join(c.get("queues") or []), _consumer_state(c),
              c.get("done"), c.get("failed"), c.get("restarts"), c.get("rss_mib"))
             for c in status.get("consumers", [])]
            + [(None, r.get("group"), None, f"restarting in {r.get('in')} s", None, None, r.get("restarts"), None)
               for r in status.get("restarting", [])],
        ),
    ]
    if status.get("held"):
        lines += ["", format_held(status["held"])]
    if status.get("paused"):
        lines += ["", format_paused(status["paused"])]
    if status.get("groups"):
        lines += ["", format_groups(status["groups"])]
    if "queues" in status:
        lines += ["", format_queues(status["queues"])]
    scheduler = status.get("scheduler")
    if scheduler:
        lines += ["", table(["NEXT RUN", "SCHEDULE", "QUEUE", "BODY", "LAST JOB"],
                            [(e.get("next_run"), e.get("schedule"), e.get("queue"), json.dumps(e.get("body")),
                              e.get("last_job_id")) for e in scheduler.get("entries", [])])]
    return "\n".join(lines)


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--config and --socket, accepted before the command and after it
    (`disqontrolctl status --config P`, as `disqontrol addjob` takes it)."""
    parser.add_argument("--config", default=default,
                        help="disqontrol.yml (default: $DISQONTROL_CONFIG, ./disqontrol.yml, /etc/...)")
    parser.add_argument("--socket", default=default,
                        help="control socket (default: run_dir/disqontrol.sock of the config)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="disqontrolctl", description=__doc__.splitlines()[0],
                                     epilog=exitcodes.HELP)
    _global_options(parser, None)
    after = argparse.ArgumentParser(add_help=False)
    _global_options(after, argparse.SUPPRESS)  # unset after the command: the value before it stands
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", parents=[after], help="the master, its consumers and the queues")
    status.add_argument("--json", action="store_true")
    commands.add_parser("reload", parents=[after], help="reload the config like SIGHUP; exit 1 if refused")
    stop = commands.add_parser("stop", parents=[after], help="stop the master and wait until it is gone")
    stop.add_argument("--fast", action="store_true", help="kill the consumers (their jobs come back)")
    stop.add_argument("--timeout", type=float, default=None, help="give up waiting after S seconds (exit 1)")
    metrics_cmd = commands.add_parser("metrics", parents=[after], help="the status in the Prometheus text format")
    metrics_cmd.add_argument("--output", metavar="PATH",
                             help="write it to PATH atomically (node_exporter's textfile collector)")
    queues = commands.add_parser("queues", parents=[after], help="queue names with their lengths")
    queues.add_argument("--json", action="store_true")
    ctl_failed_cli.add_parser(commands, after)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    ctl = Ctl(args)
    handler = {"status": ctl.status, "reload": ctl.reload, "stop": ctl.stop, "metrics": ctl.metrics,
               "queues": ctl.queues, "failed": ctl.failed}[args.command]
    try:
        return guarded(PROG, handler)
    finally:
        ctl.close()


if __name__ == "__main__":
    sys.exit(main())
