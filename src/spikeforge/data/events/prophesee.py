"""Prophesee / Metavision event files: ``.dat`` (decoded CD events) and ``.raw`` (EVT 2.0 and EVT 3.0).

Every file starts with ASCII header lines ``% <keyword> <value>`` (a line ``% end`` closes the header of
recent ``.raw`` files). The header says the sensor size (``% Width 304`` / ``% Height 240``,
``% format EVT3;height=720;width=1280`` or ``% geometry 1280x720``) and, for ``.raw`` files, the encoding
(``% evt 3.0`` or ``% format EVT3;...``). The body is little-endian:

``.dat`` (header ``% Version 2``; a file without a Version line is read as Version 2): one byte event
type (0 = Event2d, 12 = EventCD), one byte event size (8), then 8-byte records: ``uint32`` timestamp in
microseconds and a ``uint32`` word with x = bits 0-13, y = bits 14-27 and polarity = bits 28-31 (0 OFF,
1 ON). The 32-bit timestamp wraps after 71.6 minutes; a drop of more than half its range counts as a wrap.

EVT 2.0: ``uint32`` words, type in bits 31-28. ``CD_OFF`` (0) / ``CD_ON`` (1): timestamp bits 5-0 in
bits 27-22, x in bits 21-11, y in bits 10-0. ``EVT_TIME_HIGH`` (8): timestamp bits 33-6 in bits 27-0.
``EXT_TRIGGER`` (10), ``OTHERS`` (14) and ``CONTINUED`` (15) are skipped.

EVT 3.0: ``uint16`` words, type in bits 15-12, decoded as a state machine. ``EVT_ADDR_Y`` (0): y = bits
10-0. ``EVT_ADDR_X`` (2): one event at x = bits 10-0, polarity bit 11. ``VECT_BASE_X`` (3): base x =
bits 10-0 and polarity bit 11 for the vectors that follow. ``VECT_12`` (4) / ``VECT_8`` (5): one event at
base x + i for each set bit i of bits 11-0 / 7-0, then base x grows by 12 / 8. ``EVT_TIME_LOW`` (6) and
``EVT_TIME_HIGH`` (8): timestamp bits 11-0 and 23-12. The 24-bit time wraps every 16.8 s, so a
time-high drop of more than half its range adds 2**24 microseconds.
``CONTINUED_4`` (7), ``EXT_TRIGGER`` (10), ``OTHERS`` (14) and ``CONTINUED_12`` (15) are skipped.

In both ``.raw`` encodings events before the first ``EVT_TIME_HIGH`` word take time-high 0, and word
types the format reserves raise :class:`EventFileError` (the file is corrupt or in another encoding).
An ``EVT_TIME_LOW`` word sets bits 11-0 only: a smaller time-low does not advance time-high (expelliarmus
1.1 adds 4096 us there, so its EVT 3.0 timestamps drift from these after every time-high change).
Files are read and decoded whole, with numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import EVENT_DTYPE, EventFileError, make_events

__all__ = ["PropheseeHeader", "read_prophesee_header", "read_prophesee"]

_DAT_TYPES = (0, 12)  # Event2d, EventCD
_DAT_RECORD = np.dtype([("t", "<u4"), ("word", "<u4")])
_EVT2_TYPES = (0, 1, 8, 10, 14, 15)
_EVT3_TYPES = (0, 2, 3, 4, 5, 6, 7, 8, 10, 14, 15)
_ENCODINGS = {"2.0": "evt2", "3.0": "evt3", "EVT2": "evt2", "EVT3": "evt3"}


@dataclass(frozen=True)
class PropheseeHeader:
    """A Prophesee file's header: ``encoding`` ("dat", "evt2" or "evt3"), sensor ``size`` (height,
    width) if stated, the ``fields`` (keyword -> value) and ``data_start``, the byte offset of the first event."""

    encoding: str
    size: tuple[int, int] | None
    fields: dict[str, str]
    data_start: int


def _sensor_size(fields: dict[str, str]) -> tuple[int, int] | None:
    if "Width" in fields and "Height" in fields:
        return int(fields["Height"]), int(fields["Width"])
    options = dict(part.split("=", 1) for part in fields.get("format", "").split(";")[1:] if "=" in part)
    if "width" in options and "height" in options:
        return int(options["height"]), int(options["width"])
    width, _, height = fields.get("geometry", "").partition("x")
    return (int(height), int(width)) if width and height else None


def _encoding(fields: dict[str, str], path: Path) -> str:
    if "format" in fields or "evt" in fields:
        name = fields["format"].split(";")[0].strip().upper() if "format" in fields else fields["evt"].strip()
        if name not in _ENCODINGS:
            raise EventFileError(path, 0, f"encoding {name!r}; only EVT 2.0 and EVT 3.0 .raw files are decoded")
        return _ENCODINGS[name]
    if "Version" in fields or path.suffix.lower() == ".dat":
        return "dat"
    raise EventFileError(path, 0, "header has no '% evt', '% format' or '% Version' line, so the encoding is "
                                  "unknown; pass encoding='dat', 'evt2' or 'evt3'")


def _parse_header(data: bytes, path: Path, encoding: str | None) -> PropheseeHeader:
    if not data.startswith(b"%"):
        raise EventFileError(path, 0, "not a Prophesee file (its header lines must start with '%')")
    fields, pos = {}, 0
    while data[pos : pos + 1] == b"%":
        end = data.find(b"\n", pos)
        if end < 0:
            raise EventFileError(path, pos, "header line without a line end")
        line = data[pos + 1 : end].decode("latin-1").strip()
        pos = end + 1
        if line == "end":
            break
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    try:
        size = _sensor_size(fields)
    except ValueError:
        raise EventFileError(path, 0, f"header has a non-integer sensor size ({fields})") from None
    encoding = encoding or _encoding(fields, path)
    if encoding == "dat":
        if fields.get("Version", "2") != "2":
            raise EventFileError(path, 0, f"DAT Version {fields['Version']}; only Version 2 is decoded")
        if pos + 2 > len(data):
            raise EventFileError(path, pos, "file ends before the event type and size bytes")
        kind, size_bytes = data[pos], data[pos + 1]
        if kind not in _DAT_TYPES or size_bytes != _DAT_RECORD.itemsize:
            raise EventFileError(path, pos, f"event type {kind} of {size_bytes} bytes; expected CD events "
                                            f"(type 0 Event2d or 12 EventCD) of 8 bytes")
        pos += 2
    elif encoding not in ("evt2", "evt3"):
        raise ValueError(f"encoding={encoding!r}; expected 'dat', 'evt2' or 'evt3'")
    return PropheseeHeader(encoding, size, fields, pos)


def read_prophesee_header(path: str | os.PathLike, encoding: str | None = None) -> PropheseeHeader:
    """The header of a Prophesee ``.dat`` or ``.raw`` file (reads only the header lines)."""
    path = Path(path)
    head = bytearray()
    with open(path, "rb") as f:
        while f.peek(1)[:1] == b"%":
            head += f.readline()
            if head.endswith((b"% end\n", b"% end\r\n")):
                break
        head += f.read(2)
    return _parse_header(bytes(head), path, encoding)


def _words(data: bytes, start: int, dtype: str, path: Path, name: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    count, rest = divmod(len(data) - start, size)
    if rest:
        raise EventFileError(path, start + count * size, f"file ends inside a {size}-byte {name} word")
    return np.frombuffer(data, dtype=dtype, count=count, offset=start)


def _word_types(words: np.ndarray, shift: int, allowed, start: int, path: Path, name: str) -> np.ndarray:
    """The 4-bit type of each word; a type the format reserves raises :class:`EventFileError`."""
    kind = words >> shift
    reserved = np.array(sum(1 << k for k in range(16) if k not in allowed), dtype=words.dtype)
    bad = (reserved >> kind) & 1  # bit k of ``reserved`` for a word of type k
    if bad.any():
        i = int(np.argmax(bad))
        raise EventFileError(path, start + i * words.itemsize, f"{name} word of reserved type {int(kind[i]):#x} "
                                                               f"(corrupt file or another encoding)")
    return kind


def _unwrap(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` of a ``bits``-wide counter plus ``2**bits`` per drop of more than half the range (``int64``
    if there is one; ``values`` themselves when they never decrease)."""
    if not (values[1:] < values[:-1]).any():
        return values
    values = values.astype(np.int64)
    values[1:] += np.cumsum(np.diff(values) < -(1 << (bits - 1))) << bits
    return values


