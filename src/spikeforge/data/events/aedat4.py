"""AEDAT 4.0 files (iniVation DV): polarity events of one event stream.

Layout: the line ``#!AER-DAT4.0\\r\\n``, an ``int32`` size, then an
``IOHeader`` flatbuffer (identifier ``IOHE``) with the compression (field 0:
0 none, 1-2 LZ4, 3-4 Zstandard), the byte position of the packet table
(field 1, -1 if none) and an XML description of the streams (field 2: id,
type such as ``EVTS``, sensor ``sizeX``/``sizeY``). Packets follow: an
``int32`` stream id, an ``int32`` byte size and that many bytes, compressed
as a whole (LZ4 or Zstandard frame) when the file says so. A decompressed
packet is a size-prefixed flatbuffer; an event packet (``EVTS``) holds in
field 0 a vector of 16-byte structs ``{int64 t (microseconds), int16 x,
int16 y, bool on}``. Packets of other streams (frames, IMU, triggers) are
skipped, with a one-line warning naming them.

Decoding goes through the ``aedat`` package (Rust, ``pip install
spikeforge[events]``) when it is installed, and through this module's own
parser otherwise, or when ``aedat`` fails on a file: the parser then either
reads it or raises :class:`EventFileError` with the byte offset. Both give
identical events. The parser needs ``lz4`` for LZ4 and ``zstandard`` for
Zstandard packets (also in the ``events`` extra), imported only when a file
uses them.
"""

from __future__ import annotations

import os
import struct
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...optional import MissingDependency, require
from .arrays import EVENT_DTYPE, EventFileError
from .flatbuffer import FlatBufferError, FlatTable

__all__ = ["Aedat4Stream", "Aedat4Header", "read_aedat4_header", "read_aedat4"]

_MAGIC = b"#!AER-DAT4.0\r\n"
_COMPRESSION = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}
_PACKET_HEADER = struct.Struct("<ii")
_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])
_STREAM_KINDS = {"FRME": "frames", "IMUS": "IMU", "TRIG": "triggers", "EVTS": "other event"}
_DECODERS = ("auto", "aedat", "spikeforge")


@dataclass(frozen=True)
class Aedat4Stream:
    """One stream of an AEDAT 4 file: its id, type identifier (``EVTS``, ``FRME``...), name and sensor size."""

    id: int
    type: str
    name: str
    size: tuple[int, int] | None  # (height, width), for event and frame streams


@dataclass(frozen=True)
class Aedat4Header:
    """What the ``IOHeader`` says: compression, where packets start and end, and the streams."""

    compression: str
    packets_start: int
    data_table_position: int
    streams: dict[int, Aedat4Stream]


def _parse_streams(xml: str, path: Path, offset: int) -> dict[int, Aedat4Stream]:
    try:
        root = ET.fromstring(xml.rstrip("\x00 \r\n\t"))
    except ET.ParseError as err:
        raise EventFileError(path, offset, f"stream description is not valid XML ({err})") from None
    streams = {}
    for node in root.findall(".//node[@name='outInfo']/node"):
        attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
        info = {a.get("key"): (a.text or "") for a in node.findall("node[@name='info']/attr")}
        try:
            stream_id = int(node.get("name", ""))
            size = (int(info["sizeY"]), int(info["sizeX"])) if "sizeX" in info and "sizeY" in info else None
        except ValueError:
            raise EventFileError(path, offset, f"stream description has a non-integer id or size in "
                                               f"node {node.get('name')!r}") from None
        streams[stream_id] = Aedat4Stream(stream_id, attrs.get("typeIdentifier", ""),
                                          attrs.get("originalOutputName", ""), size)
    return streams


def _read_header(data: bytes, path: Path) -> Aedat4Header:
    if not data.startswith(_MAGIC):
        raise EventFileError(path, 0, "not an AEDAT 4.0 file (it does not start with '#!AER-DAT4.0')")
    start = len(_MAGIC)
    if len(data) < start + 4:
        raise EventFileError(path, start, "file ends before the header size")
    size = struct.unpack_from("<i", data, start)[0]
    if size <= 0 or start + 4 + size > len(data):
        raise EventFileError(path, start, f"header of {size} bytes does not fit in the file")
    buf = data[start + 4 : start + 4 + size]
    try:
        table = FlatTable.root(buf, b"IOHE")
        code = table.scalar(0, "<i", 0)
        table_position = table.scalar(1, "<q", -1)
        xml = table.string(2)
    except FlatBufferError as err:
        raise EventFileError(path, start + 4 + err.position, f"malformed IOHeader ({err})") from None
    if code not in _COMPRESSION:
        raise EventFileError(path, start + 4, f"unknown compression type {code}")
    return Aedat4Header(_COMPRESSION[code], start + 4 + size, table_position, _parse_streams(xml, path, start + 4))


