"""Progress for long work: a rewritten status line on a terminal, a sparse log line elsewhere (CI logs)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stage: str, stream=None, interval_s: float = 30.0):
        self.stage = stage
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s
        self.start = time.monotonic()
        self._last = 0.0
        self._width = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last < 0.2:
                return
            line = f"[{self.stage} {self.elapsed():5.0f}s] {text}"[:120]
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            if now - self._last < self.interval_s:
                return
            self.stream.write(f"[{self.stage} {self.elapsed():5.0f}s] {text}\n")
        self._last = now
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line that stays."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(f"[{self.stage}] {text}\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        self.note(f"{text} ({self.elapsed():.1f}s)")
