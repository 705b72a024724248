"""A signal the master sends a consumer it has only just forked (a stop
right after a reload or a SIGTTIN) reaches the consumer's own handler: it
was lost in the master's handler copied into the child, and that consumer
ran on until the stop deadline SIGKILLed it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import yaml

# A stand-in master, in its own process: the master's signal queue installed,
# one real consumer forked by children.fork_consumer, SIGTERM sent at once.
# The child is held 0.5 s at its first step (before it drops the master's
# handlers), so the signal always lands in the window a loaded machine hits
# by chance; then the consumer must stop by itself, and quickly.
MASTER = textwrap.dedent('''
    import os, signal, sys, time
    from disqontrol_client.config import load_config
    from disqontrold import children
    from disqontrold.scoreboard import Scoreboard
    from disqontrold.signals import SignalQueue

    HOLD = 0.5  # s the child waits before it drops the master's handlers
    DEADLINE = 15.0  # s: a consumer that missed its SIGTERM runs until killed

    real_pdeathsig = children.set_parent_death_signal

    def slow_start(*args):
        time.sleep(HOLD)  # only the child calls it
        real_pdeathsig(*args)

    children.set_parent_death_signal = slow_start
    config = load_config(sys.argv[1])
    queue = SignalQueue()
    queue.install()
    pid = children.fork_consumer(os.getpid(), config, config.consumers[0], None, Scoreboard(), queue.close)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print(children.describe_exit(status)[2])
            sys.exit(0)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print("still running")
''')


def test_a_sigterm_sent_right_after_the_fork_stops_the_consumer(tmp_path):
    # Given a config with one command queue on sqlite
    config = tmp_path / "disqontrol.yml"
    config.write_text(yaml.safe_dump({"disqontrol": {
        "broker": f"sqlite://{tmp_path}/jobs.db", "log_dir": "log", "run_dir": "run",
        "queues": {"work": {"worker": {"type": "command", "command": "/bin/true"}}},
    }}))

    # When a master forks a consumer and sends it SIGTERM before it could set up
    done = subprocess.run([sys.executable, "-c", MASTER, str(config)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)

    # Then the consumer stops as asked (a graceful exit 0), not after being killed
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "exit code 0", done.stdout + done.stderr[-2000:]
