"""The consumer's job window against a real daemon: a long command or
isolated job does not hold back the rest of its queue, a job's process dies
with its killed consumer (a process a finished job leaves behind on purpose
does not), a graceful stop waits for it, and the recycling limit bounds what
a consumer reserves."""
from __future__ import annotations

import dataclasses
import os
import re
import signal
from pathlib import Path

import psutil
import pytest

from disqontrol_client.config import load_config
from disqontrol_client.job import Job
from disqontrol_client.submit import new_job_for
from tests.integration.ctl_support import ctl, ctl_json
from tests.support.daemon import Daemon, command_worker, python_worker, running
from tests.support.procs import wait_for

BATCH = 4
QUICK_JOBS = 3 * BATCH  # more than a whole batch behind the long job
HOLD_TIMEOUT = 600  # s: the long job is never killed by its timeout while the test runs
# s: the lease of a job whose consumer the test kills. It must outlast the
# steps before the kill (two disqontrolctl runs took 5 s on a loaded machine),
# or the job comes back to the same consumer, which runs it twice; past the
# kill, the job comes back when it runs out.
KILLED_LEASE = 10.0
# A body with "hold" creates ./held, then runs until the file ./release
# exists (the daemon's cwd is the test's tmp_path); every job records
# "<body> <time>" in $DQ_OUT.
HOLD_SH = """
body="${2#--body=}"
case "$body" in
  *hold*) : > held; while [ ! -e release ]; do sleep 0.05; done ;;
esac
printf '%s %s\\n' "$body" "$(date +%s.%N)" >> "$DQ_OUT"
"""


# The same for an isolated Python worker (the daemon's cwd is on its path).
HOLD_PY = """
import json, os, time

def hold(job):
    if job.body == "hold":
        open("held", "w").close()
        while not os.path.exists("release"):
            time.sleep(0.05)
    with open(os.environ["DQ_OUT"], "a") as out:
        out.write(f"{json.dumps(job.body)} {time.time():.4f}\\n")
"""


def hold_daemon(tmp_path: Path, kind: str = "command", **consumer: object) -> Daemon:
    (tmp_path / "hold.sh").write_text(HOLD_SH)
    (tmp_path / "holdworkers.py").write_text(HOLD_PY)
    worker = ({"type": "command", "command": f"/bin/sh {tmp_path / 'hold.sh'}"} if kind == "command"
              else {"type": "isolated_python_worker", "name": "holdworkers:hold"})
    return Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {"work": {"worker": worker, "job_process_timeout": HOLD_TIMEOUT}},
                  consumer_defaults={"min_processes": 1, "max_processes": 1, "job_batch": BATCH, **consumer})


@pytest.mark.parametrize("kind", ["command", "isolated"])
def test_a_long_job_does_not_hold_back_the_rest_of_its_queue(tmp_path, kind):
    # Given one consumer (job_batch 4) running a job that waits for a file
    daemon = hold_daemon(tmp_path, kind).start()
    try:
        daemon.add("work", ["hold"])
        wait_for(lambda: any(" busy " in daemon.title(p) for p in daemon.consumer_pids()),
                 timeout=30, message="a busy consumer")

        # When three batches' worth of quick jobs arrive behind it
        daemon.add("work", range(QUICK_JOBS))

        # Then they all run while the long job still runs
        runs = daemon.wait_runs(QUICK_JOBS, timeout=60)
        assert sorted(int(body) for body, _ in runs) == list(range(QUICK_JOBS))
        # and are acked meanwhile (by a reserve within REFILL_INTERVAL)
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 1, timeout=30,
                 message="only the long job leased")
        assert daemon.broker.stats(["work"])[0].ready == 0

        # And the long job ends once released, acked like the others
        (tmp_path / "release").touch()
        assert daemon.wait_runs(QUICK_JOBS + 1, timeout=60)[-1][0] == '"hold"'
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 0, timeout=30,
                 message="every job acked")
    finally:
        (tmp_path / "release").touch()  # a held job, and any orphan of a failed test, ends
        daemon.stop()


