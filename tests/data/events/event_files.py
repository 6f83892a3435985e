"""Event files for the tests: writers of small files in the documented layouts, and the real
recordings in ``<repo>/../shared/data`` (tests that need those skip when the folder is absent).

Each writer builds the bytes from the format description directly (struct
packing by hand), independently of the readers under test.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


def shared_file(relative: str) -> Path:
    """``../shared/data/<relative>``, or skip the test if it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"real data not available ({path} is absent)")
    return path

DVS128_CHIP = "ch.unizh.ini.jaer.chip.retina.DVS128"


def dvs128_address(x_raw: int, y: int, p: int, external: bool = False) -> int:
    """DVS128 address: polarity bit 0, x bits 1-7, y bits 8-14, external-event bit 15."""
    return (p & 1) | (x_raw << 1) | (y << 8) | (int(external) << 15)


def write_aedat2(path: Path, records, chip: str | None = DVS128_CHIP, version: str = "2.0") -> Path:
    """``records``: (address, t) pairs, written as big-endian uint32 + int32 after a CRLF header."""
    lines = [f"#!AER-DAT{version}", "# This is a raw AE data file created by the tests",
             "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event"]
    if chip is not None:
        lines.append(f"# AEChip: {chip}")
    header = "".join(line + "\r\n" for line in lines).encode()
    body = b"".join(struct.pack(">Ii", a, t) for a, t in records)
    path.write_bytes(header + body)
    return path


def aedat3_word(x: int, y: int, p: int, valid: bool = True) -> int:
    """AEDAT 3.1 polarity word: valid bit 0, polarity bit 1, y bits 2-16, x bits 17-31."""
    return int(valid) | (p << 1) | (y << 2) | (x << 17)


def aedat3_packet(words_and_ts, event_type: int = 1, overflow: int = 0, event_size: int = 8) -> bytes:
    """One packet: the 28-byte header then ``(uint32 word, int32 ts)`` events."""
    n = len(words_and_ts)
    header = struct.pack("<hhiiiiii", event_type, 1, event_size, 4, overflow, n, n, n)
    return header + b"".join(struct.pack("<Ii", w, t) for w, t in words_and_ts)


def write_aedat3(path: Path, packets: list[bytes]) -> Path:
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    path.write_bytes(header + b"".join(packets))
    return path


def write_atis(path: Path, records) -> Path:
    """``records``: (x, y, p, t) -> 5 bytes: x, y, p<<7 | t bits 22-16, t bits 15-8, t bits 7-0."""
    out = bytearray()
    for x, y, p, t in records:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.write_bytes(bytes(out))
    return path


def _evts_flatbuffer(events) -> bytes:
    """A size-prefixed EVTS packet: root -> table (vtable 6/8/4) -> vector of 16-byte event structs."""
    body = bytearray()
    body += struct.pack("<I", 16) + b"EVTS" + b"\x00\x00"          # root offset, identifier, pad
    body += struct.pack("<HHH", 6, 8, 4)                            # vtable at 10: field 0 at +4
    body += struct.pack("<iI", 6, 4)                                # table at 16; field 0 -> vector at 24
    body += struct.pack("<I", len(events))
    for t, x, y, on in events:
        body += struct.pack("<qhh?3x", t, x, y, on)
    return struct.pack("<I", len(body)) + bytes(body)


def _io_header(compression: int, table_position: int, xml: str) -> bytes:
    """IOHeader flatbuffer: vtable at 8 (fields at +4, +8, +16), table at 20, string at 40."""
    text = xml.encode()
    buf = bytearray()
    buf += struct.pack("<I", 20) + b"IOHE"
    buf += struct.pack("<HHHHH", 10, 20, 4, 8, 16) + b"\x00\x00"
    buf += struct.pack("<iiqI", 12, compression, table_position, 4)
    buf += struct.pack("<I", len(text)) + text + b"\x00"
    return bytes(buf)


def aedat4_xml(streams: dict[int, tuple[str, tuple[int, int] | None]]) -> str:
    """``{id: (type, (width, height) or None)}`` -> the DV stream description."""
    nodes = []
    for sid, (kind, size) in streams.items():
        info = (f'<node name="info" path="/mainloop/Recorder/outInfo/{sid}/info/">'
                f'<attr key="sizeX" type="int">{size[0]}</attr><attr key="sizeY" type="int">{size[1]}</attr></node>'
                if size else "")
        nodes.append(f'<node name="{sid}" path="/mainloop/Recorder/outInfo/{sid}/">'
                     f'<attr key="compression" type="string">NONE</attr>'
                     f'<attr key="typeIdentifier" type="string">{kind}</attr>{info}</node>')
    return f'<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">{"".join(nodes)}</node></dv>'


