"""Forking a consumer and decoding how it ended.

The child asks the kernel to SIGKILL it when the master dies
(PR_SET_PDEATHSIG), then checks it was not orphaned before that call; it
never returns into the master's code: it always leaves with os._exit.

The master's signals are blocked across the fork and stay blocked in the
child until the consumer has installed its own handlers (which unblock
them): a SIGTERM the master sends a consumer it has just forked (a stop right
after a reload or a SIGTTIN) used to land in the master's handler copied
into the child and be lost there, and that consumer ran on, taking jobs,
until the stop deadline SIGKILLed it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import traceback
from pathlib import Path
from typing import Callable, Optional

from disqontrol_client.config import Config, ConsumerConfig
from disqontrol_client.logfmt import log_event
from disqontrold.scoreboard import Scoreboard
from disqontrold.signals import MASTER_SIGNALS

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_OK = 0  # stopped as asked, or recycled: the master replaces it at once
EXIT_BOOT_FAILED = 4  # could not build its workers: restarted with backoff
EXIT_FAST = 5  # SIGQUIT: fast stop, jobs in hand come back by lease expiry
EXIT_CRASHED = 70  # an exception escaped the consumer loop (EX_SOFTWARE)
EXIT_ORPHANED = 71  # the master died between fork and PR_SET_PDEATHSIG


_libc: Optional[ctypes.CDLL] = None


def _prctl(option: int, value: int, name: str) -> None:
    global _libc
    if _libc is None:
        # The process's own symbols (libc's among them): ctypes.util.find_library
        # would import subprocess and shutil into the master, and every consumer.
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({name}) failed: {os.strerror(errno)}")


def set_parent_death_signal(signum: int = signal.SIGKILL) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies."""
    _prctl(PR_SET_PDEATHSIG, int(signum), "PR_SET_PDEATHSIG")


def become_subreaper() -> None:
    """Adopt our descendants orphaned by their parent's death (a consumer's
    job processes), instead of init: see disqontrold/orphans.py."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def fork_consumer(
    master_pid: int,
    config: Config,
    group: ConsumerConfig,
    bootstrap: Optional[Path],
    scoreboard: Scoreboard,
    forget_master_state: Callable[[], None],
    hold_python: str = "",
) -> int:
    """Fork one consumer; returns its pid in the master, never returns in the child."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    code = EXIT_CRASHED
    try:
        set_parent_death_signal()
        if os.getppid() != master_pid:
            os._exit(EXIT_ORPHANED)
        forget_master_state()
        random.seed()  # retry jitter must differ between consumers
        from disqontrold.consumer import Consumer  # noqa: PLC0415

        code = Consumer(config, group, bootstrap, scoreboard, hold_python).run()
    except BaseException as exc:  # noqa: BLE001 -- the child must end here, whatever happened
        log_event(logger, "consumer_crashed", logging.ERROR, group=group.name,
                  error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    finally:
        logging.shutdown()
        os._exit(code)
    return 0  # unreachable


def describe_exit(status: int) -> tuple[Optional[int], Optional[int], str]:
    """(exit code, signal, words) of a waitpid status."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return None, signum, f"killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    return code, None, f"exit code {code}"
