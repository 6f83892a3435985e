"""Progress of long loops (no dependency): a live bar on a terminal, plain lines in a log.

On a terminal the bar is redrawn in place. When the stream is not a terminal
(a SLURM job, ``nohup``, ``> log``) :class:`Progress` writes one plain line,
without carriage returns or colour codes, every ``every`` seconds and each
time another tenth of the loop is done (a tenth's line at most once a second, so
that a loop of a few seconds does not fill the log)::

    epoch 3/10 step 120/391 (31%) 85.2 samples/s eta 3m12s loss 1.234 lr 0.05
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``42s``, ``3m12s`` or ``1h05m`` for a duration in seconds."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``for batch in Progress(loader, "epoch 3/10"): ...``; ``set(loss=...)`` adds fields to the report.

    Args:
        iterable: the loop's items; a step is counted when the loop body of an item has run.
        desc: the report's first words.
        enabled: False reports nothing.
        stream: where to report (default ``sys.stderr``); a live bar when it is a terminal.
        total: steps of the whole loop (default: ``start + len(iterable)``; None when unknown).
        start: steps done before this loop began (a resumed epoch); they count towards the
            percentage, not towards the rate.
        every: seconds between plain lines (0: only at each tenth).
        per_step: samples per step, for a rate in samples/s (None: steps/s).
        clock: monotonic time in seconds (injectable for tests).
    """

    BAR_WIDTH = 24
    REDRAW_SECONDS = 0.2
    MIN_LINE_SECONDS = 1.0

    def __init__(self, iterable, desc: str = "", enabled: bool = True, stream=None, *, total: int | None = None,
                 start: int = 0, every: float = 60.0, per_step: int | None = None, clock=time.monotonic):
        self.iterable = iterable
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.start, self.every, self.per_step, self.clock = start, every, per_step, clock
        self.total = total if total is not None else _length(iterable, start)
        self.fields: dict = {}

    def set(self, **fields) -> None:
        """Fields shown after the rate, e.g. ``loss=1.234``: strings as they are, numbers (also 0-dim
        tensors, read only when a report is written) with 4 significant digits."""
        self.fields.update(fields)

    def __iter__(self):
        began = last = self.clock()
        tenth = self._tenth(self.start)
        done = self.start
        for item in self.iterable:
            yield item
            done += 1
            if not self.enabled:
                continue
            now = self.clock()
            if self.live:
                if now - last > self.REDRAW_SECONDS or done == self.total:
                    last = now
                    self._write("\r\033[K" + self.report(done, now - began, bar=True))
            elif (self.every > 0 and now - last >= self.every) or (
                    self._tenth(done) > tenth and now - last >= self.MIN_LINE_SECONDS):
                last, tenth = now, self._tenth(done)
                self._write(self.report(done, now - began) + "\n")
        if self.live:
            self._write("\r\033[K")

    def report(self, done: int, elapsed: float, bar: bool = False) -> str:
        """The report after ``done`` steps, ``elapsed`` seconds into this loop (``bar``: with a bar)."""
        steps_per_second = (done - self.start) / elapsed if elapsed > 0 else 0.0
        if self.per_step:
            rate = f"{steps_per_second * self.per_step:.1f} samples/s"
        else:
            rate = f"{steps_per_second:.2f} steps/s"
        if self.total:
            percent = 100 * done // self.total
            head = f"step {done}/{self.total} ({percent}%)"
            if bar:
                filled = self.BAR_WIDTH * done // self.total
                head = f"[{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] {head}"
            eta = f" eta {format_duration((self.total - done) / steps_per_second)}" if steps_per_second else ""
        else:
            head, eta = f"step {done}", ""
        tail = "".join(f" {k} {v if isinstance(v, str) else format(v, '.4g')}" for k, v in self.fields.items())
        return f"{self.desc} {head} {rate}{eta}{tail}".lstrip()

    def _tenth(self, done: int) -> int:
        return 10 * done // self.total if self.total else 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _length(iterable, start: int) -> int | None:
    try:
        return start + len(iterable)
    except TypeError:
        return None
