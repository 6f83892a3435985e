"""The binary event format of N-MNIST and N-Caltech101 (ATIS sensor, Orchard et al. 2015).

Five bytes per event, no header: byte 0 = x, byte 1 = y, bit 7 of byte 2 =
polarity (1 = ON), and bits 22..0 of bytes 2-4 (big-endian) = timestamp in
microseconds. A record with ``y == 240`` (one row below the 304x240 ATIS
array) is a timestamp-overflow marker: it is dropped and every later event's
timestamp grows by 2**13 microseconds, as in the authors' reference reader.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import EVENT_DTYPE, EventFileError

__all__ = ["read_atis_bin", "NMNIST_SIZE", "OVERFLOW_ROW", "OVERFLOW_STEP_US"]

NMNIST_SIZE = (34, 34)  # (height, width)
OVERFLOW_ROW = 240
OVERFLOW_STEP_US = 1 << 13
_RECORD = 5


def read_atis_bin(path: str | os.PathLike) -> np.ndarray:
    """Events of an N-MNIST / N-Caltech101 ``.bin`` file as an :data:`EVENT_DTYPE` array (t in microseconds).

    Raises :class:`EventFileError` naming the file and byte offset if the file
    ends inside a 5-byte record.
    """
    path = Path(path)
    data = path.read_bytes()
    count, rest = divmod(len(data), _RECORD)
    if rest:
        raise EventFileError(path, count * _RECORD, f"file ends inside an event record ({rest} of {_RECORD} bytes)")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(count, _RECORD)
    t = ((raw[:, 2].astype(np.int64) & 0x7F) << 16) | (raw[:, 3].astype(np.int64) << 8) | raw[:, 4]
    overflow = raw[:, 1] == OVERFLOW_ROW
    if overflow.any():
        t += np.cumsum(overflow, dtype=np.int64) * OVERFLOW_STEP_US
        keep = ~overflow
        raw, t = raw[keep], t[keep]
    events = np.empty(raw.shape[0], dtype=EVENT_DTYPE)
    events["x"] = raw[:, 0]
    events["y"] = raw[:, 1]
    events["p"] = raw[:, 2] >> 7
    events["t"] = t
    return events