def read_aedat4_header(path: str | os.PathLike) -> Aedat4Header:
    """The header of an AEDAT 4 file: compression, packet range and streams."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(_MAGIC) + 4)
        size = struct.unpack_from("<i", head, len(_MAGIC))[0] if len(head) == len(_MAGIC) + 4 else 0
        head += f.read(max(size, 0))
    return _read_header(head, path)


def _decompressor(compression: str, path: Path):
    if compression == "none":
        return lambda body: body
    feature = f"{path} ({compression.upper()}-compressed AEDAT 4)"
    if compression == "lz4":
        return require("lz4.frame", feature).decompress
    zstandard = require("zstandard", feature)
    return lambda body: zstandard.ZstdDecompressor().decompressobj().decompress(body)


def _choose_stream(header: Aedat4Header, stream: int | None, path: Path) -> int:
    event_streams = sorted(i for i, s in header.streams.items() if s.type == "EVTS")
    if stream is None:
        if len(event_streams) != 1:
            raise ValueError(f"{path} has {len(event_streams) or 'no'} event streams "
                             f"({event_streams}); pass stream=<id>")
        return event_streams[0]
    if stream not in event_streams:
        raise ValueError(f"{path}: stream={stream} is not an event stream; event streams: {event_streams}")
    return stream


def _packet_events(buf: bytes) -> np.ndarray:
    table = FlatTable.root(buf, b"EVTS")
    start, count = table.vector(0)
    if start + count * _EVENT.itemsize > len(buf):
        raise FlatBufferError(start, f"event vector of {count} events runs past the end of the packet")
    raw = np.frombuffer(buf, dtype=_EVENT, count=count, offset=start)
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = raw["t"], raw["x"], raw["y"], raw["on"] != 0
    return events


def _note_skipped(header: Aedat4Header, wanted: int) -> None:
    skipped = sorted({_STREAM_KINDS.get(s.type, s.type) for i, s in header.streams.items() if i != wanted})
    if skipped:
        warnings.warn(f"AEDAT 4 recording with {', '.join(skipped)} streams: read_aedat4 returns only the polarity "
                      f"events of stream {wanted}", stacklevel=3)


def _decode_with_aedat(aedat, path: Path, wanted: int) -> np.ndarray:
    chunks = [packet["events"] for packet in aedat.Decoder(path) if packet["stream_id"] == wanted]
    events = np.empty(sum(len(chunk) for chunk in chunks), dtype=EVENT_DTYPE)
    start = 0
    for chunk in chunks:  # field by field: concatenating aedat's titled dtype is slow
        part = events[start : start + len(chunk)]
        part["t"], part["x"], part["y"], part["p"] = chunk["t"], chunk["x"], chunk["y"], chunk["on"]
        start += len(chunk)
    return events


def _decode_packets(path: Path, wanted: int) -> np.ndarray:
    data = path.read_bytes()
    header = _read_header(data, path)
    decompress = _decompressor(header.compression, path)
    end = header.data_table_position if header.data_table_position >= 0 else len(data)
    chunks, pos = [], header.packets_start
    while pos < min(end, len(data)):
        if pos + _PACKET_HEADER.size > len(data):
            raise EventFileError(path, pos, "file ends inside a packet header")
        stream_id, size = _PACKET_HEADER.unpack_from(data, pos)
        body = pos + _PACKET_HEADER.size
        if size < 0 or body + size > len(data):
            raise EventFileError(path, pos, f"packet of {size} bytes runs past the end of the file")
        if stream_id == wanted:
            try:
                buf = decompress(data[body : body + size])
            except Exception as err:  # noqa: BLE001 - each codec raises its own error type
                raise EventFileError(path, pos, f"{header.compression.upper()} packet cannot be "
                                                f"decompressed ({err})") from None
            if len(buf) < 8 or struct.unpack_from("<I", buf, 0)[0] != len(buf) - 4:
                raise EventFileError(path, pos, "packet is not a size-prefixed flatbuffer")
            try:
                chunks.append(_packet_events(buf[4:]))
            except FlatBufferError as err:
                raise EventFileError(path, pos, f"malformed event packet ({err})") from None
        pos = body + size
    if pos < end:
        raise EventFileError(path, len(data), f"file ends before its packet table at byte {end} (truncated)")
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=EVENT_DTYPE)


def read_aedat4(path: str | os.PathLike, stream: int | None = None, decoder: str = "auto") -> np.ndarray:
    """Events of one event stream (default: the only one) as an :data:`EVENT_DTYPE` array (t in microseconds).

    ``decoder="auto"`` uses the ``aedat`` package when it imports and reads
    the file, else this module's parser; ``"aedat"`` requires the package,
    ``"spikeforge"`` always uses the parser. Warns once (per set of stream
    kinds) that frame, IMU and trigger streams are skipped. Raises
    :class:`EventFileError` naming the file and the byte offset of the packet
    that is truncated, cannot be decompressed or is malformed.
    """
    if decoder not in _DECODERS:
        raise ValueError(f"decoder={decoder!r}; expected one of {_DECODERS}")
    path = Path(path)
    header = read_aedat4_header(path)
    wanted = _choose_stream(header, stream, path)
    _note_skipped(header, wanted)
    if decoder != "spikeforge":
        try:
            aedat = require("aedat", f"read_aedat4(decoder='aedat') of {path}")
        except MissingDependency:
            if decoder == "aedat":
                raise
        else:
            try:
                return _decode_with_aedat(aedat, path, wanted)
            except Exception as err:  # noqa: BLE001 - aedat raises its own error types; the parser locates them
                if decoder == "aedat":
                    raise EventFileError(path, 0, f"the aedat package cannot decode it ({err})") from None
    return _decode_packets(path, wanted)
