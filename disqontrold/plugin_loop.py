"""The master's plug-in surface: descriptors watched and timers run from
its one loop (the control socket, the scheduler, the autoscaler, systemd's
watchdog). A plug-in's bug is logged and the loop goes on: jobs keep
flowing when, say, a status reply fails to encode.
"""
from __future__ import annotations

import logging
import os
import selectors
import time
import traceback
from typing import Any, Callable, Optional

from disqontrol_client.logfmt import log_event

logger = logging.getLogger("disqontrold.master")  # its lines are the master's

PLUGIN_RETRY = object()  # what a failed plug-in callback returns: timers try again a tick later

Callback = Callable[[Any], None]
Timer = Callable[[], Optional[float]]


class PluginLoop:
    """The selector and the timers the master's loop serves."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[list[Any]] = []  # [callback, next deadline]
        self._plugged: list[Any] = []  # fileobjs registered by plug-ins: closed in children

    def register(self, fileobj: Any, callback: Callback) -> None:
        """Call ``callback(fileobj)`` from the loop whenever ``fileobj`` is readable.

        Forked consumers close their copy of its descriptor (os.close, not
        ``fileobj.close()``); anything else it holds stays open there."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)
        self._plugged.append(fileobj)

    def unregister(self, fileobj: Any) -> None:
        self.selector.unregister(fileobj)
        self._plugged.remove(fileobj)

    def add_timer(self, callback: Timer) -> None:
        """Run ``callback()`` from the loop now, then whenever the
        ``time.monotonic()`` deadline it returned has passed (None: never again)."""
        self._timers.append([callback, time.monotonic()])

    def _guarded(self, callback: Callable[..., Any], *args: Any) -> Any:
        """Run a plug-in callback; its bug is logged, and jobs keep flowing."""
        try:
            return callback(*args)
        except Exception as exc:  # noqa: BLE001 -- a control-socket bug must not stop the consumers
            log_event(logger, "plugin_failed", logging.ERROR, callback=getattr(callback, "__qualname__", callback),
                      error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            return PLUGIN_RETRY

    def _timer_deadlines(self) -> list[float]:
        return [deadline for _, deadline in self._timers]

    def _run_timers(self, now: float, retry_after: float) -> None:
        for timer in list(self._timers):
            callback, deadline = timer
            if deadline <= now:
                following = self._guarded(callback)
                if following is PLUGIN_RETRY:
                    following = now + retry_after
                if following is None:
                    self._timers.remove(timer)
                else:
                    timer[1] = following

    def _forget_plugins_in_child(self) -> None:
        """In a new consumer: drop the selector and the plug-ins' files."""
        self.selector.close()
        for fileobj in self._plugged:
            # Close only this process's descriptor: a plug-in's close() could
            # EPOLL_CTL_DEL from an epoll instance the fork shares with the master.
            os.close(fileobj if isinstance(fileobj, int) else fileobj.fileno())
        self._timers.clear()