def test_sigterm_waits_for_the_running_job_and_loses_nothing(tmp_path):
    # Given a consumer whose window holds a long job, the quick ones done
    daemon = hold_daemon(tmp_path).start()
    try:
        daemon.add("work", ["hold"] + list(range(BATCH)))
        daemon.wait_runs(BATCH, timeout=60)
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 1, timeout=30,
                 message="only the long job leased")

        # When the master gets SIGTERM
        daemon.signal(signal.SIGTERM)

        # Then the stopping daemon waits for the long job, which stays leased
        daemon.wait_event("master_stopping")
        assert daemon.proc.poll() is None and daemon.broker.stats(["work"])[0].in_flight == 1
        # and once it ends the daemon exits 0, that job run once and acked
        (tmp_path / "release").touch()
        assert daemon.wait_exit(60) == 0
        assert [body for body, _ in daemon.runs()].count('"hold"') == 1 and len(daemon.runs()) == BATCH + 1
        [stats] = daemon.broker.stats(["work"])
        assert stats.ready + stats.in_flight == 0
        assert not daemon.events("consumer_crashed")
    finally:
        (tmp_path / "release").touch()  # a held job, and any orphan of a failed test, ends
        daemon.stop()


def test_a_consumer_reserves_no_more_than_its_recycling_limit_allows(tmp_path):
    # Given consumers recycled after 3 jobs, with a batch of 50
    jobs = 7
    daemon = hold_daemon(tmp_path, max_jobs_per_process=3, job_batch=50).start()
    try:
        # When 7 quick jobs arrive
        daemon.add("work", range(jobs))

        # Then every job runs once, 3 per consumer: none reserves more than
        # it may run (with the old whole batch the first one ran all 7)
        runs = daemon.wait_runs(jobs, timeout=60)
        assert sorted(int(body) for body, _ in runs) == list(range(jobs))
        recycled = daemon.wait_event("consumer_recycled", 2)
        assert [re.search(r" jobs=(\d+)", line).group(1) for line in recycled[:2]] == ["3", "3"]
    finally:
        (tmp_path / "release").touch()  # a held job, and any orphan of a failed test, ends
        daemon.stop()


def test_a_group_mixing_command_and_inline_queues_runs_every_job_once(tmp_path):
    # Given one consumer of a command queue and an inline queue (job_batch 4)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "cmd": {"worker": command_worker(tmp_path)},
        "inline": {"worker": python_worker()},
    }, consumers=[{"queues": ["cmd", "inline"], "min_processes": 1, "max_processes": 1, "job_batch": BATCH}])
    daemon.start()
    try:
        # When jobs of both arrive, interleaved in the batches it reserves
        jobs = 5 * BATCH
        daemon.add("cmd", range(0, jobs, 2))
        daemon.add("inline", range(1, jobs, 2))

        # Then each runs exactly once, none fails, and none is left leased
        runs = daemon.wait_runs(jobs, timeout=60)
        assert sorted(int(body) for body, _ in runs) == list(range(jobs))
        wait_for(lambda: sum(s.in_flight + s.ready for s in daemon.broker.stats(["cmd", "inline"])) == 0,
                 timeout=30, message="both queues drained and acked")
        assert not daemon.events("job_failed") and not daemon.events("consumer_crashed")
    finally:
        (tmp_path / "release").touch()  # a held job, and any orphan of a failed test, ends
        daemon.stop()


def test_an_inline_job_runs_while_a_long_command_job_of_its_group_holds(tmp_path):
    # Given one consumer of a command queue and an inline queue, running a long command job
    (tmp_path / "hold.sh").write_text(HOLD_SH)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "cmd": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'hold.sh'}"},
                "job_process_timeout": HOLD_TIMEOUT},
        "inline": {"worker": python_worker()},
    }, consumers=[{"queues": ["cmd", "inline"], "min_processes": 1, "max_processes": 1, "job_batch": BATCH}])
    daemon.start()
    try:
        daemon.add("cmd", ["hold"])
        wait_for(lambda: (tmp_path / "held").exists(), timeout=30, message="the command job running")

        # When an inline job arrives
        daemon.add("inline", ["quick"])

        # Then it runs while the command job still holds, not after it
        assert [body for body, _ in daemon.wait_runs(1, timeout=30)] == ["quick"]  # (the inline worker records the body)
        assert not (tmp_path / "release").exists()
        (tmp_path / "release").touch()
        assert sorted(body for body, _ in daemon.wait_runs(2, timeout=30)) == ['"hold"', "quick"]  # (the command one its JSON)
    finally:
        (tmp_path / "release").touch()
        daemon.stop()


# A command job that reads its body on stdin (one over 64 KiB) and records its size.
STDIN_SH = """
body="${2#--body=}"
if [ "$body" = "-" ]; then size=$(wc -c); else size=${#body}; fi
printf 'cmd-%s %s\\n' "$size" "$(date +%s.%N)" >> "$DQ_OUT"
"""
INLINE_RUNS = 3
INLINE_SLEEP = 1.0  # s each: the command job must not wait for all of them


