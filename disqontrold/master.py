"""The pre-fork master (gunicorn arbiter style, one thread).

Signal handlers only record the signal; the loop (a ``selectors`` selector
shared with plug-ins such as the control socket and the scheduler) dispatches
``handle_<signal>``, reaps, restarts and enforces deadlines. Plug-ins use
``register`` / ``add_timer`` and the ``on_ready`` / ``on_stop`` hooks, and the
control socket calls ``status`` / ``request_reload`` / ``request_stop``.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

from disqontrol_client.config import Config
from disqontrol_client.errors import ConfigError, WorkerLoadError
from disqontrol_client.logfmt import log_event, redact_url
from disqontrold import broker_check
from disqontrold import reload as reloading
from disqontrold.children import EXIT_OK, become_subreaper, describe_exit, fork_consumer
from disqontrold.log import reopen_logs
from disqontrold.master_status import master_status
from disqontrold.orphans import OrphanedJobs
from disqontrold.plugin_loop import PluginLoop
from disqontrold.queue_tally import QueueTotals
from disqontrold.proctitle import master_title, set_title
from disqontrold.scoreboard import Scoreboard
from disqontrold.signals import SignalQueue
from disqontrold.slots import Slot

logger = logging.getLogger(__name__)

LOOP_TICK = 1.0  # s: the longest the loop sleeps (deadlines, hung checks)
FAST_STOP_TIMEOUT = 5.0  # s between SIGQUIT and SIGKILL on a fast stop
# s without a heartbeat from an idle consumer (it beats after every reserve,
# at most RESERVE_TIMEOUT + the broker backoff cap apart) before it is killed
IDLE_STALL = 300.0
GRACEFUL, FAST = "graceful", "fast"


class Master(PluginLoop):
    def __init__(self, config: Config, bootstrap: Optional[Path] = None) -> None:
        super().__init__()
        self.config = config
        self.config_path = config.path
        self.bootstrap = bootstrap
        self.working_dir = reloading.working_dir()  # entered again at each reload (deploys)
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.generation = 1
        self.signals = SignalQueue()
        self.slots: list[Slot] = []  # the current generation's wanted slots
        self.children: dict[int, Slot] = {}  # every live consumer, retiring ones too
        self.targets: dict[str, int] = {}  # processes wanted per group (SIGTTIN/SIGTTOU, autoscaling)
        self.scaled: dict[str, dict[str, Any]] = {}  # the last change of each group's target
        self.stopping: Optional[str] = None
        self.on_ready: list[Callable[[], None]] = []
        self.on_stop: list[Callable[[], None]] = []
        # Plug-ins' parts of the control socket's status reply, by key (e.g. "scheduler").
        self.status_hooks: dict[str, Callable[[], Any]] = {}
        self.orphans = OrphanedJobs(self.pid)  # job processes of dead consumers, being ended
        self.retired_totals: dict[str, list[int]] = {}  # group -> [done, failed, restarts] of retired slots
        self.retired_queue_totals = QueueTotals()  # per-queue outcomes of retired slots
        self._orphan_timer = False

    # -- the loop -------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; the exit code of the daemon."""
        set_title(master_title(self.config_path))
        try:
            become_subreaper()  # a dead consumer's job processes become ours to end
        except OSError as exc:
            log_event(logger, "subreaper_failed", logging.WARNING, error=str(exc))
        self.signals.install()
        self.selector.register(self.signals, selectors.EVENT_READ, None)
        self._start_generation(self.config)
        log_event(logger, "master_started", config=self.config_path, broker=redact_url(self.config.broker),
                  consumers=len(self.slots))
        for hook in self.on_ready:
            hook()
        # Stopping, the loop also waits for a dead consumer's job processes it
        # ended (SIGTERM, then SIGKILL after their grace: bounded).
        while not (self.stopping and not self.children and not self.orphans):
            self._wait(self._next_wait())
            for signum in self.signals.pop_all():
                self._dispatch(signum)
            now = time.monotonic()
            self._run_timers(now, LOOP_TICK)
            self._maintain(now)
        for hook in self.on_stop:
            hook()
        log_event(logger, "master_stopped", mode=self.stopping)
        return 0

    def _wait(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                self.signals.drain_pipe()
            else:
                self._guarded(key.data, key.fileobj)

    def _next_wait(self) -> float:
        now = time.monotonic()
        deadlines = [now + LOOP_TICK] + self._timer_deadlines()
        deadlines += [s.next_start for s in self.slots if s.pid is None and not self.stopping]
        return max(0.0, min(deadlines) - now)

    def _dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name[3:].lower()
        if signum != signal.SIGCHLD:
            log_event(logger, "signal_received", signal=name)
        getattr(self, f"handle_{name}")()

    def _maintain(self, now: float) -> None:
        if not self.stopping:
            for slot in self.slots:
                if slot.pid is None and slot.next_start <= now:
                    self._spawn(slot)
        for pid, slot in list(self.children.items()):
            if slot.kill_at is not None and slot.kill_at <= now:
                log_event(logger, "consumer_kill", logging.WARNING, pid=pid, group=slot.group.name,
                          reason="stop deadline passed")
                self._kill(pid, signal.SIGKILL)
                slot.kill_at = None
            elif slot.scoreboard is not None and not slot.kill_reason:
                self._check_hung(pid, slot, now)

    def _check_hung(self, pid: int, slot: Slot, now: float) -> None:
        """Kill a consumer stuck on one job past its timeout + grace, still
        starting (or building a held queue's worker) past its group's
        start_timeout without a sign of life (a setup_environment() or an
        import that never returns), or idle
        without a heartbeat (a broker call that never returns)."""
        snap = slot.scoreboard.read()
        if snap.state == "busy" and now - snap.since > slot.hung_after:
            log_event(logger, "consumer_hung", logging.ERROR, pid=pid, group=slot.group.name,
                      job=snap.job, busy_s=round(now - snap.since, 1), limit_s=slot.hung_after)
        elif snap.state == "starting" and now - snap.heartbeat > slot.group.start_timeout:
            log_event(logger, "consumer_hung", logging.ERROR, pid=pid, group=slot.group.name,
                      starting_s=round(now - snap.since, 1), limit_s=slot.group.start_timeout)
            # Its replacement starts with the Python queues held, their setup
            # tried in a child: the group's other queues must not wait for it.
            slot.setup_hung = (f"the setup did not return within {slot.group.start_timeout:g} s "
                               f"(the group's start_timeout) at the consumer's start; killed")
        elif snap.state == "setting_up" and now - snap.heartbeat > slot.group.start_timeout:
            # a held queue's worker being built in the consumer, after a try of it worked
            log_event(logger, "consumer_hung", logging.ERROR, pid=pid, group=slot.group.name, queue=snap.job,
                      setting_up_s=round(now - snap.heartbeat, 1), limit_s=slot.group.start_timeout)
        elif snap.state == "idle" and now - snap.heartbeat > IDLE_STALL:
            log_event(logger, "consumer_hung", logging.ERROR, pid=pid, group=slot.group.name,
                      idle_without_heartbeat_s=round(now - snap.heartbeat, 1), limit_s=IDLE_STALL)
        else:
            if slot.setup_hung and snap.state in ("idle", "busy") and not slot.scoreboard.held():
                slot.setup_hung = ""  # every worker built: the next start builds them at once again
            return
        slot.kill_reason = "hung"
        self._kill(pid, signal.SIGKILL)

    # -- consumers ------------------------------------------------------
    def _start_generation(self, config: Config, previous: Optional[dict[str, int]] = None) -> None:
        """Fill the slots of ``config``'s groups. ``previous``: the process
        counts of the generation it replaces, kept for a group with the same
        queues (clamped to its new min..max) so a reload does not undo
        SIGTTIN / SIGTTOU; a new or changed group starts at min_processes."""
        previous = previous or {}
        self.targets = {
            group.name: min(max(previous.get(group.name, group.min_processes), group.min_processes),
                            group.max_processes)
            for group in config.consumers
        }
        hung = self._hung_setups()
        self.slots = [
            Slot(group, config, self.generation, setup_hung=hung.get(group.name, ""))
            for group in config.consumers
            for _ in range(self.targets[group.name])
        ]
        for slot in self.slots:
            self._spawn(slot)

    def _hung_setups(self) -> dict[str, str]:
        """Per group, why a start of it hung in a worker's setup (Slot.setup_hung).
        The group's new processes (a reload's, the autoscaler's) start with
        its Python queues held too: each used to hang a start_timeout first,
        running nothing, and a reload retires the old ones at once."""
        return {slot.group.name: slot.setup_hung for slot in self.slots if slot.setup_hung}

    def _spawn(self, slot: Slot) -> None:
        slot.scoreboard = Scoreboard(slot.group.queues)
        slot.kill_reason = ""
        try:
            pid = fork_consumer(self.pid, slot.config, slot.group, self.bootstrap, slot.scoreboard,
                                self._forget_in_child, slot.setup_hung)
        except OSError as exc:  # EAGAIN / ENOMEM: try again later, like a crash
            log_event(logger, "fork_failed", logging.ERROR, group=slot.group.name, error=str(exc))
            slot.started_at = time.monotonic()
            slot.ended(slot.started_at, crashed=True, how=f"fork failed: {exc}")
            return
        slot.pid = pid
        slot.started_at = time.monotonic()
        self.children[pid] = slot
        log_event(logger, "consumer_started", pid=pid, group=slot.group.name, generation=slot.generation)

    def _forget_in_child(self) -> None:
        """In a new consumer: drop the master's signals, selector and plug-in files."""
        self.signals.close()
        self._forget_plugins_in_child()

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # already gone; the reaper books it

    def _retire(self, slot: Slot) -> None:
        """Stop a slot's process gracefully; it is not replaced."""
        slot.retiring = True
        if slot.pid is not None:
            self._kill(slot.pid, signal.SIGTERM)
            slot.kill_at = time.monotonic() + slot.graceful_timeout
        else:  # waiting for a restart: no process to reap later
            self._keep_totals(slot)

    def _reap(self) -> None:
        reaped: list[int] = []
        left_running: list[tuple[str, list[int]]] = []  # a dead consumer's job processes
        while True:
            try:  # look first (WNOWAIT), reap second: see OrphanedJobs.before_reap
                waiting = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if waiting is None:
                break
            self.orphans.before_reap(waiting.si_pid)
            try:
                pid, status = os.waitpid(waiting.si_pid, 0)
            except ChildProcessError:  # reaped in between by a plug-in's own waitpid
                continue
            reaped.append(pid)
            slot = self.children.pop(pid, None)
            if slot is None:  # not a consumer (an adopted job process, a plug-in's child): reaped quietly
                self.orphans.reaped(pid)
                continue
            if slot.scoreboard is not None:
                left_running.append((slot.group.name, slot.scoreboard.job_pids()))
            self._child_ended(pid, slot, status)
        for group, pids in left_running:
            if self.orphans.end(pids, group, skip=[*reaped, *self.children]) and not self._orphan_timer:
                self._orphan_timer = True
                self.add_timer(self._kill_orphans)

    def _kill_orphans(self) -> Optional[float]:
        """The timer that SIGKILLs ended job processes past their grace."""
        following = self.orphans.tick()
        self._orphan_timer = following is not None
        return following

    def _child_ended(self, pid: int, slot: Slot, status: int) -> None:
        code, _, how = describe_exit(status)
        planned = slot.retiring or self.stopping is not None or bool(slot.kill_reason)
        crashed = not planned and code != EXIT_OK
        log_event(logger, "consumer_exited", logging.WARNING if crashed else logging.INFO, pid=pid,
                  group=slot.group.name, status=how, **({"reason": slot.kill_reason} if slot.kill_reason else {}))
        slot.ended(time.monotonic(), crashed=crashed, how=how)
        if not (slot.retiring or self.stopping):
            slot.restarts += 1
        if slot.retiring:
            self._keep_totals(slot)

    def _keep_totals(self, slot: Slot) -> None:
        """A retired slot goes; its counts stay in its group's totals (status, metrics)."""
        totals = self.retired_totals.setdefault(slot.group.name, [0, 0, 0])
        totals[0] += slot.done_before
        totals[1] += slot.failed_before
        totals[2] += slot.restarts
        self.retired_queue_totals.add(slot.queues_before.by_queue)

    # -- signal handlers (run from the loop, not in signal context) ------
    def handle_chld(self) -> None:
        self._reap()

    def handle_term(self) -> None:
        self.request_stop(fast=False)

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.request_stop(fast=True)

    def handle_hup(self) -> None:
        self.request_reload()

    def handle_usr1(self) -> None:
        reopen_logs()
        for pid in self.children:
            self._kill(pid, signal.SIGUSR1)
        log_event(logger, "logs_reopened")

    def handle_ttin(self) -> None:
        self._scale(+1)

    def handle_ttou(self) -> None:
        self._scale(-1)

    def _scale(self, step: int) -> None:
        if self.stopping:
            return
        for group in self.config.consumers:
            wanted = self.targets[group.name] + step
            if not self.set_processes(group.name, wanted, f"SIG{'TTIN' if step > 0 else 'TTOU'}"):
                log_event(logger, "consumers_scale_refused", group=group.name, processes=self.targets[group.name],
                          wanted=wanted, bounds=f"{group.min_processes}..{group.max_processes}")

    def set_processes(self, group_name: str, wanted: int, reason: str) -> bool:
        """Run ``wanted`` processes for the group (within its min..max): new
        slots are spawned, removed ones retire gracefully. False if refused."""
        group = next((g for g in self.config.consumers if g.name == group_name), None)
        if self.stopping or group is None or not group.min_processes <= wanted <= group.max_processes:
            return False
        before = self.targets[group.name]
        for _ in range(wanted, before):
            slot = self._slot_to_remove(group.name)
            self.slots.remove(slot)
            self._retire(slot)
        for _ in range(before, wanted):
            slot = Slot(group, self.config, self.generation,
                        setup_hung=self._hung_setups().get(group.name, ""))
            self.slots.append(slot)
            self._spawn(slot)
        self.targets[group.name] = wanted
        if wanted != before:
            self.scaled[group.name] = {"from": before, "to": wanted, "reason": reason, "at": time.time()}
            log_event(logger, "consumers_scaled", group=group.name, processes=wanted, reason=reason)
        return True

    def _slot_to_remove(self, group_name: str) -> Slot:
        """The group's newest idle slot (it retires at once), else its newest."""
        slots = [s for s in self.slots if s.group.name == group_name]
        idle = [s for s in slots if s.scoreboard is None or s.scoreboard.read().state != "busy"]
        return (idle or slots)[-1]

    # -- the operations API (control socket) ----------------------------
    def request_stop(self, fast: bool) -> None:
        """Stop every consumer (fast: SIGQUIT, jobs in hand come back by lease
        expiry; graceful: SIGTERM, they finish them) and exit when all are gone."""
        mode = FAST if fast else GRACEFUL
        if self.stopping == FAST or self.stopping == mode:
            return
        self.stopping = mode
        now = time.monotonic()
        for pid, slot in self.children.items():
            self._kill(pid, signal.SIGQUIT if fast else signal.SIGTERM)
            slot.kill_at = now + (FAST_STOP_TIMEOUT if fast else slot.graceful_timeout)
        log_event(logger, "master_stopping", mode=mode, consumers=len(self.children))

    def request_reload(self) -> tuple[bool, str]:
        """Re-read and check the config; (taken?, why). Refused: nothing changes."""
        if self.stopping or self.config_path is None:
            # Said in the log too: a SIGHUP has no one to print the answer to.
            reason = ("the master is stopping" if self.stopping
                      else "the config was not read from a file; nothing to reload")
            log_event(logger, "reload_refused", logging.WARNING, reason=reason)
            return False, reason
        reloading.reenter(self.working_dir)
        try:
            config = reloading.load_checked(self.config_path, self.bootstrap)
        except (ConfigError, WorkerLoadError) as exc:
            log_event(logger, "reload_refused", logging.ERROR, config=self.config_path, reason=str(exc))
            return False, f"refused: {exc}"
        refusal = None if config.broker == self.config.broker else broker_check.refusal_in_child(config.broker)
        if refusal:
            log_event(logger, "reload_refused", logging.ERROR, config=self.config_path, reason=refusal)
            return False, f"refused: {refusal}"
        old = self.slots
        self.config = config
        self.generation += 1
        self._start_generation(config, previous=self.targets)
        for slot in old:
            self._retire(slot)
        log_event(logger, "reload_taken", config=self.config_path, generation=self.generation,
                  consumers=len(self.slots), retiring=len(old))
        return True, f"taken: generation {self.generation}, {len(self.slots)} consumers"

    def status(self) -> dict[str, Any]:
        """What ``disqontrolctl status`` shows of the master and its consumers."""
        return master_status(self)