def write_aedat4(path: Path, packets, streams=None, compression: int = 0, compress=None) -> Path:
    """AEDAT 4: ``packets`` = [(stream id, [(t, x, y, on), ...])], each packet passed through
    ``compress`` (for ``compression`` 1 = LZ4, 3 = Zstandard); no packet table."""
    streams = streams or {0: ("EVTS", (32, 24))}
    header = _io_header(compression, -1, aedat4_xml(streams))
    out = bytearray(b"#!AER-DAT4.0\r\n" + struct.pack("<i", len(header)) + header)
    for sid, events in packets:
        body = _evts_flatbuffer(events)
        body = compress(body) if compress else body
        out += struct.pack("<ii", sid, len(body)) + body
    path.write_bytes(bytes(out))
    return path


def structured(records) -> np.ndarray:
    """(x, y, t, p) tuples as a plain structured array for comparisons."""
    return np.array(records, dtype=[("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])


# ----------------------------------------------------------------------------- jAER DAVIS addresses

DAVIS346_CHIP = "eu.seebetter.ini.chips.davis.Davis346red"
DAVIS240_CHIP = "eu.seebetter.ini.chips.davis.DAVIS240C"


def davis_address(x_raw: int, y_raw: int, p: int, special: bool = False, aps: bool = False) -> int:
    """jAER DAVIS address: y bits 22-30, x bits 12-21, polarity bit 11, external-input bit 10,
    APS/IMU sample bit 31 (an IMU sample also sets bits 10-11)."""
    return (y_raw << 22) | (x_raw << 12) | (p << 11) | (int(special) << 10) | (int(aps) << 31)


# ----------------------------------------------------------------------------- Prophesee .dat / .raw


def write_prophesee_dat(path: Path, records, size=(240, 304), version: str = "2", event_type: int = 12,
                        event_size: int = 8) -> Path:
    """``records``: (t, x, y, p) -> '% ' header lines, type and size bytes, then uint32 t + uint32
    (x | y << 14 | p << 28) little-endian."""
    header = (f"% Data file containing CD events\n% Version {version}\n% Width {size[1]}\n"
              f"% Height {size[0]}\n").encode()
    body = b"".join(struct.pack("<II", t, x | (y << 14) | (p << 28)) for t, x, y, p in records)
    path.write_bytes(header + bytes([event_type, event_size]) + body)
    return path


def write_raw(path: Path, words, evt: str, word_format: str, header: str | None = None) -> Path:
    """A ``.raw`` file: '% evt <evt>' header lines ending with '% end', then little-endian words."""
    header = header if header is not None else f"% evt {evt}\n% format EVT{evt[0]};height=720;width=1280\n% end\n"
    path.write_bytes(header.encode() + b"".join(struct.pack(word_format, w) for w in words))
    return path


def evt2_cd(t: int, x: int, y: int, p: int) -> int:
    """EVT 2.0 CD word: type (p) bits 31-28, t bits 5-0 at 27-22, x at 21-11, y at 10-0."""
    return (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y


def evt2_words(events) -> list[int]:
    """(t, x, y, p) events in time order -> EVT 2.0 words, with an EVT_TIME_HIGH (type 8) word when t >> 6 changes."""
    words, high = [], None
    for t, x, y, p in events:
        if t >> 6 != high:
            high = t >> 6
            words.append((8 << 28) | (high & 0x0FFFFFFF))
        words.append(evt2_cd(t, x, y, p))
    return words


def evt3(kind: int, payload: int) -> int:
    """An EVT 3.0 word: type bits 15-12, payload bits 11-0."""
    return (kind << 12) | payload


def evt3_words(events) -> list[int]:
    """(t, x, y, p) events in time order -> EVT 3.0 words: EVT_TIME_HIGH (8) / EVT_TIME_LOW (6) and
    EVT_ADDR_Y (0) when they change, then one EVT_ADDR_X (2, polarity bit 11) per event."""
    words, high, low, row = [], None, None, None
    for t, x, y, p in events:
        if (t >> 12) & 0xFFF != high:
            high = (t >> 12) & 0xFFF
            words.append(evt3(8, high))
        if t & 0xFFF != low:
            low = t & 0xFFF
            words.append(evt3(6, low))
        if y != row:
            row = y
            words.append(evt3(0, y))
        words.append(evt3(2, (p << 11) | x))
    return words


# ----------------------------------------------------------------------------- ST-MNIST .mat


def write_stmnist(path: Path, columns) -> Path:
    """``columns``: (seconds, {taxel: +1/-1}) -> a MATLAB file with ``spiketrain`` [101, N] (via scipy)."""
    scipy_io = pytest.importorskip("scipy.io")
    spiketrain = np.zeros((101, len(columns)))
    for k, (seconds, spikes) in enumerate(columns):
        spiketrain[100, k] = seconds
        for taxel, sign in spikes.items():
            spiketrain[taxel, k] = sign
    scipy_io.savemat(path, {"spiketrain": spiketrain})
    return path
