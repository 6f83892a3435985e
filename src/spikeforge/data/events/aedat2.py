"""jAER AEDAT 2.0 files with the DVS128 address layout (CIFAR10-DVS).

Layout: ASCII header lines that start with ``#`` (the first is
``#!AER-DAT2.0``), then one 8-byte record per event: a big-endian ``uint32``
address and a big-endian ``int32`` timestamp in microseconds.

DVS128 address bits: polarity = bit 0 (1 = ON), x = bits 1-7, y = bits 8-14;
bit 15 marks an external (special) event, which is dropped. The DVS128 pixel
array is mirrored horizontally, so ``x`` is flipped to ``127 - x`` by default,
as the public CIFAR10-DVS loaders do; ``flip_x=False`` keeps the raw column.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import EVENT_DTYPE, EventFileError

__all__ = ["read_aedat2", "read_jaer_header", "DVS128_SIZE"]

DVS128_SIZE = (128, 128)  # (height, width)
_RECORD = np.dtype([("address", ">u4"), ("t", ">i4")])
_EXTERNAL_BIT = 1 << 15


def read_jaer_header(data: bytes, path: str | os.PathLike) -> tuple[list[str], int]:
    """The ``#`` header lines of a jAER/AEDAT 2-3 file (without ``#`` and line ends) and the byte offset after them.

    The header ends at the first line that does not start with ``#``, or after
    an ``#!END-HEADER`` line (AEDAT 3).
    """
    if not data.startswith(b"#!AER-DAT"):
        raise EventFileError(path, 0, "not an AEDAT file (it does not start with '#!AER-DAT')")
    lines, pos = [], 0
    while data[pos : pos + 1] == b"#":
        end = data.find(b"\n", pos)
        if end < 0:
            raise EventFileError(path, pos, "header line without a line end")
        lines.append(data[pos + 1 : end].rstrip(b"\r").decode("latin-1"))
        pos = end + 1
        if lines[-1] == "!END-HEADER":
            break
    return lines, pos


def read_aedat2(path: str | os.PathLike, flip_x: bool = True) -> np.ndarray:
    """Events of a DVS128 AEDAT 2.0 file as an :data:`EVENT_DTYPE` array (t in microseconds).

    Raises :class:`EventFileError` naming the file and byte offset if the file
    is not AEDAT 2.0, was recorded with a chip other than the DVS128 (its
    ``# AEChip:`` header line), or ends inside an event record.
    """
    path = Path(path)
    data = path.read_bytes()
    lines, start = read_jaer_header(data, path)
    if lines[0].strip() != "!AER-DAT2.0":
        raise EventFileError(path, 0, f"expected an AEDAT 2.0 file, found version line {'#' + lines[0]!r}")
    chip = next((ln.split(":", 1)[1].strip() for ln in lines if ln.strip().startswith("AEChip:")), None)
    if chip is not None and "DVS128" not in chip:
        raise EventFileError(path, 0, f"recorded with AEChip {chip}; only the DVS128 address layout is decoded")
    count, rest = divmod(len(data) - start, _RECORD.itemsize)
    if rest:
        raise EventFileError(path, start + count * _RECORD.itemsize,
                             f"file ends inside an event record ({rest} of {_RECORD.itemsize} bytes)")
    records = np.frombuffer(data, dtype=_RECORD, count=count, offset=start)
    external = (records["address"] & _EXTERNAL_BIT) != 0
    if external.any():
        records = records[~external]
    address = records["address"]
    events = np.empty(address.shape[0], dtype=EVENT_DTYPE)
    x = (address >> 1) & 0x7F
    events["x"] = 127 - x if flip_x else x
    events["y"] = (address >> 8) & 0x7F
    events["p"] = address & 1
    events["t"] = records["t"]
    return events
