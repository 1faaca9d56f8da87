"""A progress line for training: images seen, images/s and the game's vital signs.

On a terminal it redraws one line in place; otherwise (logs, CI) it prints a full line every
`interval` seconds, so a long run is never silent and never floods the log.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None,
                 interval: float | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.25 if self.tty else 10.0)
        self._t0 = self._last_print = time.perf_counter()
        self._start = start
        self._last_line = ""

    def update(self, images: int, stats: dict[str, float], force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_print < self.interval:
            return
        self._last_print = now
        rate = (images - self._start) / max(now - self._t0, 1e-9)
        pct = 100.0 * images / max(self.total, 1)
        eta = (self.total - images) / rate if rate > 0 else float("inf")
        line = (
            f"{images:>{len(str(self.total))}}/{self.total} img ({pct:5.1f}%) {rate:7.0f} img/s"
            f" eta {_duration(eta)} | D {stats['d_loss']:.3f} G {stats['g_loss']:.3f}"
            f" V {stats['value']:+.3f} D(x) {stats['d_real']:.2f}"
            f" D(G(z)) {stats['d_fake_g_before']:.2f}->{stats['d_fake_g_after']:.2f}"
            f" |gD| {stats['grad_norm_d']:.2g} |gG| {stats['grad_norm_g']:.2g}"
        )
        self._last_line = line
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (a warning, a saved checkpoint) that does not garble the bar."""
        if self.tty:
            self.stream.write("\r\x1b[K" + text + "\n")
            if self._last_line:
                self.stream.write(self._last_line)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