def test_a_window_job_is_tended_between_the_inline_jobs_of_its_group(tmp_path):
    # Given one consumer of a command queue and an inline queue
    (tmp_path / "stdin.sh").write_text(STDIN_SH)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db", {
        "cmd": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'stdin.sh'}"}},
        "inline": {"worker": python_worker()},
    }, consumers=[{"queues": ["cmd", "inline"], "min_processes": 1, "max_processes": 1,
                   "job_batch": 1 + INLINE_RUNS}])
    daemon.start()
    try:
        # When one reserve brings a command job whose body goes on stdin (over
        # a pipe's 64 KiB) and slow inline jobs (all due at the same instant)
        body = "x" * (100 * 1024)
        config = load_config(daemon.config_path)
        jobs = [("cmd", body)] + [("inline", {"n": n, "sleep": INLINE_SLEEP}) for n in range(INLINE_RUNS)]
        daemon.broker.add_many([dataclasses.replace(new_job_for(Job(b, q), config.queue(q)), delay=1.0)
                                for q, b in jobs])  # one insert: all fall due at once

        # Then the command job gets its whole body and ends between two inline
        # jobs, not after the last one (its stdin is fed between them)
        runs = daemon.wait_runs(1 + INLINE_RUNS, timeout=60)
        [(_, command_done)] = [(b, t) for b, t in runs if b.startswith("cmd-")]
        assert [b for b, _ in runs if b.startswith("cmd-")] == [f"cmd-{len(body) + 2}"]  # the JSON string
        assert command_done < max(t for b, t in runs if not b.startswith("cmd-"))
    finally:
        daemon.stop()


@pytest.mark.parametrize("kind", ["command", "isolated"])
def test_a_job_process_dies_with_its_killed_consumer_and_the_job_runs_once_again(tmp_path, kind):
    # Given a job holding (a short lease, so it comes back soon)
    daemon = hold_daemon(tmp_path, kind).start()
    try:
        daemon.add("work", ["hold"], lease=KILLED_LEASE)
        [consumer] = wait_for(lambda: [p for p in daemon.consumer_pids() if " busy " in daemon.title(p)],
                              timeout=30, message="a busy consumer")
        wait_for(lambda: (tmp_path / "held").exists(), timeout=30, message="the job running")
        [job_process] = psutil.Process(consumer).children()
        # (noted in the consumer's scoreboard: a process seen while the consumer
        # still spawns it is not, and would outlive a consumer killed at that instant)
        wait_for(lambda: ctl_json(daemon, "status")["consumers"][0]["job_pids"] == [job_process.pid],
                 timeout=30, message="the job's process in the status")
        assert "(1 job process)" in ctl(daemon, "status").stdout  # the table says so too
        assert not daemon.events("job_redelivered"), "the lease ran out before the kill: raise KILLED_LEASE"

        # When its consumer is killed
        os.kill(consumer, signal.SIGKILL)

        # Then the job's process dies with it (no orphan running the job on):
        # an isolated one by its parent-death signal, a command one ended by the master
        wait_for(lambda: not running(job_process.pid), timeout=30, message="the job process gone")
        if kind == "command":
            [ended] = daemon.wait_event("orphaned_job_ended")
            assert f" pid={job_process.pid} " in ended and "signal=SIGTERM" in ended

        # And the job comes back by lease expiry to a new consumer, and runs once
        wait_for(lambda: [p for p in daemon.consumer_pids() if p != consumer and " busy " in daemon.title(p)],
                 timeout=60, message="the job redelivered to the new consumer")
        (tmp_path / "release").touch()
        assert [body for body, _ in daemon.wait_runs(1, timeout=60)] == ['"hold"']
        wait_for(lambda: daemon.broker.stats(["work"])[0].in_flight == 0, timeout=30, message="the job acked")
        assert len(daemon.runs()) == 1
    finally:
        (tmp_path / "release").touch()  # a held job, and any orphan of a failed test, ends
        daemon.stop()


def script_daemon(tmp_path: Path, script: str) -> Daemon:
    """One consumer running ``script`` (sh) as the command of queue "work"."""
    (tmp_path / "job.sh").write_text(script)
    return Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                  {"work": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'job.sh'}"},
                            "job_process_timeout": HOLD_TIMEOUT}},
                  consumer_defaults={"min_processes": 1, "max_processes": 1, "job_batch": BATCH})


# A command job that ignores SIGTERM (its sleeps inherit that): only SIGKILL ends it.
STUBBORN_SH = """
trap '' TERM
: > held
while [ ! -e release ]; do sleep 0.05; done
"""