def _state_index(is_state: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For the (non-state) words at positions ``at``: how many state words (``is_state``) come before each."""
    return np.cumsum(is_state, dtype=np.int32 if is_state.size < 2**31 else np.int64)[at]


def _last_word(is_state: np.ndarray, at: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For the words at positions ``at``: the position of the last state word (``is_state``) before each, -1
    before the first (``positions``: ``arange`` over the words). For frequent state words, gathering their
    values at these positions is cheaper than counting them (:func:`_state_index`)."""
    return np.maximum.accumulate(np.where(is_state, positions, -1))[at]


def _state(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The value of the last state word (``values`` in file order) before each word; 0 before the first
    (in the dtype of ``values``)."""
    return np.concatenate((np.zeros(1, values.dtype), values))[index]


def _decode_dat(data: bytes, start: int, path: Path) -> np.ndarray:
    count, rest = divmod(len(data) - start, _DAT_RECORD.itemsize)
    if rest:
        raise EventFileError(path, start + count * _DAT_RECORD.itemsize,
                             f"file ends inside an event record ({rest} of {_DAT_RECORD.itemsize} bytes)")
    records = np.frombuffer(data, dtype=_DAT_RECORD, count=count, offset=start)
    word = records["word"]
    p = word >> 28
    if count and p.max() > 1:
        i = int(np.argmax(p > 1))
        raise EventFileError(path, start + i * _DAT_RECORD.itemsize,
                             f"polarity field {int(p[i])} (CD events have 0 or 1)")
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["t"] = _unwrap(records["t"], 32)
    events["x"] = word & 0x3FFF
    events["y"] = (word >> 14) & 0x3FFF
    events["p"] = p
    return events


def _decode_evt2(data: bytes, start: int, path: Path) -> np.ndarray:
    words = _words(data, start, "<u4", path, "EVT 2.0")
    kind = _word_types(words, 28, _EVT2_TYPES, start, path, "EVT 2.0")
    high = kind == 8
    cd = np.flatnonzero(kind <= 1)
    cd_words = words[cd]
    events = np.empty(cd.size, dtype=EVENT_DTYPE)
    time_high = _state(_unwrap(words[high] & 0x0FFFFFFF, 28).astype(np.int64), _state_index(high, cd))
    events["t"] = (time_high << 6) | ((cd_words >> 22) & 0x3F)
    events["x"] = (cd_words >> 11) & 0x7FF
    events["y"] = cd_words & 0x7FF
    events["p"] = kind[cd]
    return events


def _decode_evt3(data: bytes, start: int, path: Path) -> np.ndarray:
    words = _words(data, start, "<u2", path, "EVT 3.0")
    kind = _word_types(words, 12, _EVT3_TYPES, start, path, "EVT 3.0")
    at = np.flatnonzero((kind == 2) | (kind == 4) | (kind == 5))  # the words that carry events
    word, at_kind = words[at], kind[at]
    # the state words in force at each event word: EVT_TIME_HIGH (few, unwrapped), EVT_TIME_LOW, EVT_ADDR_Y
    high = kind == 8
    t = _state(_unwrap(words[high] & 0xFFF, 12).astype(np.int64), _state_index(high, at)) << 12
    positions = np.arange(words.size, dtype=np.int32 if words.size < 2**31 else np.int64)
    low, row = _last_word(kind == 6, at, positions), _last_word(kind == 0, at, positions)
    t |= np.where(low < 0, 0, words[low] & 0xFFF)
    y = np.where(row < 0, 0, words[row] & 0x7FF)
    x, p = word & 0x7FF, (word >> 11) & 1  # EVT_ADDR_X; vectors below
    vector = np.flatnonzero(at_kind != 2)
    if vector.size:
        # a vector's first x: the last VECT_BASE_X value plus 12 / 8 per VECT_12 / VECT_8 since that base word
        vector_at, vector_12 = at[vector], at_kind[vector] == 4
        base_at = np.flatnonzero(kind == 3)
        base_words, base_index = words[base_at], np.searchsorted(base_at, vector_at)
        steps_before = np.concatenate(([0], np.cumsum(np.where(vector_12, 12, 8))))
        steps_at_base = steps_before[np.searchsorted(vector_at, base_at)]
        x[vector] = _state((base_words & 0x7FF) - steps_at_base, base_index) + steps_before[:-1]
        p[vector] = _state((base_words >> 11) & 1, base_index)
        # one event per set bit of bits 11-0 (VECT_12) or 7-0 (VECT_8), in bit order; an EVT_ADDR_X word is
        # bit 0 of its own, so the set bits in row-major order are the events in file order
        bits = np.where(at_kind == 2, 1, word & np.where(at_kind == 4, 0xFFF, 0xFF).astype(np.uint16))
        source, offset = np.divmod(np.flatnonzero((bits[:, None] >> np.arange(12, dtype=np.uint16)) & 1), 12)
        x, y, t, p = x[source] + offset.astype(np.uint16), y[source], t[source], p[source]
    return make_events(x, y, t, p)


_DECODERS = {"dat": _decode_dat, "evt2": _decode_evt2, "evt3": _decode_evt3}


def read_prophesee(path: str | os.PathLike, encoding: str | None = None) -> np.ndarray:
    """Events of a Prophesee ``.dat`` (CD events) or ``.raw`` (EVT 2.0 / 3.0) file as an :data:`EVENT_DTYPE`
    array (t in microseconds).

    The encoding comes from the header (``% evt``/``% format`` lines for ``.raw``, ``% Version`` for
    ``.dat``); ``encoding="dat"``, ``"evt2"`` or ``"evt3"`` overrides it for files whose header does not
    say. Raises :class:`EventFileError` naming the file and the byte offset where a file is truncated,
    holds a reserved word type or a record that is not a CD event.
    """
    path = Path(path)
    data = path.read_bytes()
    header = _parse_header(data, path, encoding)
    return _DECODERS[header.encoding](data, header.data_start, path)
