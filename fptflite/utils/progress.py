"""Progress display for long loops (evaluation, conversion, record writing)."""

from __future__ import annotations

import sys
import time


class ProgressCounter:
    """A one-line "done/total" counter with rate, for evaluation and conversion."""

    def __init__(self, total: int, label: str, stream=sys.stderr, enabled: bool = True):
        self.total, self.label, self.stream, self.enabled = total, label, stream, enabled
        self.done, self.t0, self._last = 0, time.perf_counter(), 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.5 or self.done >= self.total):
            rate = self.done / max(now - self.t0, 1e-9)
            end = "\n" if self.done >= self.total else ""
            self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({rate:.1f}/s)" + end)
            self.stream.flush()
            self._last = now
