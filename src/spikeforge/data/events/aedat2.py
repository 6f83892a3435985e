"""jAER AEDAT 2.0 files: DVS128 (CIFAR10-DVS), DAVIS240 and DAVIS346 address layouts.

Layout: ASCII header lines that start with ``#`` (the first is
``#!AER-DAT2.0``), then one 8-byte record per event: a big-endian ``uint32``
address and a big-endian ``int32`` timestamp in microseconds. The
``# AEChip:`` header line names the camera class, which sets the address layout.

DVS128 (128x128) address bits: polarity = bit 0 (1 = ON), x = bits 1-7,
y = bits 8-14; bit 15 marks an external (special) event, which is dropped.
The DVS128 pixel array is mirrored horizontally, so ``x`` is flipped to
``127 - x`` by default, as the public CIFAR10-DVS loaders do; ``y`` is kept.

DAVIS240 (240x180) and DAVIS346 (346x260) address bits, as jAER's
``DavisChip``: bit 31 set = an APS (frame) or IMU sample, y = bits 22-30,
x = bits 12-21, polarity = bit 11, bit 10 set = an external-input event.
Only DVS events (bits 31 and 10 clear) are returned. jAER mirrors the raw
column (``x = width - 1 - x``) and counts rows from the bottom, so by default
both are turned round (``y = height - 1 - y``) to the top-left origin of
AEDAT 3/4 recordings and of tonic's ``read_davis_346``.

``flip_x=False`` / ``flip_y=False`` keep the raw column / row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import EVENT_DTYPE, EventFileError

__all__ = ["read_aedat2", "read_jaer_header", "DVS128_SIZE", "DAVIS240_SIZE", "DAVIS346_SIZE", "AEDAT2_LAYOUTS"]

DVS128_SIZE = (128, 128)  # (height, width)
DAVIS240_SIZE = (180, 240)
DAVIS346_SIZE = (260, 346)
#: address layout -> (height, width)
AEDAT2_LAYOUTS = {"dvs128": DVS128_SIZE, "davis240": DAVIS240_SIZE, "davis346": DAVIS346_SIZE}
#: jAER AEChip class names (last dotted part, lower case) -> address layout
_CHIPS = {"dvs128": "dvs128", "davis240a": "davis240", "davis240b": "davis240", "davis240c": "davis240",
          **{name: "davis346" for name in ("davis346a", "davis346b", "davis346bcolor", "davis346red",
                                           "davis346redcolor", "davis346blue", "davis346cbsi")}}
_RECORD = np.dtype([("address", ">u4"), ("t", ">i4")])
_EXTERNAL_BIT = 1 << 15
_DAVIS_NOT_DVS = (1 << 31) | (1 << 10)  # APS/IMU sample, external-input event


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


def _layout(lines: list[str], path: Path) -> str:
    chip = next((ln.split(":", 1)[1].strip() for ln in lines if ln.strip().startswith("AEChip:")), None)
    if chip is None:
        return "dvs128"
    layout = _CHIPS.get(chip.rsplit(".", 1)[-1].lower())
    if layout is None:
        raise EventFileError(path, 0, f"recorded with AEChip {chip}; only the DVS128, DAVIS240 and DAVIS346 "
                                      f"address layouts are decoded (pass layout= to force one)")
    return layout


def _decode_davis(records: np.ndarray, start: int, size: tuple[int, int], path: Path) -> np.ndarray:
    dvs = (records["address"] & _DAVIS_NOT_DVS) == 0
    if not dvs.all():
        records = records[dvs]
    address = records["address"]
    x, y = (address >> 12) & 0x3FF, (address >> 22) & 0x1FF
    outside = (x >= size[1]) | (y >= size[0])
    if outside.any():
        i = int(np.argmax(outside))
        raise EventFileError(path, start + int(np.flatnonzero(dvs)[i]) * _RECORD.itemsize,
                             f"DVS address x={int(x[i])}, y={int(y[i])} outside the {size[1]}x{size[0]} array")
    events = np.empty(address.shape[0], dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"] = x, y, (address >> 11) & 1
    events["t"] = records["t"]
    return events


def _decode_dvs128(records: np.ndarray) -> np.ndarray:
    external = (records["address"] & _EXTERNAL_BIT) != 0
    if external.any():
        records = records[~external]
    address = records["address"]
    events = np.empty(address.shape[0], dtype=EVENT_DTYPE)
    events["x"] = (address >> 1) & 0x7F
    events["y"] = (address >> 8) & 0x7F
    events["p"] = address & 1
    events["t"] = records["t"]
    return events


def read_aedat2(path: str | os.PathLike, flip_x: bool = True, flip_y: bool | None = None,
                layout: str | None = None) -> np.ndarray:
    """Events of a DVS128, DAVIS240 or DAVIS346 AEDAT 2.0 file as an :data:`EVENT_DTYPE` array (t in microseconds).

    The address layout comes from the ``# AEChip:`` header line (DVS128 when
    there is none); ``layout="dvs128"``, ``"davis240"`` or ``"davis346"``
    overrides it. ``flip_x`` turns columns round (``width - 1 - x``);
    ``flip_y`` turns rows round and defaults to True for the DAVIS layouts
    (top-left origin) and False for the DVS128 (as CIFAR10-DVS loaders).
    Raises :class:`EventFileError` naming the file and byte offset if the file
    is not AEDAT 2.0, was recorded with another chip, ends inside an event
    record or holds a DAVIS address outside the pixel array.
    """
    path = Path(path)
    data = path.read_bytes()
    lines, start = read_jaer_header(data, path)
    if lines[0].strip() != "!AER-DAT2.0":
        raise EventFileError(path, 0, f"expected an AEDAT 2.0 file, found version line {'#' + lines[0]!r}")
    if layout is None:
        layout = _layout(lines, path)
    elif layout not in AEDAT2_LAYOUTS:
        raise ValueError(f"layout={layout!r}; expected one of {sorted(AEDAT2_LAYOUTS)}")
    count, rest = divmod(len(data) - start, _RECORD.itemsize)
    if rest:
        raise EventFileError(path, start + count * _RECORD.itemsize,
                             f"file ends inside an event record ({rest} of {_RECORD.itemsize} bytes)")
    records = np.frombuffer(data, dtype=_RECORD, count=count, offset=start)
    size = AEDAT2_LAYOUTS[layout]
    events = _decode_dvs128(records) if layout == "dvs128" else _decode_davis(records, start, size, path)
    if flip_x:
        events["x"] = size[1] - 1 - events["x"]
    if flip_y if flip_y is not None else layout != "dvs128":
        events["y"] = size[0] - 1 - events["y"]
    return events
