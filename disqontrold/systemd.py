"""sd_notify without libsystemd: tell systemd (Type=notify) how the master is.

The protocol is one datagram of ``KEY=value`` lines to the unix socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). When the
variable is unset the master is not run by systemd and every call is a no-op.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any, Iterator, Optional

from disqontrol_client.logfmt import log_event
from disqontrold.broker_check import CHECK_TIMEOUT
from disqontrold.reload import LOAD_TIMEOUT

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
USEC_PER_SECOND = 1_000_000
# systemd's advice: ping at half the watchdog interval so one late loop turn
# does not get the service killed.
WATCHDOG_FRACTION = 0.5


def notify(state: str, environ: Optional[dict[str, str]] = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=running"``); True if it was sent.

    A failure to send is logged, not raised: the master must keep running jobs
    even if systemd's socket went away."""
    address = (environ if environ is not None else os.environ).get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log_event(log, "sd_notify_failed", logging.WARNING, state=state, error=exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """The consumers are up (READY=1), optionally with a STATUS= line."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> bool:
    """A reload started; ``ready()`` must follow when it is over."""
    return notify("RELOADING=1")


def stopping() -> bool:
    """A stop started: systemd waits TimeoutStopSec from now."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A free-form line that ``systemctl status`` shows."""
    return notify(f"STATUS={text}")


# A start step that may outlast TimeoutStartSec (the master's upgrade of the
# broker's data: minutes for a sqlite file of several GB) keeps systemd
# waiting with EXTEND_TIMEOUT_USEC (systemd >= 236); otherwise systemd killed
# it half-way, the upgrade rolled back, and Restart= began it again, forever.
EXTEND_FIRST = 2.0  # s a step runs before the first note (most take milliseconds)
EXTEND_EVERY = 10.0  # s between two notes
EXTEND_BY = 3 * EXTEND_EVERY  # s each note grants: one late note does not end the start
EXTEND_LIMIT = 3600.0  # s after which a step no longer holds systemd off (a hung one is killed)


@contextlib.contextmanager
def _sent_while(message: str, first: float, every: float, limit: float) -> Iterator[None]:
    """Send ``message`` after ``first`` s, then every ``every`` s, for at
    most ``limit`` s, while the body runs. A thread does it: the body blocks
    the main thread (sqlite's calls and a read of a child's pipe let the GIL
    go)."""
    done = threading.Event()

    def send() -> None:
        give_up = time.monotonic() + limit
        pause = first
        while not done.wait(pause) and time.monotonic() < give_up:
            notify(message)
            pause = every

    thread = threading.Thread(target=send, name="sd-notify-while", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def start_extended(why: str) -> Iterator[None]:
    """Around a start step that may be long: from EXTEND_FIRST on, tell
    systemd every EXTEND_EVERY s to wait EXTEND_BY s more, with ``why`` as
    the STATUS= line."""
    if not os.environ.get(NOTIFY_SOCKET_ENV):
        yield
        return
    with _sent_while(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * USEC_PER_SECOND)}\nSTATUS={why}",
                     EXTEND_FIRST, EXTEND_EVERY, EXTEND_LIMIT):
        yield


def watchdog_interval(environ: Optional[dict[str, str]] = None) -> Optional[float]:
    """Seconds between WATCHDOG=1 pings, or None when no watchdog is asked for
    (unset, unparsable, or meant for another pid)."""
    env = environ if environ is not None else os.environ
    usec = env.get(WATCHDOG_USEC_ENV)
    if not usec:
        return None
    watchdog_pid = env.get(WATCHDOG_PID_ENV)
    if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        log_event(log, "watchdog_usec_invalid", logging.WARNING, value=usec)
        return None
    return value / USEC_PER_SECOND * WATCHDOG_FRACTION if value > 0 else None


class Watchdog:
    """Pings systemd's watchdog from the master loop at half $WATCHDOG_USEC.

    Call ``tick()`` on every loop turn (it is cheap); the loop's select timeout
    should not exceed ``timeout()`` so a ping is never late."""

    def __init__(self, environ: Optional[dict[str, str]] = None) -> None:
        self.interval = watchdog_interval(environ)
        self._environ = environ
        self._next = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def timeout(self) -> Optional[float]:
        """Seconds until the next ping is due (None: no watchdog)."""
        if self.interval is None:
            return None
        return max(0.0, self._next - time.monotonic())

    def tick(self) -> bool:
        """Ping if due; True when a ping was sent."""
        if self.interval is None or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.interval
        return notify("WATCHDOG=1", self._environ)


# s a blocked reload is covered by watchdog pings at most: its config check plus its broker check
RELOAD_PING_LIMIT = LOAD_TIMEOUT + CHECK_TIMEOUT
# READY=1 waits until every consumer left its "starting" state (its workers
# are built), but no longer than this: a consumer in a crash loop must not
# keep systemd waiting until TimeoutStartSec.
READY_WAIT_LIMIT = 30.0
READY_POLL = 0.1
STARTING_STATE = "starting"


def _summary(master: Any) -> str:
    """The STATUS= line: generation and consumers by state."""
    consumers = master.status().get("consumers", [])
    busy = sum(1 for c in consumers if c.get("state") == "busy")
    return f"generation {master.generation}: {len(consumers)} consumers, {busy} busy"


def _consumers_up(master: Any) -> bool:
    return all(c.get("state") != STARTING_STATE for c in master.status().get("consumers", []))


@contextlib.contextmanager
def _watchdog_pinged(watchdog: Watchdog) -> Iterator[None]:
    """A reload blocks the master's loop while its children check the new
    config and broker (up to RELOAD_PING_LIMIT: longer than WatchdogSec,
    after which systemd killed the whole service, consumers and their jobs
    included): the watchdog is pinged from a thread meanwhile, for that
    long at most."""
    if watchdog.interval is None:
        yield
        return
    with _sent_while("WATCHDOG=1", watchdog.interval, watchdog.interval, RELOAD_PING_LIMIT):
        yield


def attach_to_master(master: Any) -> None:
    """Plug-in hook (disqontrold.cli): READY=1 once the consumers are up,
    RELOADING=1 / READY=1 around a reload, STOPPING=1 when a stop starts,
    WATCHDOG=1 from the loop. Nothing at all when not run by systemd."""
    if not os.environ.get(NOTIFY_SOCKET_ENV):
        return

    def announce_when_up() -> Optional[float]:
        if _consumers_up(master) or time.monotonic() - started > READY_WAIT_LIMIT:
            ready(_summary(master))
            return None
        return time.monotonic() + READY_POLL

    started = time.monotonic()
    master.on_ready.append(lambda: master.add_timer(announce_when_up))
    request_reload, request_stop = master.request_reload, master.request_stop

    watchdog = Watchdog()

    def reload_notified() -> tuple[bool, str]:
        reloading()
        try:
            with _watchdog_pinged(watchdog):
                taken, reason = request_reload()
        finally:
            ready(_summary(master))
        status(f"reload {'taken' if taken else 'refused'}: {reason}")
        return taken, reason

    def stop_notified(fast: bool) -> None:
        if not master.stopping:
            stopping()
        request_stop(fast)

    # Instance attributes shadow the methods: signal handlers (SIGHUP, SIGTERM)
    # and the control socket both go through these.
    master.request_reload, master.request_stop = reload_notified, stop_notified
    if watchdog.enabled:
        def ping() -> float:
            watchdog.tick()
            return time.monotonic() + (watchdog.timeout() or 0.0)

        master.add_timer(ping)
