"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM.

The handler only sets a flag; the training loop reads it between iterations, so the checkpoint
it then saves is always taken at a consistent point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

STOP_GRACE = 10.0  # seconds a torchrun process may take to stop cleanly after a signal


class StopFlag:
    """SIGINT/SIGTERM set `signal`. A second Ctrl-C stops at once (torchrun passes the
    terminal's Ctrl-C on to workers that already got it: a repeat within a second is the same
    press). With `grace`, a process that has not acknowledged the stop that many seconds later
    exits: it is stuck, e.g. in a collective whose peer is gone."""

    def __init__(self, grace: float | None = None) -> None:
        self.signal: int | None = None
        self.grace = grace
        self._at = 0.0
        self._timer: threading.Timer | None = None

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signal is not None and signum == signal.SIGINT and now - self._at > 1.0:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal, self._at = signum, now
            if self.grace is not None:
                self._timer = threading.Timer(self.grace, self._expire, args=(signum,))
                self._timer.daemon = True
                self._timer.start()

    def _expire(self, signum: int) -> None:
        sys.stderr.write(f"gankit: error: {signal.Signals(signum).name} received, but this process could not "
                         f"stop cleanly within {self.grace:g} s (another process of the run is probably gone); "
                         "exiting without a new checkpoint\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    def acknowledge(self) -> None:
        """The loop is stopping cleanly: no forced exit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def install(self) -> None:
        """The handler for SIGINT and SIGTERM from now on (a worker process's whole life)."""
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            self.acknowledge()
            for s, handler in previous.items():
                signal.signal(s, handler)
