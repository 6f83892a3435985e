"""AEDAT 3.1 files (DVS128 Gesture) and their per-recording label CSVs.

Layout: ASCII header lines starting with ``#`` (the first is
``#!AER-DAT3.1``, the last ``#!END-HEADER``), then packets. Each packet is a
28-byte little-endian header::

    int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
    int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid

followed by ``eventCapacity * eventSize`` bytes of events. Polarity packets
(``eventType == 1``) hold 8-byte events: a ``uint32`` word (bit 0 valid,
bit 1 polarity, bits 2-16 y, bits 17-31 x) and an ``int32`` timestamp; the
full timestamp in microseconds is ``eventTSOverflow << 31 | timestamp``.
Other packet types (special events, frames, IMU) are skipped, and so are
events whose valid bit is clear.

A DVS128 Gesture label CSV (``<recording>_labels.csv``) has the header
``class,startTime_usec,endTime_usec`` and one row per gesture, classes 1-11.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .aedat2 import read_jaer_header
from .arrays import EVENT_DTYPE, EventFileError

__all__ = ["read_aedat3", "read_gesture_labels"]

_PACKET_HEADER = struct.Struct("<hhiiiiii")
_POLARITY_TYPE = 1
_POLARITY_EVENT = np.dtype([("data", "<u4"), ("t", "<i4")])


def read_aedat3(path: str | os.PathLike) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 file as an :data:`EVENT_DTYPE` array (t in microseconds).

    Raises :class:`EventFileError` naming the file and the byte offset of the
    packet that is truncated or malformed.
    """
    path = Path(path)
    data = path.read_bytes()
    lines, pos = read_jaer_header(data, path)
    if lines[0].strip() != "!AER-DAT3.1":
        raise EventFileError(path, 0, f"expected an AEDAT 3.1 file, found version line {'#' + lines[0]!r}")
    if lines[-1] != "!END-HEADER":
        raise EventFileError(path, pos, "header has no '#!END-HEADER' line")
    chunks = []
    while pos < len(data):
        if pos + _PACKET_HEADER.size > len(data):
            raise EventFileError(path, pos, "file ends inside a packet header")
        kind, _, size, _, overflow, capacity, number, _ = _PACKET_HEADER.unpack_from(data, pos)
        body = pos + _PACKET_HEADER.size
        if size <= 0 or capacity < 0 or not 0 <= number <= capacity:
            raise EventFileError(path, pos, f"malformed packet header (eventSize {size}, "
                                            f"eventCapacity {capacity}, eventNumber {number})")
        end = body + capacity * size
        if end > len(data):
            raise EventFileError(path, pos, f"packet of {capacity * size} bytes runs past the end of the file")
        if kind == _POLARITY_TYPE:
            if size != _POLARITY_EVENT.itemsize:
                raise EventFileError(path, pos, f"polarity packet with eventSize {size} (expected 8)")
            raw = np.frombuffer(data, dtype=_POLARITY_EVENT, count=number, offset=body)
            raw = raw[(raw["data"] & 1) == 1]
            chunk = np.empty(raw.shape[0], dtype=EVENT_DTYPE)
            chunk["x"] = (raw["data"] >> 17) & 0x7FFF
            chunk["y"] = (raw["data"] >> 2) & 0x7FFF
            chunk["p"] = (raw["data"] >> 1) & 1
            chunk["t"] = (np.int64(overflow) << 31) | raw["t"].astype(np.int64)
            chunks.append(chunk)
        pos = end
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=EVENT_DTYPE)


def read_gesture_labels(path: str | os.PathLike) -> np.ndarray:
    """Rows of a DVS128 Gesture ``_labels.csv`` as ``int64 [N, 3]``: class (1-11), start, end (microseconds)."""
    path = Path(path)
    text = path.read_bytes().decode("latin-1")  # one byte per character: offsets are byte offsets
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip().startswith("class"):
        raise EventFileError(path, 0, "expected the header 'class,startTime_usec,endTime_usec'")
    rows = []
    offset = len(lines[0])
    for number, line in enumerate(lines[1:], start=2):
        if line.strip():
            try:
                label, start, end = (int(f) for f in line.strip().split(","))
            except ValueError:
                raise EventFileError(path, offset, f"line {number} is not 'class,startTime_usec,endTime_usec': "
                                                   f"{line.strip()!r}") from None
            if not 1 <= label <= 11 or end <= start:
                raise EventFileError(path, offset, f"line {number} has class {label} (expected 1-11) "
                                                   f"or an empty time window {start}..{end}")
            rows.append((label, start, end))
        offset += len(line)
    return np.array(rows, dtype=np.int64).reshape(-1, 3)
