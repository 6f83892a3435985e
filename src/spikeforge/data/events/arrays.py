"""The event array every reader returns, and the error a bad event file raises.

An event stream is a 1-D numpy structured array of :data:`EVENT_DTYPE`:

- ``x``, ``y``: ``uint16`` pixel column and row (0-based, ``x < width``, ``y < height``);
- ``t``: ``int64`` timestamp in **microseconds** (the recording's own clock);
- ``p``: ``uint8`` polarity, 1 = ON (brighter), 0 = OFF.

Readers return events in file order, which for every supported format is time
order.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DatasetCorruptError

__all__ = ["EVENT_DTYPE", "make_events", "EventFileError"]

EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])


def make_events(x, y, t, p) -> np.ndarray:
    """Pack equal-length ``x``, ``y``, ``t`` (microseconds), ``p`` (0/1) into an :data:`EVENT_DTYPE` array."""
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not (x.shape == y.shape == t.shape == p.shape) or x.ndim != 1:
        raise ValueError(f"x, y, t, p must be 1-D and of equal length, got shapes "
                         f"{x.shape}, {y.shape}, {t.shape}, {p.shape}")
    events = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


class EventFileError(DatasetCorruptError):
    """An event file is truncated, corrupt or not in the expected format.

    The message names the file and the byte offset where reading failed;
    ``path`` and ``offset`` hold them.
    """

    def __init__(self, path: str | os.PathLike, offset: int, problem: str) -> None:
        super().__init__(f"{os.fspath(path)}: {problem} at byte offset {offset}", path=path)
        self.offset = int(offset)
