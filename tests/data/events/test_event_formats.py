"""Event file readers: hand-decoded bytes, documented counts, and errors naming file and byte offset."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
from event_files import (
    aedat3_packet,
    aedat3_word,
    dvs128_address,
    shared_file,
    structured,
    write_aedat2,
    write_aedat3,
    write_aedat4,
    write_atis,
)

from spikeforge.data import DatasetCorruptError
from spikeforge.data.events import (
    EVENT_DTYPE,
    EventFileError,
    read_aedat2,
    read_aedat3,
    read_aedat4,
    read_aedat4_header,
    read_atis_bin,
    read_events,
    read_gesture_labels,
)


def assert_events(actual: np.ndarray, expected_records) -> None:
    assert actual.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(actual.astype(structured([]).dtype), structured(expected_records))


def offset_error(call, path, offset: int, words: str = ""):
    """``call()`` raises EventFileError naming ``path`` and ``offset`` (and ``words``), on one line."""
    with pytest.raises(EventFileError) as info:
        call()
    message = str(info.value)
    assert str(path) in message and f"byte offset {offset}" in message and "\n" not in message, message
    assert words in message and info.value.offset == offset
    assert isinstance(info.value, DatasetCorruptError)
    return message


# ----------------------------------------------------------------------------- AEDAT 2.0 (DVS128)


def test_aedat2_decodes_dvs128_addresses_and_flips_x(tmp_path):
    records = [(dvs128_address(0, 5, 1), 10), (dvs128_address(127, 0, 0), 11),
               (dvs128_address(3, 2, 1, external=True), 12), (dvs128_address(64, 127, 0), -5)]
    path = write_aedat2(tmp_path / "a.aedat", records)
    # x is flipped to 127 - x; the external event (bit 15) is dropped
    assert_events(read_aedat2(path), [(127, 5, 10, 1), (0, 0, 11, 0), (63, 127, -5, 0)])
    assert_events(read_aedat2(path, flip_x=False), [(0, 5, 10, 1), (127, 0, 11, 0), (64, 127, -5, 0)])
    # hand-decoded raw record: address 0x0000_0a07 = y 10, x 3, ON; t 0x0102_0304
    raw = tmp_path / "raw.aedat"
    raw.write_bytes(b"#!AER-DAT2.0\r\n" + bytes.fromhex("00000a07" "01020304"))
    assert_events(read_aedat2(raw, flip_x=False), [(3, 10, 0x01020304, 1)])
    assert len(read_events(path)) == 3


def test_aedat2_errors_name_file_and_offset(tmp_path):
    path = write_aedat2(tmp_path / "cut.aedat", [(dvs128_address(1, 1, 1), t) for t in range(4)])
    data = path.read_bytes()
    header = len(data) - 32
    path.write_bytes(data[:-3])  # the last record is 5 of 8 bytes
    offset_error(lambda: read_aedat2(path), path, header + 24, "ends inside an event record")
    davis = write_aedat2(tmp_path / "davis.aedat", [], chip="eu.seebetter.ini.chips.davis.Davis346red")
    offset_error(lambda: read_aedat2(davis), davis, 0, "only the DVS128 address layout")
    v1 = write_aedat2(tmp_path / "v1.aedat", [], version="1.0")
    offset_error(lambda: read_aedat2(v1), v1, 0, "expected an AEDAT 2.0 file")
    junk = tmp_path / "junk.aedat"
    junk.write_bytes(b"\x00" * 16)
    offset_error(lambda: read_aedat2(junk), junk, 0, "not an AEDAT file")
    unterminated = tmp_path / "open.aedat"
    unterminated.write_bytes(b"#!AER-DAT2.0\r\n# no line end")
    offset_error(lambda: read_aedat2(unterminated), unterminated, 14, "header line without a line end")


def test_real_jaer_header_is_parsed_and_its_davis_chip_refused(tmp_path):
    sample = shared_file("event-samples/sample_aedat_header.aedat")
    copy = tmp_path / sample.name
    shutil.copyfile(sample, copy)
    message = offset_error(lambda: read_aedat2(copy), copy, 0, "Davis346red")
    assert "DVS128" in message


# ----------------------------------------------------------------------------- AEDAT 3.1 (DVS128 Gesture)


def test_aedat3_decodes_polarity_packets_and_skips_the_rest(tmp_path):
    first = aedat3_packet([(aedat3_word(10, 20, 1), 100), (aedat3_word(5, 6, 0, valid=False), 101),
                           (aedat3_word(127, 0, 0), 102)])
    special = aedat3_packet([(0xDEAD, 103)], event_type=0)
    late = aedat3_packet([(aedat3_word(1, 127, 1), 7)], overflow=3)
    path = write_aedat3(tmp_path / "user01_led.aedat", [first, special, late])
    assert_events(read_aedat3(path), [(10, 20, 100, 1), (127, 0, 102, 0), (1, 127, 3 * 2**31 + 7, 1)])
    assert len(read_events(path)) == 3


def test_aedat3_errors_name_file_and_packet_offset(tmp_path):
    packets = [aedat3_packet([(aedat3_word(1, 1, 1), t)]) for t in range(3)]
    path = write_aedat3(tmp_path / "cut.aedat", packets)
    data = path.read_bytes()
    header = len(data) - 3 * 36
    path.write_bytes(data[:-4])
    offset_error(lambda: read_aedat3(path), path, header + 72, "runs past the end of the file")
    path.write_bytes(data[: header + 36 + 10])
    offset_error(lambda: read_aedat3(path), path, header + 36, "inside a packet header")
    wide = write_aedat3(tmp_path / "wide.aedat", [aedat3_packet([(1, 2)], event_size=12)[:-8] + b"\x00" * 12])
    offset_error(lambda: read_aedat3(wide), wide, header, "eventSize 12")
    v2 = write_aedat2(tmp_path / "v2.aedat", [])
    offset_error(lambda: read_aedat3(v2), v2, 0, "expected an AEDAT 3.1 file")


def test_gesture_label_csv(tmp_path):
    path = tmp_path / "user01_led_labels.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n1,100,200\r\n11,300,450\r\n\r\n")
    np.testing.assert_array_equal(read_gesture_labels(path), [[1, 100, 200], [11, 300, 450]])
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n1,100,200\r\n12,300,450\r\n")
    offset_error(lambda: read_gesture_labels(path), path, 46, "class 12")
    path.write_bytes(b"class,startTime_usec,endTime_usec\n1,100\n")
    offset_error(lambda: read_gesture_labels(path), path, 34, "line 2")


# ----------------------------------------------------------------------------- N-MNIST / N-Caltech101 .bin


def test_atis_bin_decodes_records_and_overflow_markers(tmp_path):
    path = write_atis(tmp_path / "a.bin", [(3, 4, 1, 0x7FFFFF), (33, 0, 0, 5), (0, 240, 0, 0), (1, 2, 1, 6)])
    # the y == 240 record is an overflow marker: dropped, later timestamps + 2**13
    assert_events(read_atis_bin(path), [(3, 4, 0x7FFFFF, 1), (33, 0, 5, 0), (1, 2, 6 + 8192, 1)])
    raw = tmp_path / "raw.bs2"
    raw.write_bytes(bytes.fromhex("1210 80037d"))  # first record of nmnist-small/1.bs2
    assert_events(read_events(raw), [(18, 16, 0x037D, 1)])
    cut = tmp_path / "cut.bin"
    cut.write_bytes(path.read_bytes()[:-2])
    offset_error(lambda: read_atis_bin(cut), cut, 15, "ends inside an event record")


def test_real_nmnist_and_ncaltech_recordings_have_their_documented_counts():
    nmnist = read_atis_bin(shared_file("event-samples/sample_nmnist.bin"))
    caltech = read_atis_bin(shared_file("event-samples/ncaltech101_faces_easy_0001.bin"))
    assert (len(nmnist), len(caltech)) == (4325, 67445)
    assert nmnist["x"].max() < 34 and nmnist["y"].max() < 34
    for events in (nmnist, caltech):
        assert np.all(np.diff(events["t"]) >= 0) and 0.25e6 < events["t"][-1] < 0.35e6  # ~300 ms
        assert set(np.unique(events["p"])) == {0, 1}


def test_all_nmnist_small_recordings_read_inside_the_34x34_sensor():
    folder = shared_file("nmnist-small")
    files = sorted(folder.glob("*.bs2"))
    assert len(files) == 1100
    for path in files:
        events = read_atis_bin(path)
        assert len(events) == path.stat().st_size // 5 > 0
        assert events["x"].max() < 34 and events["y"].max() < 34, path


# ----------------------------------------------------------------------------- AEDAT 4.0


def test_aedat4_uncompressed_file_written_from_the_layout(tmp_path):
    path = write_aedat4(tmp_path / "a.aedat4", [(0, [(1000, 3, 4, True), (1001, 31, 23, False)]),
                                                (2, [(1002, 9, 9, True)]), (0, [(1003, 0, 0, True)])],
                        streams={0: ("EVTS", (32, 24)), 2: ("EVTS", (32, 24)), 5: ("IMUS", None)})
    header = read_aedat4_header(path)
    assert header.compression == "none" and header.data_table_position == -1
    assert header.streams[0].size == (24, 32) and header.streams[5].type == "IMUS"
    assert_events(read_aedat4(path, stream=0), [(3, 4, 1000, 1), (31, 23, 1001, 0), (0, 0, 1003, 1)])
    assert_events(read_aedat4(path, stream=2), [(9, 9, 1002, 1)])
    with pytest.raises(ValueError, match="pass stream="):
        read_aedat4(path)
    with pytest.raises(ValueError, match="not an event stream"):
        read_aedat4(path, stream=5)
    single = write_aedat4(tmp_path / "b.aedat4", [(0, [(7, 1, 2, True)])])
    assert_events(read_events(single), [(1, 2, 7, 1)])


@pytest.mark.parametrize("codec, code, name", [("lz4.frame", 1, "lz4"), ("zstandard", 3, "zstd")])
def test_aedat4_compressed_packets(tmp_path, codec, code, name):
    module = pytest.importorskip(codec)
    compress = module.compress if codec == "lz4.frame" else module.ZstdCompressor().compress
    packets = [(0, [(t, t % 32, t % 24, t % 2 == 0) for t in range(100 * i, 100 * i + 100)]) for i in range(3)]
    path = write_aedat4(tmp_path / "c.aedat4", packets, compression=code, compress=compress)
    assert read_aedat4_header(path).compression == name
    events = read_aedat4(path)
    assert len(events) == 300 and events["t"].tolist() == list(range(300))
    assert events["x"].tolist() == [t % 32 for t in range(300)] and events["p"].tolist() == [1, 0] * 150


def test_aedat4_errors_name_file_and_packet_offset(tmp_path):
    path = write_aedat4(tmp_path / "a.aedat4", [(0, [(t, 1, 1, True) for t in range(3)]), (0, [(9, 2, 2, False)])])
    data = path.read_bytes()
    second = len(data) - (8 + 4 + 28 + 16)
    path.write_bytes(data[:-5])
    offset_error(lambda: read_aedat4(path), path, second, "runs past the end of the file")
    bad = bytearray(data)
    bad[second + 8 + 4 + 4 : second + 8 + 4 + 8] = b"XXXX"  # the packet's flatbuffer identifier
    path.write_bytes(bytes(bad))
    offset_error(lambda: read_aedat4(path), path, second, "malformed event packet")
    path.write_bytes(data[:40])
    offset_error(lambda: read_aedat4(path), path, 14, "does not fit in the file")


def test_real_davis346_aedat4_matches_hand_decoded_first_packet_and_documented_count(tmp_path):
    lz4_frame = pytest.importorskip("lz4.frame")
    path = shared_file("event-samples/davis346_346x260.aedat4")
    events = read_aedat4(path)
    assert len(events) == 6676  # shared/data/README.md
    header = read_aedat4_header(path)
    assert header.compression == "lz4" and header.streams[0].size == (260, 346)
    assert [s.type for s in header.streams.values()] == ["EVTS", "FRME", "IMUS", "TRIG"]
    assert events["x"].max() < 346 and events["y"].max() < 260 and np.all(np.diff(events["t"]) >= 0)
    assert 0.16e6 < events["t"][-1] - events["t"][0] < 0.18e6  # 0.17 s
    # Hand decoding: header size at byte 14; the first packet (stream 0) follows the header;
    # its LZ4 frame holds a size-prefixed flatbuffer whose event vector length sits at byte 28
    # and whose 16-byte {int64 t, int16 x, int16 y, bool on} structs start at byte 32.
    data = path.read_bytes()
    first = 18 + struct.unpack_from("<i", data, 14)[0]
    stream, size = struct.unpack_from("<ii", data, first)
    assert stream == 0
    packet = lz4_frame.decompress(data[first + 8 : first + 8 + size])
    count = struct.unpack_from("<I", packet, 28)[0]
    decoded = [struct.unpack_from("<qhh?", packet, 32 + 16 * i) for i in range(count)]
    assert decoded[0] == (1589163147368868, 215, 164, True)
    assert_events(events[:count], [(x, y, t, int(on)) for t, x, y, on in decoded])
    # a truncated copy names the packet where the file ends
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(data[: first + 100])
    offset_error(lambda: read_aedat4(cut), cut, first, "runs past the end of the file")
    flipped = bytearray(data)
    flipped[first + 8 + 20] ^= 0xFF  # inside the LZ4 block of the first packet
    cut.write_bytes(bytes(flipped))
    with pytest.raises(EventFileError, match=f"byte offset {first}"):
        read_aedat4(cut)


def test_real_dvxplorer_aedat4_has_about_112k_events_over_0_59_s():
    pytest.importorskip("lz4.frame")
    path = shared_file("event-samples/dvxplorer_320x240.aedat4")
    events = read_events(path)
    assert 111_000 < len(events) < 113_000  # "about 112k", shared/data/README.md
    assert read_aedat4_header(path).streams[0].size == (240, 320)
    assert events["x"].max() < 320 and events["y"].max() < 240 and np.all(np.diff(events["t"]) >= 0)
    assert 0.58e6 < events["t"][-1] - events["t"][0] < 0.60e6


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "x.dat"
    path.write_bytes(b"% prophesee header\n")
    offset_error(lambda: read_events(path), path, 0, "unknown event format")