@pytest.mark.timeout(120)
def test_a_fast_stop_ends_a_job_that_ignores_sigterm_before_the_master_exits(tmp_path):
    # Given a command job that ignores SIGTERM, running
    daemon = script_daemon(tmp_path, STUBBORN_SH).start()
    try:
        daemon.add("work", ["stubborn"])
        wait_for(lambda: (tmp_path / "held").exists(), timeout=30, message="the job running")
        [job_pid] = wait_for(lambda: ctl_json(daemon, "status")["consumers"][0]["job_pids"], timeout=30,
                             message="the job's process in the status")

        # When the master is told to stop fast (its consumer leaves the job behind)
        daemon.signal(signal.SIGQUIT)

        # Then the master gets SIGKILL to the job after its grace, and only then exits
        assert daemon.proc.wait(timeout=60) == 0
        assert not running(job_pid)
        [ended] = daemon.events("orphaned_job_ended")
        [killed] = daemon.events("orphaned_job_killed")
        assert f" pid={job_pid} " in ended and f" pid={job_pid} " in killed
    finally:
        (tmp_path / "release").touch()
        daemon.stop()


# A command job whose helper (same process group) ignores SIGTERM while the
# job's own process waits for it, and dies of the SIGTERM.
STUBBORN_HELPER_SH = """
(trap '' TERM; : > held; while [ ! -e release ]; do sleep 0.05; done) &
echo $! > helper.pid
wait
"""


@pytest.mark.timeout(120)
def test_an_abandoned_job_s_helper_that_ignores_sigterm_dies_with_the_job(tmp_path):
    # Given a running command job whose helper process ignores SIGTERM
    daemon = script_daemon(tmp_path, STUBBORN_HELPER_SH).start()
    try:
        daemon.add("work", ["helped"])
        wait_for(lambda: (tmp_path / "held").exists() and (tmp_path / "helper.pid").read_text().strip(),
                 timeout=30, message="the job and its helper running")
        helper = int((tmp_path / "helper.pid").read_text())
        wait_for(lambda: ctl_json(daemon, "status")["consumers"][0]["job_pids"], timeout=30,
                 message="the job's process in the status")

        # When the master is told to stop fast: the job's process dies of the
        # master's SIGTERM, its helper does not
        daemon.signal(signal.SIGQUIT)
        assert daemon.proc.wait(timeout=60) == 0

        # Then the helper was killed with its job's group (as on a job timeout),
        # not left running the job on after the master is gone
        wait_for(lambda: not running(helper), timeout=10, message="the helper gone")
    finally:
        (tmp_path / "release").touch()
        daemon.stop()


# A job that leaves a process behind on purpose (a daemon it started) and
# ends; that process runs until the file ./bg-stop exists.
BACKGROUND_SH = """
(while [ ! -e bg-stop ]; do sleep 0.05; done) > /dev/null 2>&1 &
echo $! > bg.pid
printf '%s %s\\n' "${2#--body=}" "$(date +%s.%N)" >> "$DQ_OUT"
"""


def test_a_process_a_finished_job_left_behind_runs_on_and_is_reaped_when_it_ends(tmp_path):
    # Given a job that started a background process and ended
    (tmp_path / "background.sh").write_text(BACKGROUND_SH)
    daemon = Daemon(tmp_path, f"sqlite://{tmp_path}/jobs.db",
                    {"work": {"worker": {"type": "command", "command": f"/bin/sh {tmp_path / 'background.sh'}"}}},
                    consumer_defaults={"min_processes": 1, "max_processes": 1, "job_batch": BATCH}).start()
    background = 0
    try:
        daemon.add("work", ["bg"])
        daemon.wait_runs(1, timeout=30)
        background = int(wait_for(lambda: (tmp_path / "bg.pid").exists() and (tmp_path / "bg.pid").read_text().strip(),
                                  timeout=30, message="the background pid"))
        # adopted by the master (not init), as the consumer's orphans are
        wait_for(lambda: psutil.Process(background).ppid() == daemon.pid, timeout=30, message="adopted by the master")
        # and the ended job is out of its consumer's notes
        wait_for(lambda: ctl_json(daemon, "status")["consumers"][0]["job_pids"] == [], timeout=30,
                 message="no job process noted")

        # When its consumer is killed, and replaced
        [consumer] = daemon.consumer_pids()
        os.kill(consumer, signal.SIGKILL)
        wait_for(lambda: [p for p in daemon.consumer_pids() if p != consumer], timeout=30, message="a new consumer")

        # Then the background process still runs: it was no job in hand
        assert running(background)
        assert not daemon.events("orphaned_job_ended")
        # and once it ends, the master reaps it (no zombie left)
        (tmp_path / "bg-stop").touch()
        wait_for(lambda: not psutil.pid_exists(background), timeout=30, message="the background process reaped")
    finally:
        (tmp_path / "bg-stop").touch()
        daemon.stop()
