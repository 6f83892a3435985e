"""A small progress bar for long loops (no dependency): live on a terminal, quiet in logs."""

from __future__ import annotations

import sys
import time


class Progress:
    """``for batch in Progress(loader, "epoch 3"): ...``; ``set(loss=...)`` adds live fields."""

    def __init__(self, iterable, desc: str = "", enabled: bool = True, stream=None):
        self.iterable = iterable
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.fields: dict[str, str] = {}
        try:
            self.total = len(iterable)
        except TypeError:
            self.total = None

    def set(self, **fields) -> None:
        self.fields.update({k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in fields.items()})

    def __iter__(self):
        start = last = time.perf_counter()
        for i, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if self.enabled and (now - last > 0.2 or i == self.total):
                last = now
                self._draw(i, now - start)
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self, done: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            width = 24
            filled = int(width * done / self.total)
            eta = (self.total - done) / rate if rate else 0.0
            head = f"{self.desc} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} eta {eta:.0f}s"
        else:
            head = f"{self.desc} {done} it"
        tail = " ".join(f"{k}={v}" for k, v in self.fields.items())
        self.stream.write(f"\r\033[K{head} {rate:.1f} it/s {tail}")
        self.stream.flush()
